"""Tests of checkpoints: exact round trip, clear errors for mismatches and damaged files, shipped weights."""
import pytest
import torch

from ddpm_helpers.checkpoints import PRETRAINED, load_checkpoint, load_pretrained, read_checkpoint, save_checkpoint
from ddpm_helpers.models import MLPDenoiser, UNet
from ddpm_helpers.schedules import NoiseSchedule
from ddpm_helpers.train import MNIST_2025, RECIPES

torch.set_num_threads(1)


def _randomised(model, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.1)
    return model


def test_round_trip_restores_weights_configs_schedule_and_provenance(tmp_path):
    model = _randomised(UNet(channels=(8, 16, 16), groups=4))
    schedule = NoiseSchedule.cosine(T=200)
    path = save_checkpoint(tmp_path / "sub" / "unet.pt", model, schedule, {"steps": 5, "seed": 1})
    loaded, loaded_schedule = load_checkpoint(path)
    assert type(loaded) is UNet and loaded.config == model.config and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    torch.testing.assert_close(loaded_schedule.alpha_bars, schedule.alpha_bars, rtol=0, atol=0)
    assert loaded.provenance == {"steps": 5, "seed": 1}
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 150])
    torch.testing.assert_close(loaded(x, t), model.eval()(x, t), rtol=0, atol=0)


def test_half_precision_file_loads_back_as_float32_close_to_the_original(tmp_path):
    model = _randomised(MLPDenoiser(hidden=16, depth=2, time_dim=8))
    save_checkpoint(tmp_path / "full.pt", model, NoiseSchedule.linear(T=50))
    save_checkpoint(tmp_path / "half.pt", model, NoiseSchedule.linear(T=50), half=True)
    assert read_checkpoint(tmp_path / "half.pt")["state_dict"]["net.0.weight"].dtype == torch.float16
    loaded, _ = load_checkpoint(tmp_path / "half.pt")
    for key, value in model.state_dict().items():
        assert loaded.state_dict()[key].dtype == torch.float32
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=1e-3, atol=1e-4)
    assert (tmp_path / "half.pt").stat().st_size < (tmp_path / "full.pt").stat().st_size


