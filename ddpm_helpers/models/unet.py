"""UNet: a small, CPU-friendly eps-prediction network for 1x28x28 images (MNIST).

Shape of the network (c1, c2, c3 = channels; every arrow a residual block that also sees t):

    28x28: in-conv -> c1 ──────────────────────────────── skip ─────────────→ c1 -> out-conv
    14x14:            ↓ c2 ─────────────────────── skip ──────────→ c2 ↑
     7x7:                ↓ c3 -> middle -> c3 ── skip ──→ c3 ↑

Down-sampling is a stride-2 3x3 convolution, up-sampling is nearest-neighbour x2 followed by a
3x3 convolution; skips are concatenated (Ronneberger et al. 2015; Ho et al. 2020, appendix B,
without attention, which costs more than it gives at this size on a CPU).

patch=p folds every p x p square of pixels into p*p channels before the in-conv (pixel unshuffle,
Shi et al. 2016) and unfolds the out-conv's p*p channels back into pixels: the levels then run at
28/p, 28/(2p), ... pixels, p*p times fewer positions per convolution ("simple diffusion",
Hoogeboom et al. 2023, down-samples its first layer the same way). With patch=2 and channels=(c1, c2):

    28x28 -> unshuffle -> 4x14x14: in-conv -> c1 ─────────────── skip ─────────→ c1 -> out-conv -> shuffle -> 28x28
     7x7:                                       ↓ c2 -> middle -> c2 ── skip ──→ c2 ↑

prediction="x0" makes the out-conv predict the clean image x0 instead of eps; forward still returns
eps, the one that x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps implies (a_t = alpha_bar_t of the model's
schedule): eps = (x_t - sqrt(a_t) x0_theta) / sqrt(1 - a_t). So the loss code and every sampler stay
as they are; the eps loss of such a network is SNR_t ||x0 - x0_theta||^2 (SNR_t = a_t / (1 - a_t)),
and with the min-SNR-g weights min(SNR_t, g) / SNR_t it is Hang et al.'s min-SNR-g loss of
x0-prediction, min(SNR_t, g) ||x0 - x0_theta||^2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..schedules import NoiseSchedule
from .embeddings import SinusoidalEmbedding, check_timesteps
from .labels import LabelEmbedding

PREDICTIONS = ("eps", "x0")


class ResidualBlock(nn.Module):
    """h = conv(SiLU(GN(x))) + MLP(temb);  out = skip(x) + conv(SiLU(GN(h)))   (Ho et al. 2020, app. B)."""

    def __init__(self, in_ch: int, out_ch: int, time_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)          # each block starts as the identity (stable start)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(temb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class UNet(nn.Module):
    """eps_theta(x_t, t) for images (B, in_channels, H, W), H and W divisible by 4 (28x28 MNIST).

    channels: widths (c1, c2, c3) at 28, 14 and 7 pixels; blocks: residual blocks per level on the
    way down (the way up has one more, which takes the skip); time_dim: width of the time
    embedding MLP (default 4 * c1); groups: GroupNorm groups (must divide every width).
    patch: 1 (default) or p > 1, the side of the pixel squares folded into channels (module
    docstring); the first level then runs at 28 / p pixels, e.g. UNet(channels=(32, 64), patch=2).
    num_classes: None (default) for eps(x_t, t); an int makes it class-conditional, eps(x_t, t, labels),
    with a learned label embedding (zero at the start, see LabelEmbedding) added to the time
    embedding and one extra null label for "no condition" (classifier-free guidance).
    prediction: "eps" (default) or "x0", which needs the schedule the model is trained and sampled
    with (a NoiseSchedule or its config): the out-conv then predicts x0 (UNet.output) and forward
    returns the eps it implies (module docstring).
    `config` holds the keyword arguments that rebuild the model.
    """

    def __init__(self, channels=(32, 64, 64), blocks: int = 1, time_dim: int | None = None,
                 groups: int = 8, in_channels: int = 1, dropout: float = 0.0, num_classes: int | None = None,
                 patch: int = 1, prediction: str = "eps", schedule: NoiseSchedule | dict | None = None):
        super().__init__()
        channels = _check_config(channels, blocks, groups, in_channels, dropout, patch)
        schedule = _check_prediction(prediction, schedule)
        time_dim = 4 * channels[0] if time_dim is None else time_dim
        self.config = dict(channels=channels, blocks=blocks, time_dim=time_dim, groups=groups,
                           in_channels=in_channels, dropout=dropout)
        if num_classes is not None:                # absent otherwise: shipped unconditional files keep loading
            self.config["num_classes"] = num_classes
        if patch != 1:                             # the same: files without the key are patch=1 networks
            self.config["patch"] = patch
        if prediction != "eps":                    # and eps-prediction networks
            self.config.update(prediction=prediction, schedule=dict(schedule.config))
            a = schedule.alpha_bars.detach().cpu().double()   # not saved in a checkpoint: the config rebuilds them
            self.register_buffer("sqrt_alpha_bars", a.sqrt().float(), persistent=False)
            self.register_buffer("sqrt_one_minus_alpha_bars", (1 - a).sqrt().float(), persistent=False)
        self.prediction = prediction
        self.in_channels, self.num_classes, self.patch = in_channels, num_classes, patch
        self.size_multiple = patch * 2 ** (len(channels) - 1)   # H and W must be multiples of it
        self.time_mlp = nn.Sequential(SinusoidalEmbedding(channels[0]), nn.Linear(channels[0], time_dim),
                                      nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.in_conv = nn.Conv2d(in_channels * patch ** 2, channels[0], 3, padding=1)

        def block(i, o):
            return ResidualBlock(i, o, time_dim, groups, dropout)

        self.down, self.downsample, skip_widths, width = nn.ModuleList(), nn.ModuleList(), [], channels[0]
        for level, c in enumerate(channels):
            self.down.append(nn.ModuleList([block(width if k == 0 else c, c) for k in range(blocks)]))
            width = c
            skip_widths.append(c)
            if level < len(channels) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.middle = block(width, width)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(channels))):
            c = channels[level]
            ups = [block(width + skip_widths[level], c)] + [block(c, c) for _ in range(blocks)]
            self.up.append(nn.ModuleList(ups))
            width = c
            if level > 0:                        # up-sample straight to the next level's width
                width = channels[level - 1]
                self.upsample.append(nn.Conv2d(c, width, 3, padding=1))
        self.out_norm = nn.GroupNorm(groups, channels[0])
        self.out_conv = nn.Conv2d(channels[0], in_channels * patch ** 2, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)      # predict eps = 0 at the start
        nn.init.zeros_(self.out_conv.bias)
        # built last, so that the other weights are those of UNet(...) without labels from the same seed
        self.label_embedding = LabelEmbedding(num_classes, time_dim) if num_classes is not None else None
        self.to(memory_format=torch.channels_last)   # NHWC: ~20% faster convolutions on CPUs

    def forward(self, x_t: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """eps_theta(x_t, t), or eps_theta(x_t, t, labels) for a conditional model: labels (B,) in
        0 ... num_classes-1, num_classes = the null label, None = the null label for every sample.
        With prediction="x0", the eps that x_t and the network's x0_theta = self.output(...) imply."""
        out = self.output(x_t, t, labels)
        if self.prediction == "eps":
            return out
        T = len(self.sqrt_alpha_bars)
        if t.is_floating_point() or t.min() < 0 or t.max() >= T:
            raise ValueError(f"an x0-predicting UNet needs integer timesteps t in 0 ... {T - 1} (its schedule's "
                             f"T = {T}) to convert x0 to eps, got {t.dtype} t in [{t.min().item()}, {t.max().item()}]")
        sqrt_a = self.sqrt_alpha_bars[t].view(-1, 1, 1, 1)
        sqrt_1ma = self.sqrt_one_minus_alpha_bars[t].view(-1, 1, 1, 1)
        return (x_t - sqrt_a * out) / sqrt_1ma     # the eps that x_t and x0_theta imply

    def output(self, x_t: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """What the out-conv predicts: eps_theta (prediction="eps", the same as forward) or x0_theta."""
        self._check_input(x_t)
        x_t = x_t.contiguous(memory_format=torch.channels_last)
        temb = self.time_mlp(check_timesteps(t, batch=x_t.shape[0]))
        if self.label_embedding is not None:
            temb = temb + self.label_embedding(labels, x_t.shape[0])
        elif labels is not None:
            raise ValueError("this UNet is unconditional (built without num_classes) but got labels; "
                             "build UNet(..., num_classes=10) and train it with labels, or drop the labels")
        h = x_t
        if self.patch > 1:                        # (B, C, H, W) -> (B, C * p * p, H / p, W / p)
            h = F.pixel_unshuffle(h, self.patch).contiguous(memory_format=torch.channels_last)
        h, skips = self.in_conv(h), []
        for level, blocks in enumerate(self.down):
            for blk in blocks:
                h = blk(h, temb)
            skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
        h = self.middle(h, temb)
        for i, blocks in enumerate(self.up):
            h = torch.cat([h, skips.pop()], dim=1)
            for blk in blocks:
                h = blk(h, temb)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.out_conv(F.silu(self.out_norm(h)))
        return F.pixel_shuffle(out, self.patch) if self.patch > 1 else out

    def num_parameters(self) -> int:
        """The number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _check_input(self, x_t: Tensor) -> None:
        factor = self.size_multiple
        if x_t.ndim != 4 or x_t.shape[1] != self.in_channels or x_t.shape[2] % factor or x_t.shape[3] % factor:
            fix = "" if 28 % factor == 0 else (
                f"; this network halves {len(self.down) - 1} times after patch={self.patch}, so 28x28 MNIST "
                "needs fewer levels, e.g. UNet(channels=(32, 64), patch=2)")
            raise ValueError(
                f"x_t must have shape (B, {self.in_channels}, H, W) with H and W divisible by {factor} "
                f"(e.g. (B, 1, 28, 28) for MNIST), got {tuple(x_t.shape)}{fix}"
            )


def _check_prediction(prediction, schedule) -> NoiseSchedule | None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS} (what the out-conv predicts), got {prediction!r}")
    if prediction == "eps":
        if schedule is not None:
            raise ValueError("schedule is only used with prediction='x0' (an eps-predicting UNet does not "
                             "depend on it); drop schedule=...")
        return None
    if isinstance(schedule, dict):
        schedule = NoiseSchedule.from_config(schedule)
    if not isinstance(schedule, NoiseSchedule):
        raise ValueError(f"prediction={prediction!r} needs the noise schedule the model is trained and sampled "
                         f"with, e.g. UNet(..., prediction={prediction!r}, schedule=NoiseSchedule.linear(1000)); "
                         f"got schedule={schedule!r}")
    if schedule.config.get("kind") not in ("linear", "cosine"):
        raise ValueError("a custom schedule cannot be rebuilt from the model's config (nor from a checkpoint); "
                         "use NoiseSchedule.linear(...) or NoiseSchedule.cosine(...)")
    return schedule


def _check_config(channels, blocks, groups, in_channels, dropout, patch) -> tuple[int, ...]:
    if not isinstance(channels, (tuple, list)) or not channels or not all(
        isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels
    ):
        raise ValueError(f"channels must be a tuple of positive ints, one per resolution, got {channels!r}")
    for name, value in (("blocks", blocks), ("groups", groups), ("in_channels", in_channels), ("patch", patch)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if any(c % groups for c in channels):
        raise ValueError(f"groups={groups} must divide every width in channels={tuple(channels)}; "
                         "pick widths that are multiples of it or fewer groups")
    if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
    return tuple(channels)
