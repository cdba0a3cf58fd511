"""Tests of the denoising networks: sinusoidal embedding, MLPDenoiser, UNet."""

import pytest
import torch

from ddpm_helpers.checkpoints import load_checkpoint, save_checkpoint
from ddpm_helpers.diffusion import loss_simple, predict_x0
from ddpm_helpers.models import MLPDenoiser, SinusoidalEmbedding, UNet, num_parameters
from ddpm_helpers.samplers import ancestral_sample, ddim_sample
from ddpm_helpers.schedules import NoiseSchedule
from ddpm_helpers.training import loss_weights, train

torch.set_num_threads(1)


def test_embedding_has_shape_batch_by_dim_and_float_dtype():
    emb = SinusoidalEmbedding(16)(torch.arange(5))
    assert emb.shape == (5, 16)
    assert emb.dtype == torch.float32


def test_embedding_matches_the_sine_cosine_formula():
    dim, t = 8, torch.tensor([0, 1, 37, 999])
    half = dim // 2
    freqs = torch.tensor([10_000.0 ** (-i / half) for i in range(half)], dtype=torch.float64)
    angles = t.double()[:, None] * freqs[None]
    expected = torch.cat([angles.sin(), angles.cos()], dim=1).float()
    torch.testing.assert_close(SinusoidalEmbedding(dim)(t), expected, atol=1e-5, rtol=0)


def test_embedding_of_t0_is_zeros_then_ones():
    emb = SinusoidalEmbedding(6)(torch.tensor([0]))
    torch.testing.assert_close(emb, torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]]))


def test_embedding_stays_in_minus_one_one_and_is_finite_for_large_t():
    t = torch.tensor([0, 999, 10_000, 1_000_000])
    emb = SinusoidalEmbedding(32)(t)
    assert torch.isfinite(emb).all()
    assert emb.abs().max() <= 1.0


def test_embedding_gives_distinct_vectors_for_every_timestep():
    emb = SinusoidalEmbedding(32)(torch.arange(1000))
    distances = torch.cdist(emb, emb) + torch.eye(1000) * 10
    assert distances.min() > 0.1  # neighbouring integers are clearly apart, no collisions


def test_embedding_accepts_float_times_and_agrees_with_long():
    module = SinusoidalEmbedding(8)
    torch.testing.assert_close(module(torch.tensor([3.0, 7.0])), module(torch.tensor([3, 7])))


@pytest.mark.parametrize("dim", [0, 3, 2.0, True])
def test_embedding_rejects_odd_or_non_int_dim(dim):
    with pytest.raises(ValueError, match="even int"):
        SinusoidalEmbedding(dim)


@pytest.mark.parametrize("t", [torch.tensor(5), torch.zeros(2, 3, dtype=torch.long)])
def test_embedding_rejects_t_that_is_not_one_dimensional(t):
    with pytest.raises(ValueError, match="shape"):
        SinusoidalEmbedding(8)(t)


def test_mlp_returns_eps_of_the_shape_of_x_t_and_depends_on_t():
    torch.manual_seed(0)
    model = MLPDenoiser(hidden=32, depth=2, time_dim=8)
    x_t = torch.randn(6, 2)
    out_early = model(x_t, torch.zeros(6, dtype=torch.long))
    out_late = model(x_t, torch.full((6,), 900, dtype=torch.long))
    assert out_early.shape == (6, 2)
    assert not torch.allclose(out_early, out_late)


def test_mlp_parameter_count_matches_the_layer_sizes():
    model = MLPDenoiser(hidden=10, depth=2, time_dim=4)
    expected = (2 + 4) * 10 + 10 + 10 * 10 + 10 + 10 * 2 + 2
    assert model.num_parameters() == expected == num_parameters(model)


