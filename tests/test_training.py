"""Tests of the training loop: the loss falls, the EMA is the average it claims, budgets stop it."""
import copy
import math

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ddpm_helpers import training
from ddpm_helpers.data import make_moons
from ddpm_helpers.models import MLPDenoiser
from ddpm_helpers.schedules import NoiseSchedule
from ddpm_helpers.training import draw_timesteps, ema_multi_avg_fn, lr_factor, train

torch.set_num_threads(1)


def _moons(n=2000, seed=0):
    return make_moons(n, generator=torch.Generator().manual_seed(seed))


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return MLPDenoiser(hidden=64, depth=2, time_dim=16)


def test_loss_decreases_on_moons_in_a_few_hundred_steps():
    result = train(_tiny_model(), _moons(), NoiseSchedule.linear(T=1000), steps=400, batch_size=256,
                   lr=3e-3, generator=torch.Generator().manual_seed(0), device="cpu", progress=False)
    assert len(result.losses) == 400
    first, last = sum(result.losses[:20]) / 20, sum(result.losses[-50:]) / 50
    assert first > 0.45             # an untrained network is near Var(eps) = 1 or so
    assert last < 0.7 * first


def test_training_is_reproducible_with_a_seeded_generator():
    runs = [train(_tiny_model(), _moons(), NoiseSchedule.linear(T=100), steps=20, batch_size=64,
                  generator=torch.Generator().manual_seed(3), device="cpu", progress=False) for _ in range(2)]
    assert runs[0].losses == runs[1].losses
    assert runs[0].provenance["seed"] == 3 and runs[0].provenance["steps"] == 20


def test_ema_differs_from_the_raw_weights_after_training():
    result = train(_tiny_model(), _moons(), NoiseSchedule.linear(T=100), steps=30, batch_size=64,
                   ema_decay=0.9, generator=torch.Generator().manual_seed(0), device="cpu", progress=False)
    ema, raw = result.model.state_dict(), result.raw_model.state_dict()
    assert ema.keys() == raw.keys()
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)
    assert not result.model.training and type(result.model) is MLPDenoiser


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_update_equals_the_hand_computed_average(warmup):
    weight = nn.Parameter(torch.tensor([0.0]))
    module = nn.Module()
    module.weight = weight
    ema = AveragedModel(module, multi_avg_fn=ema_multi_avg_fn(0.5, warmup=warmup))
    expected = None
    for value in [1.0, 2.0, 4.0]:
        with torch.no_grad():
            weight.fill_(value)
        ema.update_parameters(module)
        if expected is None:
            expected, n = value, 1               # the first update copies the weights
        else:
            d = min(0.5, (1 + n) / (10 + n)) if warmup else 0.5
            expected, n = d * expected + (1 - d) * value, n + 1
    # warm-up: d_1 = 2/11, d_2 = 3/12; without: 0.5 * (0.5 * 1 + 0.5 * 2) + 0.5 * 4 = 2.75
    hand = (2 / 11 * 1 + 9 / 11 * 2) * 3 / 12 + 9 / 12 * 4 if warmup else 2.75
    assert math.isclose(expected, hand)
    torch.testing.assert_close(ema.module.weight.detach(), torch.tensor([hand]))


def test_stops_at_the_step_budget_when_it_comes_first():
    result = train(_tiny_model(), _moons(), NoiseSchedule.linear(T=100), steps=7, minutes=10.0,
                   batch_size=32, device="cpu", progress=False)
    assert result.provenance["steps"] == 7 == len(result.losses)
    assert result.provenance["device"] == "cpu" and result.provenance["accelerator"] is None


def test_provenance_names_the_gpu_a_run_trained_on(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: f"NVIDIA H200 (asked for {device})")
    assert training._accelerator_name(torch.device("cuda", 0)) == "NVIDIA H200 (asked for cuda:0)"
    assert training._accelerator_name(torch.device("cpu")) is None


def test_stops_at_the_time_budget_when_it_comes_first():
    minutes = 0.5 / 60
    result = train(_tiny_model(), _moons(), NoiseSchedule.linear(T=100), steps=10**9, minutes=minutes,
                   batch_size=32, device="cpu", progress=False)
    assert 0 < result.provenance["steps"] < 10**9
    assert result.provenance["minutes"] >= minutes


