"""Sample quality of the shipped MNIST U-Net for several samplers, against the real floor.

    python bench/shipped_quality.py [--n 1000] [--threads 2] [--ancestral]
Each sampler starts from the same x_T (seed --seed) and draws --n digits; the scores are those of
ddpm_helpers.metrics.mnist_scores, next to mnist_real_floor at the same N. Samples are clamped to
[-1, 1] before scoring (the metrics reject values outside). --ancestral adds 1000-step ancestral
sampling (about 20 minutes for 1,000 digits on 2 cores). Writes bench/results/shipped_quality.json.
"""
from __future__ import annotations

import argparse
import time

import torch

from common import machine, table, write_result
from ddpm_helpers.checkpoints import load_pretrained
from ddpm_helpers.metrics import mnist_real_floor, mnist_scores
from ddpm_helpers.samplers import ancestral_sample, ddim_sample

DDIM_SETTINGS = [dict(eta=0.0, clip_x0=False), dict(eta=0.0, clip_x0=True), dict(eta=0.5, clip_x0=False),
                 dict(eta=1.0, clip_x0=False), dict(eta=1.0, clip_x0=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ancestral", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, schedule = load_pretrained("mnist_unet")
    shape = (args.n, 1, 28, 28)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed))
    samplers = {f"ddim{args.steps} eta={s['eta']:g}{' clip' if s['clip_x0'] else ''}":
                (lambda g, s=s: ddim_sample(model, shape, schedule, steps=args.steps, generator=g,
                                            progress=False, x_T=x_T, **s)) for s in DDIM_SETTINGS}
    if args.ancestral:
        samplers["ancestral1000"] = lambda g: ancestral_sample(model, shape, schedule, generator=g, x_T=x_T)
    floor = mnist_real_floor(args.n, seed=args.seed)
    rows = []
    for name, sample in samplers.items():
        start = time.perf_counter()
        with torch.inference_mode():
            x0 = sample(torch.Generator().manual_seed(args.seed + 1))
        seconds = time.perf_counter() - start
        scores = mnist_scores(x0.clamp(-1, 1))
        rows.append(dict(sampler=name, fd=scores["fd"], fd_ratio=scores["fd"] / floor["fd"],
                         confident=scores["confident"], min_class=min(scores["class_share"]),
                         max_class=max(scores["class_share"]), outside_range=float((x0.abs() > 1).float().mean()),
                         sample_s=seconds))
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print(f"real floor at N = {args.n}: fd {floor['fd']:.2f}, confident {floor['confident']:.3f}")
    print(table(rows, list(rows[0])))
    write_result("shipped_quality", dict(machine=machine(), n=args.n, steps=args.steps, seed=args.seed,
                                         floor=floor, rows=rows))


if __name__ == "__main__":
    main()