def test_mlp_rejects_wrong_shapes_with_clear_messages():
    model = MLPDenoiser(hidden=8, depth=1, time_dim=4)
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, 2\)"):
        model(torch.randn(3, 1, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"t must have shape \(3,\)"):
        model(torch.randn(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="tensor"):
        model(torch.randn(3, 2), 5)
    with pytest.raises(ValueError, match="depth"):
        MLPDenoiser(depth=0)


def test_unet_maps_mnist_batch_to_same_shape_and_uses_t():
    torch.manual_seed(0)
    model = UNet(channels=(8, 16, 16), groups=4)
    for p in model.parameters():  # zero-initialised output layers would hide the dependence on t
        torch.nn.init.normal_(p, std=0.05)
    x_t = torch.randn(3, 1, 28, 28)
    out_a = model(x_t, torch.tensor([0, 0, 0]))
    out_b = model(x_t, torch.tensor([500, 500, 500]))
    assert out_a.shape == (3, 1, 28, 28)
    assert not torch.allclose(out_a, out_b)


def test_unet_starts_by_predicting_zero_noise():
    out = UNet(channels=(8, 16, 16), groups=4)(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]))
    assert torch.count_nonzero(out) == 0


def test_unet_widths_are_configurable_and_change_the_parameter_count():
    small, large = UNet(channels=(8, 16, 16), groups=4), UNet(channels=(8, 16, 32), groups=4)
    assert small.num_parameters() < large.num_parameters()
    assert small.config["channels"] == (8, 16, 16)
    assert UNet(**small.config).num_parameters() == small.num_parameters()


def test_unet_skip_connections_carry_information_across_the_bottleneck():
    # The gradient of a 28x28 output pixel w.r.t. a far-away input pixel flows through the
    # coarse levels; the one w.r.t. its own neighbourhood flows through the 28x28 skip.
    torch.manual_seed(0)
    model = UNet(channels=(8, 8, 8), groups=4)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x_t = torch.randn(1, 1, 28, 28, requires_grad=True)
    model(x_t, torch.tensor([10]))[0, 0, 14, 14].backward()
    assert x_t.grad[0, 0, 14, 14] != 0
    assert x_t.grad[0, 0, 0, 0] != 0  # receptive field spans the whole image


def test_unet_rejects_bad_input_and_config():
    model = UNet(channels=(8, 16, 16), groups=4)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model(torch.randn(2, 28, 28), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.randn(2, 1, 30, 30), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        model(torch.randn(2, 1, 28, 28), torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match="groups=8 must divide"):
        UNet(channels=(12, 16, 16))
    with pytest.raises(ValueError, match="channels"):
        UNet(channels=(8, -16))


def test_patch_2_is_a_unet_on_unshuffled_pixels_with_four_times_the_channels():
    torch.manual_seed(0)
    patched = _randomise(UNet(channels=(8, 16), groups=4, patch=2))
    torch.manual_seed(0)
    inner = UNet(channels=(8, 16), groups=4, in_channels=4)
    inner.load_state_dict(patched.state_dict())            # the same parameters, name for name
    x_t, t = torch.randn(3, 1, 28, 28), torch.tensor([0, 500, 999])
    want = torch.nn.functional.pixel_shuffle(inner(torch.nn.functional.pixel_unshuffle(x_t, 2), t), 2)
    torch.testing.assert_close(patched(x_t, t), want, rtol=0, atol=0)
    # pixel (2i + a, 2j + b) is channel 2a + b at (i, j): the unshuffle loses nothing and mixes no images
    assert torch.equal(torch.nn.functional.pixel_unshuffle(x_t, 2)[1, 3, 5, 6], x_t[1, 0, 11, 13])
    assert patched.config["patch"] == 2 and UNet(**patched.config).config == patched.config
    assert "patch" not in UNet(channels=(8, 16), groups=4).config    # files without the key are patch=1


def test_patch_halves_the_resolution_of_every_level_and_names_the_fix_when_28_does_not_fit():
    model = UNet(channels=(8, 16), groups=4, patch=2)
    assert model.in_conv.in_channels == 4 and model.out_conv.out_channels == 4
    with pytest.raises(ValueError, match=r"divisible by 8 .*28x28 MNIST needs fewer levels, e\.g\. UNet\(channels=\(32, 64\), patch=2\)"):
        UNet(channels=(8, 16, 16), groups=4, patch=2)(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"patch must be an int >= 1, got 0"):
        UNet(patch=0)


# ---- class-conditional models (num_classes; notebook 07) -----------------------------------------

def _randomise(model, std=0.05):
    for p in model.parameters():           # zero-initialised layers would hide any dependence
        torch.nn.init.normal_(p, std=std)
    return model


def test_unet_without_num_classes_keeps_its_config_and_weights_and_refuses_labels():
    model = UNet(channels=(8, 16, 16), groups=4)
    assert "num_classes" not in model.config and model.num_classes is None
    assert not any(key.startswith("label_embedding") for key in model.state_dict())
    with pytest.raises(ValueError, match="unconditional.*num_classes"):
        model(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), torch.tensor([3, 4]))


