"""Moons from scratch: W2 of DDIM-50 samples after S seconds of CPU training vs the real floor.

Target (issue): <= 60 s of CPU training to samples with W2 <= 2x the real-vs-real floor.
    python bench/moons_quality.py [--seconds 15 30 60] [--seeds 0 1 2] [--threads 1]
Trains with the CLI recipe (ddpm_helpers.train RECIPES["moons"]); writes bench/results/moons_quality.json.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from common import machine, table, write_result
from ddpm_helpers.data import make_moons
from ddpm_helpers.metrics import moons_scores
from ddpm_helpers.models import MLPDenoiser
from ddpm_helpers.samplers import ddim_sample
from ddpm_helpers.schedules import NoiseSchedule
from ddpm_helpers.train import RECIPES
from ddpm_helpers.training import train

N = 1000


def real_floor(seed: int) -> float:
    """W2 between two independent draws of N fresh moons (the reference is moons_scores' own draw)."""
    fresh = make_moons(N, generator=torch.Generator().manual_seed(10_000 + seed))
    return moons_scores(fresh, seed=seed)["w2"]


def one_run(seconds: float, seed: int, threads: int) -> dict:
    r = RECIPES["moons"]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    data = make_moons(r["n_points"], generator=generator)
    model = MLPDenoiser(hidden=r["hidden"], depth=r["depth"])
    result = train(model, data, NoiseSchedule.linear(T=1000), minutes=seconds / 60, batch_size=r["batch_size"],
                   lr=r["lr"], warmup=r["warmup"], lr_decay="cosine", ema_decay=r["ema_decay"],
                   timesteps=r["timesteps"], generator=generator, device="cpu", num_threads=threads,
                   progress=False)
    with torch.inference_mode():
        x0 = ddim_sample(result.model, (N, 2), NoiseSchedule.linear(T=1000), steps=50,
                         generator=torch.Generator().manual_seed(seed + 100), progress=False)
    scores, floor = moons_scores(x0, seed=seed), real_floor(seed)
    return dict(seconds=seconds, seed=seed, steps=result.provenance["steps"], w2=scores["w2"], floor=floor,
                ratio=scores["w2"] / floor, off_share=scores["off_share"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[15, 30, 60])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rows = [one_run(s, seed, args.threads) for s in args.seconds for seed in args.seeds]
    print(table(rows, list(rows[0])))
    medians = [dict(seconds=s, median_ratio=statistics.median(r["ratio"] for r in rows if r["seconds"] == s))
               for s in args.seconds]
    print(table(medians, ["seconds", "median_ratio"]))
    write_result("moons_quality", dict(machine=machine(), threads=args.threads, n=N, recipe=RECIPES["moons"],
                                       rows=rows, medians=medians))


if __name__ == "__main__":
    main()