def test_learning_rate_warms_up_linearly_then_decays_by_cosine():
    assert lr_factor(0.0, 0, warmup=4, decay=None) == 0.25
    assert lr_factor(0.0, 3, warmup=4, decay=None) == 1.0
    assert lr_factor(0.5, 10, warmup=4, decay=None) == 1.0
    assert math.isclose(lr_factor(0.5, 10, warmup=4, decay="cosine"), 0.5)
    assert math.isclose(lr_factor(1.0, 10, warmup=0, decay="cosine"), 0.0, abs_tol=1e-12)


def test_stratified_timesteps_put_one_t_in_each_slice():
    t = draw_timesteps(10, 1000, "stratified", torch.Generator().manual_seed(0))
    assert t.dtype == torch.long
    assert torch.equal(t // 100, torch.arange(10))
    uniform = draw_timesteps(5000, 1000, "uniform", torch.Generator().manual_seed(0))
    assert uniform.min() >= 0 and uniform.max() <= 999


def test_thread_setting_is_restored_after_training():
    before = torch.get_num_threads()
    train(_tiny_model(), _moons(), NoiseSchedule.linear(T=100), steps=2, batch_size=32, device="cpu",
          num_threads=2, progress=False)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "give a budget"),
    (dict(steps=0), "steps must be a positive int"),
    (dict(minutes=-1), "minutes must be a positive number"),
    (dict(steps=5, batch_size=10**6), "batch_size must be an int in"),
    (dict(steps=5, lr=0), "lr must be a positive number"),
    (dict(steps=5, ema_decay=1.0), "ema_decay must be in"),
    (dict(steps=5, grad_clip=0), "grad_clip must be"),
    (dict(steps=5, lr_decay="linear"), "lr_decay must be"),
    (dict(steps=5, timesteps="sorted"), "timesteps must be"),
    (dict(steps=5, warmup=-1), "warmup must be"),
])
def test_bad_arguments_raise_with_a_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train(_tiny_model(), _moons(100), NoiseSchedule.linear(T=100), device="cpu", progress=False, **kwargs)


def test_integer_data_is_rejected():
    with pytest.raises(TypeError, match="float tensor"):
        train(_tiny_model(), torch.zeros(10, 2, dtype=torch.long), NoiseSchedule.linear(T=10), steps=1)


def test_cli_trains_moons_and_writes_a_checkpoint_with_its_command(tmp_path, capsys):
    from ddpm_helpers.checkpoints import load_checkpoint
    from ddpm_helpers.train import main

    out = tmp_path / "moons.pt"
    argv = ["moons", "--steps", "5", "--out", str(out), "--seed", "3", "--hidden", "16", "--n-points", "500",
            "--grad-clip", "0", "--weight-decay", "0.01", "--no-progress"]
    provenance = main(argv)
    model, schedule = load_checkpoint(out)
    assert type(model) is MLPDenoiser and model.config["hidden"] == 16 and schedule.T == 1000
    assert model.provenance["command"] == "python -m ddpm_helpers.train " + " ".join(argv)
    assert model.provenance["steps"] == 5 == provenance["steps"] and model.provenance["seed"] == 3
    settings = model.provenance["settings"]
    assert settings["grad_clip"] is None and settings["weight_decay"] == 0.01 and settings["lr_decay"] == "cosine"
    assert "wrote" in capsys.readouterr().out


def test_cli_init_continues_from_a_checkpoint_and_keeps_its_provenance(tmp_path):
    from ddpm_helpers.checkpoints import load_checkpoint
    from ddpm_helpers.train import main

    first, second = tmp_path / "first.pt", tmp_path / "second.pt"
    tiny = ["--hidden", "16", "--n-points", "500", "--no-progress"]
    main(["moons", "--steps", "5", "--out", str(first), "--seed", "3"] + tiny)
    main(["moons", "--steps", "3", "--init", str(first), "--out", str(second), "--lr", "1e-12"] + tiny)
    before, _ = load_checkpoint(first)
    after, _ = load_checkpoint(second)
    for a, b in zip(before.state_dict().values(), after.state_dict().values()):
        assert torch.allclose(a, b, rtol=0, atol=1e-9)  # lr ~ 0: the second cycle kept the loaded weights
    p = after.provenance
    assert p["initialized_from"]["command"] == before.provenance["command"]
    assert p["steps"] == 3 and p["total_steps"] == 8
    assert p["total_minutes"] == pytest.approx(before.provenance["minutes"] + p["minutes"])
    with pytest.raises(ValueError, match="architecture mismatch"):
        main(["moons", "--steps", "1", "--init", str(first), "--out", str(second), "--hidden", "32",
              "--no-progress"])
    with pytest.raises(SystemExit, match="--schedule"):
        main(["moons", "--steps", "1", "--init", str(first), "--out", str(second), "--schedule", "cosine"]
             + tiny)