def test_loading_into_another_architecture_says_what_differs(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", MLPDenoiser(hidden=16, depth=2), NoiseSchedule.linear(T=10))
    with pytest.raises(ValueError, match=r"differs in: hidden: checkpoint 16 vs model 32"):
        load_checkpoint(path, model=MLPDenoiser(hidden=32, depth=2))
    with pytest.raises(ValueError, match="architecture mismatch: the checkpoint holds MLPDenoiser"):
        load_checkpoint(path, model=UNet(channels=(8, 8, 8), groups=4))


def test_loading_into_a_matching_model_fills_its_weights(tmp_path):
    source = _randomised(MLPDenoiser(hidden=16, depth=2))
    path = save_checkpoint(tmp_path / "m.pt", source, NoiseSchedule.linear(T=10))
    target, _ = load_checkpoint(path, model=MLPDenoiser(hidden=16, depth=2))
    assert torch.equal(target.net[0].weight, source.net[0].weight)


def test_weights_of_the_wrong_shape_are_reported_by_key(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", MLPDenoiser(hidden=16, depth=2), NoiseSchedule.linear(T=10))
    payload = read_checkpoint(path)
    payload["model_config"]["hidden"] = 8                     # config no longer fits the weights
    torch.save(payload, path)
    with pytest.raises(ValueError, match=r"net.0.weight: file \(16, 34\) vs model \(8, 34\)"):
        load_checkpoint(path)


def test_corrupt_truncated_or_foreign_files_raise_clear_errors(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", MLPDenoiser(hidden=8, depth=1), NoiseSchedule.linear(T=10))
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable ddpm_helpers checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match="not a readable ddpm_helpers checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a ddpm_helpers checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "absent.pt")


def test_unknown_architecture_name_in_file_is_rejected(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", MLPDenoiser(hidden=8, depth=1), NoiseSchedule.linear(T=10))
    payload = read_checkpoint(path)
    payload["model_class"] = "Transformer"
    torch.save(payload, path)
    with pytest.raises(ValueError, match=r"unknown architecture 'Transformer'; known: \['MLPDenoiser', 'UNet'\]"):
        load_checkpoint(path)


def test_only_package_models_can_be_saved(tmp_path):
    with pytest.raises(TypeError, match="can only save the package's models"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2), NoiseSchedule.linear(T=10))


def test_unknown_pretrained_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"available: \['mnist_unet', 'mnist_unet_cond', 'moons_mlp'\]"):
        load_pretrained("cifar_unet")


@pytest.mark.parametrize("name, shape", [("moons_mlp", (4, 2)), ("mnist_unet", (4, 1, 28, 28)),
                                         ("mnist_unet_cond", (4, 1, 28, 28))])
def test_shipped_weights_load_offline_on_cpu_in_eval_mode(name, shape):
    model, schedule = load_pretrained(name)
    assert not model.training and schedule.T == 1000
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    assert {"command", "minutes", "machine", "steps", "seed", "data"} <= set(model.provenance)
    with torch.no_grad():
        eps = model(torch.randn(shape), torch.full((shape[0],), 500, dtype=torch.long))
    assert eps.shape == shape and torch.isfinite(eps).all()


def test_shipped_weights_fit_the_ten_megabyte_budget():
    from importlib import resources

    sizes = [(resources.files("ddpm_helpers") / "assets" / f).stat().st_size for f in PRETRAINED.values()]
    assert sum(sizes) <= 10 * 1024 * 1024


def test_a_conditional_model_round_trips_with_num_classes_in_its_config(tmp_path):
    model = _randomised(UNet(channels=(8, 16, 16), groups=4, num_classes=10))
    save_checkpoint(tmp_path / "cond.pt", model, NoiseSchedule.linear(T=100))
    assert read_checkpoint(tmp_path / "cond.pt")["model_config"]["num_classes"] == 10
    loaded, _ = load_checkpoint(tmp_path / "cond.pt")
    x, t, labels = torch.randn(3, 1, 28, 28), torch.tensor([1, 50, 99]), torch.tensor([0, 7, 10])
    torch.testing.assert_close(loaded(x, t, labels), model.eval()(x, t, labels), rtol=0, atol=0)
    with pytest.raises(ValueError, match="num_classes: checkpoint 10 vs model '<absent>'"):
        load_checkpoint(tmp_path / "cond.pt", model=UNet(channels=(8, 16, 16), groups=4))


def test_shipped_mnist_unet_predicts_x0_with_its_schedule_and_the_default_recipes_loss():
    model, schedule = load_pretrained("mnist_unet")
    assert model.prediction == "x0" and model.config["schedule"] == schedule.config
    settings = model.provenance["settings"]
    for key in ("timesteps", "loss_weighting", "min_snr_gamma", "grad_clip", "weight_decay"):
        assert settings[key] == RECIPES["mnist"][key], key
    x, t = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 999])
    with torch.no_grad():                                    # forward is the eps that x_t and the x0 output imply
        a = schedule.gather(schedule.alpha_bars, t, x.ndim)
        torch.testing.assert_close(model(x, t), (x - a.sqrt() * model.output(x, t)) / (1 - a).sqrt())


def test_shipped_conditional_weights_know_the_digits_and_say_where_they_started():
    model, _ = load_pretrained("mnist_unet_cond")
    plain, _ = load_pretrained("mnist_unet")
    # the shipped U-Net's architecture with a label table; it predicts eps, as the unconditional file it
    # started from did (the earlier mnist_unet of the MNIST_2025 recipe, since replaced by an x0 network)
    architecture = {k: v for k, v in plain.config.items() if k not in ("prediction", "schedule")}
    assert model.config == {**architecture, "num_classes": 10}
    chain, run = [], model.provenance                      # the newest run first, back to the first one
    while run is not None:
        chain.append(run)
        run = run.get("initialized_from")
    conditional = [run for run in chain if "--conditional" in run["command"]]
    assert all(0.1 <= run["settings"]["label_dropout"] <= 0.2 for run in conditional)   # the null label is trained
    first = conditional[-1]                                  # started from the shipped unconditional file of its time
    assert "label_embedding.table.weight" in first["init_note"]
    started_from = first["initialized_from"]
    assert chain[len(conditional)] is started_from and "--conditional" not in started_from["command"]
    earlier = {key: MNIST_2025[key] for key in ("batch_size", "warmup", "ema_decay", "timesteps")}
    assert {key: started_from["settings"][key] for key in earlier} == earlier
    x, t = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.tensor([600, 600])
    with torch.no_grad():                                   # the fine-tune taught it the labels
        assert not torch.allclose(model(x, t, torch.tensor([1, 1])), model(x, t, torch.tensor([8, 8])), atol=1e-3)
