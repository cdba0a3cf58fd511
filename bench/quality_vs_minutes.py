"""MNIST sample quality against minutes of CPU training from scratch (issue targets, bench only).

One run with a constant learning rate after warm-up: its EMA weights at 1, 2, 5, 10, 20 minutes
are what a from-scratch run of that length would give (nothing depends on the budget ahead).

    python bench/quality_vs_minutes.py train --minutes 1 2 5 10 20 --threads 1 --data-root DIR
    python bench/quality_vs_minutes.py score          # 1,000 DDIM-50 samples per snapshot
Snapshots go to /tmp/ddpm_bench/curve_<tag>_<minutes>min.pt; results to bench/results/.
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from common import machine, table, write_result
from ddpm_helpers.checkpoints import load_checkpoint, save_checkpoint
from ddpm_helpers.data import load_mnist
from ddpm_helpers.models import UNet
from ddpm_helpers.schedules import NoiseSchedule
from ddpm_helpers.training import train

SNAPSHOTS = Path("/tmp/ddpm_bench")


def run_training(args) -> None:
    torch.manual_seed(args.seed)
    data, _ = load_mnist(train=True, root=args.data_root)
    model = UNet(channels=tuple(args.channels), blocks=args.blocks)
    schedule = NoiseSchedule.linear(T=1000)
    marks, snaps = sorted(args.minutes), {}

    def snapshot(step, seconds, ema_model):
        if marks and seconds >= marks[0] * 60:
            snaps[marks.pop(0)] = (step, seconds, copy.deepcopy(ema_model).eval())

    result = train(model, data, schedule, minutes=max(args.minutes) + 0.05, batch_size=args.batch_size,
                   lr=args.lr, warmup=args.warmup, ema_decay=args.ema_decay, timesteps=args.timesteps,
                   generator=torch.Generator().manual_seed(args.seed), device="cpu",
                   num_threads=args.threads, callback=snapshot, progress=not args.no_progress)
    SNAPSHOTS.mkdir(parents=True, exist_ok=True)
    for minutes, (step, seconds, ema_model) in snaps.items():
        prov = dict(result.provenance, steps=step, minutes=seconds / 60, data=f"MNIST train {len(data)}",
                    recipe=vars(args), images_per_second=step * args.batch_size / seconds)
        path = save_checkpoint(SNAPSHOTS / f"curve_{args.tag}_{minutes:g}min.pt", ema_model, schedule, prov)
        print(f"{minutes:g} min: {step} steps, {prov['images_per_second']:.0f} images/s -> {path}")


def run_scoring(args) -> None:
    from ddpm_helpers.metrics import mnist_real_floor, mnist_scores
    from ddpm_helpers.samplers import ddim_sample

    torch.set_num_threads(args.threads)
    floor = mnist_real_floor(args.n, seed=args.seed)
    rows = []
    for path in sorted(SNAPSHOTS.glob(f"curve_{args.tag}_*min.pt"), key=lambda p: float(p.stem.split("_")[-1][:-3])):
        model, schedule = load_checkpoint(path)
        start = time.perf_counter()
        with torch.inference_mode():
            x0 = ddim_sample(model, (args.n, 1, 28, 28), schedule, steps=50,
                             generator=torch.Generator().manual_seed(args.seed), progress=False)
        scores = mnist_scores(x0.clamp(-1, 1))
        share = scores["class_share"]
        rows.append(dict(minutes=round(model.provenance["minutes"], 2), steps=model.provenance["steps"],
                         fd=scores["fd"], fd_ratio=scores["fd"] / floor["fd"], confident=scores["confident"],
                         min_class=min(share), max_class=max(share), sample_s=time.perf_counter() - start))
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print(table(rows, list(rows[0])))
    write_result(f"quality_vs_minutes_{args.tag}", dict(machine=machine(), floor=floor, n=args.n,
                                                        recipe=model.provenance.get("recipe"), rows=rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("phase", choices=["train", "score"])
    parser.add_argument("--tag", default="c16")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 5, 10, 20])
    parser.add_argument("--channels", type=int, nargs=3, default=[16, 32, 64])
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--timesteps", default="stratified")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    run_training(args) if args.phase == "train" else run_scoring(args)


if __name__ == "__main__":
    main()