def test_cli_requires_a_budget(tmp_path):
    from ddpm_helpers.train import main

    with pytest.raises(SystemExit, match="give a budget"):
        main(["moons", "--out", str(tmp_path / "m.pt")])
    with pytest.raises(SystemExit, match="not both"):
        main(["moons", "--minutes", "1", "--seconds", "5", "--out", str(tmp_path / "m.pt")])


@pytest.mark.slow
def test_cli_trains_a_tiny_mnist_unet_on_the_bundled_subset(tmp_path, monkeypatch):
    from ddpm_helpers.checkpoints import load_checkpoint
    from ddpm_helpers.models import UNet
    from ddpm_helpers.train import main

    from ddpm_helpers.data import load_bundled_mnist

    monkeypatch.setattr("ddpm_helpers.train.load_mnist", lambda train, root: load_bundled_mnist(train))
    main(["mnist", "--steps", "2", "--batch-size", "16", "--channels", "8,8,8", "--patch", "1",
          "--out", str(tmp_path / "u.pt"), "--no-progress"])
    model, _ = load_checkpoint(tmp_path / "u.pt")
    assert type(model) is UNet and model.config["channels"] == (8, 8, 8)
    assert model.provenance["data"].startswith("MNIST train, 24000 images")
    main(["mnist", "--steps", "2", "--batch-size", "16", "--channels", "8,8", "--patch", "2", "--prediction", "eps",
          "--out", str(tmp_path / "p.pt"), "--no-progress"])
    patched, _ = load_checkpoint(tmp_path / "p.pt")
    assert patched.config["patch"] == 2 and patched.in_conv.in_channels == 4
    assert "--patch=2" in patched.provenance["explicit_command"]
    assert "--prediction=eps" in patched.provenance["explicit_command"] and "prediction" not in patched.config
    with pytest.raises(SystemExit, match=r"--channels 8,8,8 has 3 levels.*pass --patch 1"):
        main(["mnist", "--steps", "1", "--channels", "8,8,8", "--out", str(tmp_path / "x.pt"), "--no-progress"])
    main(["mnist", "--steps", "2", "--batch-size", "16", "--channels", "8,8", "--schedule", "cosine",
          "--out", str(tmp_path / "x0.pt"), "--no-progress"])             # the default recipe predicts x0
    x0_model, schedule = load_checkpoint(tmp_path / "x0.pt")
    assert x0_model.config["prediction"] == "x0" and x0_model.config["schedule"] == schedule.config
    assert schedule.config["kind"] == "cosine" and "--prediction=x0" in x0_model.provenance["explicit_command"]
    with pytest.raises(SystemExit, match=r"p\.pt holds a network that predicts eps.*pass --prediction eps"):
        main(["mnist", "--steps", "1", "--batch-size", "16", "--channels", "8,8",
              "--init", str(tmp_path / "p.pt"), "--out", str(tmp_path / "y.pt"), "--no-progress"])


# ---- class-conditional training (labels, label dropout; notebook 07) ----------------------------