def test_conditional_unet_from_the_same_seed_is_the_unconditional_one_plus_a_zero_label_table():
    torch.manual_seed(0)
    plain = UNet(channels=(8, 16, 16), groups=4)
    torch.manual_seed(0)
    cond = UNet(channels=(8, 16, 16), groups=4, num_classes=10)
    assert cond.config == {**plain.config, "num_classes": 10}
    assert cond.label_embedding.table.weight.shape == (11, 4 * 8)      # 10 classes + the null label
    assert torch.count_nonzero(cond.label_embedding.table.weight) == 0
    for key, value in plain.state_dict().items():
        assert torch.equal(cond.state_dict()[key], value)
    assert cond.num_parameters() == plain.num_parameters() + 11 * 32


@pytest.mark.parametrize("make, x", [
    (lambda: UNet(channels=(8, 16, 16), groups=4, num_classes=10), torch.randn(3, 1, 28, 28)),
    (lambda: MLPDenoiser(hidden=16, depth=2, time_dim=8, num_classes=10), torch.randn(3, 2)),
])
def test_conditional_models_use_the_label_and_none_means_the_null_label(make, x):
    torch.manual_seed(0)
    model = _randomise(make())
    t = torch.tensor([5, 50, 500])
    out_3, out_7 = model(x, t, torch.tensor([3, 3, 3])), model(x, t, torch.tensor([7, 7, 7]))
    assert out_3.shape == x.shape and not torch.allclose(out_3, out_7)
    torch.testing.assert_close(model(x, t), model(x, t, torch.full((3,), 10)), rtol=0, atol=0)
    torch.testing.assert_close(model(x, t, torch.tensor([3, 7, 10]))[1], out_7[1], rtol=0, atol=0)


@pytest.mark.parametrize("labels, error, message", [
    (torch.tensor([1, 11]), ValueError, r"0\.\.9 or 10 \(the null label"),
    (torch.tensor([-1, 2]), ValueError, r"lie in 0\.\.9"),
    (torch.tensor([1, 2, 3]), ValueError, r"shape \(2,\)"),
    (torch.tensor([[1, 2]]), ValueError, r"shape \(2,\)"),
    (torch.tensor([1.0, 2.0]), TypeError, "integer tensor"),
    ([1, 2], TypeError, "integer tensor"),
])
def test_conditional_unet_rejects_bad_labels_with_clear_messages(labels, error, message):
    model = UNet(channels=(8, 16, 16), groups=4, num_classes=10)
    with pytest.raises(error, match=message):
        model(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), labels)
    with pytest.raises(ValueError, match="num_classes must be an int >= 1"):
        UNet(channels=(8, 16, 16), groups=4, num_classes=0)


def test_x0_prediction_returns_the_eps_that_x_t_and_its_x0_imply_at_each_samples_own_t():
    schedule = NoiseSchedule.linear(T=1000)
    torch.manual_seed(0)
    raw = _randomise(UNet(channels=(8, 16), groups=4, patch=2))
    x0_model = UNet(channels=(8, 16), groups=4, patch=2, prediction="x0", schedule=schedule)
    x0_model.load_state_dict(raw.state_dict())              # the same weights: raw(x_t, t) is its x0 estimate
    x_t, t = torch.randn(5, 1, 28, 28), torch.tensor([0, 1, 500, 998, 999])
    x0_hat = raw(x_t, t)
    torch.testing.assert_close(x0_model.output(x_t, t), x0_hat, rtol=0, atol=0)
    a = schedule.alpha_bars.double()[t].view(-1, 1, 1, 1)   # alpha_bar_t of each sample's own t, not t +- 1
    want = (x_t.double() - a.sqrt() * x0_hat.double()) / (1 - a).sqrt()
    torch.testing.assert_close(x0_model(x_t, t).double(), want, rtol=1e-5, atol=1e-5)
    for shift in (-1, 1):                                   # an off-by-one in t would be caught
        b = schedule.alpha_bars.double()[(t + shift).clamp(0, 999)].view(-1, 1, 1, 1)
        off = (x_t.double() - b.sqrt() * x0_hat.double()) / (1 - b).sqrt()
        assert not torch.allclose(x0_model(x_t, t).double()[1:4], off[1:4], rtol=1e-5, atol=1e-5)
    # and the samplers' predict_x0 recovers the network's x0 from that eps
    back = predict_x0(x_t, t, x0_model(x_t, t), schedule)
    torch.testing.assert_close(back, x0_hat, rtol=0, atol=2e-3)
    torch.testing.assert_close(back[:3], x0_hat[:3], rtol=0, atol=1e-5)


