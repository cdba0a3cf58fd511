"""Does more network help the shipped mnist_unet? Grow it without changing its function, fine-tune, score.

    python bench/capacity_probe.py blocks2|attention [--minutes 95] [--n 1000] [--data-root DIR]
blocks2: UNet(blocks=2), the shipped weights in place and every new residual block the identity
(its last convolution zero); attention: a 4-head self-attention block after the 7x7 middle block,
its output projection zero. Both start as exactly the shipped model (checked). Fine-tuned like a
plain continuation (L_simple, AdamW lr 5e-4, 100 warm-up steps, cosine decay over the minutes,
stratified t, EMA 0.999, batch 128, seed 2, 1 thread), then scored as bench/shipped_quality.py:
DDIM-50, eta = 0, N digits from the x_T of seed 0, against mnist_real_floor(N).
Writes bench/results/capacity_probe_<variant>.json.
"""
from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from torch import nn

from common import machine, write_result
from ddpm_helpers.checkpoints import load_pretrained
from ddpm_helpers.data import load_mnist
from ddpm_helpers.metrics import mnist_real_floor, mnist_scores
from ddpm_helpers.models import UNet
from ddpm_helpers.samplers import ddim_sample
from ddpm_helpers.training import train


class Attention(nn.Module):
    """x + proj(softmax(q k^T / sqrt(d)) v) over the h*w positions, q, k, v = 1x1 conv of GN(x)."""

    def __init__(self, channels: int, heads: int = 4, groups: int = 8):
        super().__init__()
        self.heads, self.norm = heads, nn.GroupNorm(groups, channels)
        self.qkv, self.proj = nn.Conv2d(channels, 3 * channels, 1), nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2)
        out = F.scaled_dot_product_attention(*qkv.unbind(1))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class MiddleWithAttention(nn.Module):
    def __init__(self, block: nn.Module, channels: int):
        super().__init__()
        self.block, self.attention = block, Attention(channels)

    def forward(self, h, temb):
        return self.attention(self.block(h, temb))


def grown(shipped: nn.Module, variant: str) -> nn.Module:
    """A model that computes what `shipped` computes, with more capacity (`shipped` is modified for attention)."""
    if variant == "blocks2":
        model = UNet(channels=shipped.config["channels"], blocks=2)
        new = [k for k in model.state_dict() if k not in shipped.state_dict()]
        assert new and all(k.startswith(("down.", "up.")) for k in new), new
        model.load_state_dict(shipped.state_dict(), strict=False)   # down.L.0, up.I.0, up.I.1 keep their names
        return model
    shipped.middle = MiddleWithAttention(shipped.middle, shipped.config["channels"][-1])
    return shipped.to(memory_format=torch.channels_last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variant", choices=["blocks2", "attention"])
    parser.add_argument("--minutes", type=float, default=95.0)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--data-root", default=None, help="folder holding MNIST/raw (full MNIST)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(2)                                         # the new blocks' random first layers
    shipped, schedule = load_pretrained("mnist_unet")
    model = grown(copy.deepcopy(shipped), args.variant)
    x_T = torch.randn((args.n, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    check = torch.Generator().manual_seed(3)
    x_check, t = torch.randn((64, 1, 28, 28), generator=check), torch.randint(0, schedule.T, (64,), generator=check)
    with torch.inference_mode():
        gap = (model.eval()(x_check, t) - shipped(x_check, t)).abs().max().item()
    assert gap < 1e-5, f"the grown model is not the shipped one: max |eps difference| {gap}"
    data, _ = load_mnist(train=True, root=args.data_root)
    result = train(model.train(), data, schedule, minutes=args.minutes, batch_size=128, lr=5e-4, warmup=100,
                   lr_decay="cosine", grad_clip=1.0, ema_decay=0.999, timesteps="stratified",
                   loss_weighting="none", generator=torch.Generator().manual_seed(2), num_threads=1,
                   progress=False)
    with torch.inference_mode():
        x0 = ddim_sample(result.model.eval(), x_T.shape, schedule, steps=50, x_T=x_T, progress=False)
    scores, floor = mnist_scores(x0.clamp(-1, 1), memorization=False), mnist_real_floor(args.n, seed=0)
    row = dict(variant=args.variant, parameters=sum(p.numel() for p in model.parameters()),
               steps=result.provenance["steps"], minutes=result.provenance["minutes"], fd=scores["fd"],
               floor=floor["fd"], fd_ratio=scores["fd"] / floor["fd"], confident=scores["confident"],
               class_share=scores["class_share"], data=f"{data.shape[0]} digits")
    print(row)
    write_result(f"capacity_probe_{args.variant}", dict(machine=machine(), row=row, start_gap=gap,
                                                          training=result.provenance))


if __name__ == "__main__":
    main()