def _two_blobs(n=2000, seed=0):
    """Two labelled Gaussian blobs: label 0 at (-0.5, 0), label 1 at (+0.5, 0), std 0.1."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    centres = torch.stack([labels.float() - 0.5, torch.zeros(n)], dim=1)
    return centres + 0.1 * torch.randn(n, 2, generator=g), labels


def test_conditional_training_learns_what_each_label_means():
    from ddpm_helpers.guidance import classifier_free_guidance
    from ddpm_helpers.samplers import ddim_sample

    data, labels = _two_blobs()
    torch.manual_seed(0)
    model = MLPDenoiser(hidden=64, depth=2, time_dim=16, num_classes=2)
    schedule = NoiseSchedule.linear(T=1000)
    result = train(model, data, schedule, steps=600, batch_size=256, lr=3e-3, labels=labels, label_dropout=0.2,
                   generator=torch.Generator().manual_seed(0), device="cpu", progress=False)
    assert result.provenance["settings"]["label_dropout"] == 0.2
    for c, side in [(0, -1), (1, 1)]:
        x = ddim_sample(classifier_free_guidance(result.model, c, 1.0), (200, 2), schedule, steps=20,
                        generator=torch.Generator().manual_seed(1), progress=False)
        assert (x[:, 0].sign() == side).float().mean() > 0.95              # the conditional model
    x = ddim_sample(classifier_free_guidance(result.model, 0, 0.0), (200, 2), schedule, steps=20,
                    generator=torch.Generator().manual_seed(1), progress=False)
    assert 0.3 < (x[:, 0] > 0).float().mean() < 0.7                        # the null label: both blobs


def test_unconditional_training_records_no_label_dropout_and_labels_need_a_conditional_model():
    result = train(_tiny_model(), _moons(100), NoiseSchedule.linear(T=10), steps=1, batch_size=10, progress=False)
    assert result.provenance["settings"]["label_dropout"] is None
    with pytest.raises(ValueError, match="num_classes"):
        train(_tiny_model(), _moons(100), NoiseSchedule.linear(T=10), steps=1, batch_size=10,
              labels=torch.zeros(100).long())
    cond = MLPDenoiser(hidden=8, depth=1, num_classes=2)
    with pytest.raises(ValueError, match=r"shape \(100,\)"):
        train(cond, _moons(100), NoiseSchedule.linear(T=10), steps=1, batch_size=10, labels=torch.zeros(50).long())
    with pytest.raises(ValueError, match=r"lie in 0\.\.1"):
        train(cond, _moons(100), NoiseSchedule.linear(T=10), steps=1, batch_size=10, labels=torch.full((100,), 2))


def test_the_label_embedding_learns_at_label_lr_scale_times_the_learning_rate():
    """Adam's first step moves every weight by lr (times the sign of its gradient; no warm-up,
    decay or EMA in the way): the classes' rows of the label table by label_lr_scale * lr, the
    null row and the rest of the network by lr."""
    data, labels = _two_blobs()
    moves = {}
    for scale in (1.0, 10.0):
        torch.manual_seed(0)
        model = MLPDenoiser(hidden=16, depth=1, time_dim=8, num_classes=2)
        before = copy.deepcopy(model)
        result = train(model, data, NoiseSchedule.linear(T=100), steps=1, batch_size=64, lr=1e-3, ema_decay=0.0,
                       grad_clip=None, labels=labels, label_lr_scale=scale, generator=torch.Generator().manual_seed(0),
                       device="cpu", progress=False)
        delta = {n: p - dict(before.named_parameters())[n] for n, p in result.raw_model.named_parameters()}
        table = delta.pop("label_embedding.table.weight").abs()
        moved = {n: d.abs().max().item() for n, d in delta.items()}
        moved.update(classes=table[:2].max().item(), null=table[2].max().item())
        assert result.provenance["settings"]["label_lr_scale"] == scale
        moves[scale] = moved
    assert moves[1.0]["classes"] == pytest.approx(1e-3, rel=1e-3) and moves[10.0]["classes"] == pytest.approx(1e-2, rel=1e-3)
    assert moves[1.0]["null"] == pytest.approx(1e-3, rel=1e-3) and moves[10.0]["null"] == pytest.approx(1e-3, rel=1e-3)
    assert all(moves[1.0][n] == moves[10.0][n] for n in moves[1.0] if n not in ("classes", "null"))
    with pytest.raises(ValueError, match="label_lr_scale must be a positive number"):
        train(model, data, NoiseSchedule.linear(T=100), steps=1, batch_size=64, labels=labels, label_lr_scale=0,
              progress=False)


def test_cli_conditional_init_from_an_unconditional_file_starts_as_that_model(tmp_path):
    from ddpm_helpers.checkpoints import load_checkpoint
    from ddpm_helpers.train import main

    plain, cond = tmp_path / "plain.pt", tmp_path / "cond.pt"
    tiny = ["--hidden", "16", "--n-points", "500", "--no-progress"]
    main(["moons", "--steps", "5", "--out", str(plain), "--seed", "3"] + tiny)
    main(["moons", "--conditional", "--steps", "2", "--init", str(plain), "--out", str(cond), "--lr", "1e-12"]
         + tiny)
    before, _ = load_checkpoint(plain)
    after, _ = load_checkpoint(cond)
    assert after.config == {**before.config, "num_classes": 2}
    assert "label_embedding.table.weight" in after.provenance["init_note"]
    assert after.provenance["initialized_from"]["command"] == before.provenance["command"]
    x, t = torch.randn(4, 2), torch.tensor([1, 10, 100, 999])
    for labels in [torch.tensor([0, 1, 0, 1]), None]:                   # lr ~ 0: every label = the old model
        torch.testing.assert_close(after(x, t, labels), before(x, t), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="architecture mismatch"):       # and not the other way round
        main(["moons", "--steps", "1", "--init", str(cond), "--out", str(tmp_path / "x.pt")] + tiny)


def test_min_snr_weights_follow_their_definition_and_none_is_l_simple():
    from ddpm_helpers.training import loss_weights

    schedule = NoiseSchedule.linear(T=1000)
    a = schedule.alpha_bars.double()
    snr = a / (1 - a)
    weights = loss_weights(schedule, "min_snr", 5.0)
    assert weights.shape == (1000,)
    torch.testing.assert_close(weights.double(), torch.minimum(snr, torch.tensor(5.0)) / snr, rtol=1e-6, atol=0)
    noisy = snr <= 5                         # from code t = 130 on for this schedule: weight exactly 1
    assert bool((weights[noisy] == 1).all()) and bool((weights[~noisy] < 1).all())
    assert int((~noisy).sum()) == 130 and weights[0] < 1e-3      # t = 0: SNR ~ 1e4, weight 5 / SNR
    assert bool((loss_weights(schedule, "none") == 1).all())
    with pytest.raises(ValueError, match="'none'.*'min_snr'"):
        loss_weights(schedule, "min-snr")
    with pytest.raises(ValueError, match="positive"):
        loss_weights(schedule, "min_snr", 0)


def test_weighted_loss_with_unit_weights_is_loss_simple_and_weights_pick_out_timesteps():
    from ddpm_helpers.diffusion import loss_simple
    from ddpm_helpers.training import weighted_loss

    schedule, model, x0 = NoiseSchedule.linear(T=100), _tiny_model(), _moons(64)
    t = torch.randperm(100, generator=torch.Generator().manual_seed(0))[:64]     # 64 different timesteps
    simple = loss_simple(model, x0, schedule, t=t, generator=torch.Generator().manual_seed(1))
    ones = weighted_loss(model, x0, schedule, t, torch.ones(100), torch.Generator().manual_seed(1))
    torch.testing.assert_close(ones, simple)
    only_first = torch.zeros(100)
    only_first[t[0]] = 3.0                    # weight one timestep: 3 x that sample's squared error / B
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    a = schedule.alpha_bars[t[0]]
    x_t = a.sqrt() * x0[:1] + (1 - a).sqrt() * noise[:1]
    expected = 3.0 * ((model(x_t, t[:1]) - noise[:1]) ** 2).mean() / 64
    torch.testing.assert_close(weighted_loss(model, x0, schedule, t, only_first, torch.Generator().manual_seed(1)),
                               expected)


def test_min_snr_training_runs_and_differs_from_l_simple_on_the_same_seed():
    data, schedule = _moons(), NoiseSchedule.linear(T=100)
    runs = {kind: train(_tiny_model(), data, schedule, steps=20, batch_size=64, loss_weighting=kind,
                        generator=torch.Generator().manual_seed(0), progress=False) for kind in ("none", "min_snr")}
    assert runs["min_snr"].provenance["settings"]["loss_weighting"] == "min_snr"
    assert runs["none"].losses[0] != runs["min_snr"].losses[0]           # the same batch, t and noise, weighted
    with pytest.raises(ValueError, match="loss_weighting"):
        train(_tiny_model(), data, schedule, steps=1, loss_weighting="snr", progress=False)


def test_cli_records_an_explicit_command_that_reruns_the_same_training(tmp_path):
    import shlex

    from ddpm_helpers.checkpoints import load_checkpoint
    from ddpm_helpers.train import main

    first = main(["moons", "--steps", "4", "--out", str(tmp_path / "a.pt"), "--hidden", "16", "--n-points", "300",
                  "--no-progress"])
    explicit = first["explicit_command"]
    assert "--lr=0.002" in explicit and "--hidden=16" in explicit and "--loss-weighting=none" in explicit
    argv = shlex.split(explicit)[3:]
    argv = [a if not a.startswith("--out=") else f"--out={tmp_path / 'b.pt'}" for a in argv] + ["--no-progress"]
    main(argv)
    a, _ = load_checkpoint(tmp_path / "a.pt")
    b, _ = load_checkpoint(tmp_path / "b.pt")
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