def test_x0_prediction_with_min_snr_weights_is_the_min_snr_loss_of_x0():
    schedule = NoiseSchedule.linear(T=1000)
    torch.manual_seed(1)
    model = _randomise(UNet(channels=(8, 16), groups=4, patch=2, prediction="x0", schedule=schedule))
    x0, noise = torch.rand(4, 1, 28, 28) * 2 - 1, torch.randn(4, 1, 28, 28)
    t = torch.tensor([3, 90, 400, 900])
    a = schedule.alpha_bars.double()[t].view(-1, 1, 1, 1)
    x_t = (a.sqrt() * x0 + (1 - a).sqrt() * noise).float()
    weights = loss_weights(schedule, "min_snr", 5.0)[t].double()
    eps_loss = weights * (model(x_t, t).double() - noise).pow(2).flatten(1).mean(1)
    snr = (a / (1 - a)).flatten()
    x0_loss = snr.clamp(max=5.0) * (model.output(x_t, t).double() - x0).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(eps_loss, x0_loss, rtol=1e-4, atol=0)


def test_x0_prediction_round_trips_through_its_config_and_a_checkpoint(tmp_path):
    schedule = NoiseSchedule.cosine(T=200)
    model = _randomise(UNet(channels=(8, 16), groups=4, patch=2, prediction="x0", schedule=schedule))
    assert model.config["prediction"] == "x0" and model.config["schedule"] == schedule.config
    assert "prediction" not in UNet(channels=(8, 16), groups=4, patch=2).config   # eps files stay as they were
    assert set(model.state_dict()) == set(UNet(channels=(8, 16), groups=4, patch=2).state_dict())
    path = save_checkpoint(tmp_path / "x0.pt", model, schedule)
    loaded, loaded_schedule = load_checkpoint(path)
    assert loaded.config == model.config and loaded_schedule.config == schedule.config
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([0, 199])
    torch.testing.assert_close(loaded(x, t), model.eval()(x, t), rtol=0, atol=0)


def test_x0_prediction_needs_its_schedule_and_refuses_bad_settings_with_the_fix():
    with pytest.raises(ValueError, match=r"prediction must be one of \('eps', 'x0'\).*got 'v'"):
        UNet(channels=(8, 16), groups=4, patch=2, prediction="v")
    with pytest.raises(ValueError, match=r"needs the noise schedule .*schedule=NoiseSchedule.linear\(1000\)"):
        UNet(channels=(8, 16), groups=4, patch=2, prediction="x0")
    with pytest.raises(ValueError, match="schedule is only used with prediction='x0'"):
        UNet(channels=(8, 16), groups=4, patch=2, schedule=NoiseSchedule.linear(T=10))
    with pytest.raises(ValueError, match="custom schedule cannot be rebuilt"):
        UNet(channels=(8, 16), groups=4, patch=2, prediction="x0",
             schedule=NoiseSchedule.from_betas(torch.full((10,), 0.1)))
    model = UNet(channels=(8, 16), groups=4, patch=2, prediction="x0", schedule=NoiseSchedule.linear(T=10))
    with pytest.raises(ValueError, match=r"integer timesteps t in 0 \.\.\. 9"):
        model(torch.randn(2, 1, 28, 28), torch.tensor([3, 10]))
    with pytest.raises(ValueError, match="integer timesteps"):
        model(torch.randn(2, 1, 28, 28), torch.tensor([0.5, 3.0]))
    other = NoiseSchedule.linear(T=20)
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    for use in (lambda: loss_simple(model, x, other), lambda: ddim_sample(model, (1, 1, 28, 28), other, steps=2),
                lambda: ancestral_sample(model, (1, 1, 28, 28), other, progress=False),
                lambda: train(model, x, other, steps=1, batch_size=2, progress=False, device="cpu")):
        with pytest.raises(ValueError, match=r"converts x0 to eps with the schedule .*build the model with schedule="):
            use()
