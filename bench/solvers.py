"""DPM-Solver++ (diffusers) against our DDIM on the shipped MNIST U-Net: Fréchet distance per step count.

    python bench/solvers.py [--n 1000] [--seeds 0 1 2] [--threads 2] [--extras] [--checkpoint PATH]
Target: DPM-Solver++ with 10 steps within 1.2x the Fréchet distance of our DDIM-50 (eta = 0, the same
ODE). For each seed, every sampler starts from the same --n noises x_T (seed), and the real floor is
mnist_real_floor(n, seed) at the same N, each Fréchet distance with its jackknife standard deviation
(ddpm_helpers.spread: one seed already shows the spread); samples are clamped to [-1, 1] before scoring
(the metric's range). DPM-Solver++ runs as diffusers configures it (2nd order, its own grid of `steps` timesteps
from 999 down, the last step to alpha_bar = 1). --extras adds it on our grid, ddim_timesteps(T, steps),
and the stochastic rows (DDIM-50 eta = 1, SDE-DPM-Solver++), whose noise comes from seed + 1.
Writes bench/results/solvers.json after every seed (times are wall-clock seconds per sampler run).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import machine, table, write_result
from ddpm_helpers.checkpoints import load_checkpoint, load_pretrained
from ddpm_helpers.metrics import mnist_scores
from ddpm_helpers.spread import mnist_fd_spread, mnist_real_floor_spread
from ddpm_helpers.samplers import ddim_sample, ddim_timesteps
from ddpm_helpers.toolbox import diffusers_scheduler, scheduler_sample

BATCH = 250


def samplers(model, schedule, steps: list[int], extras: bool) -> dict:
    """name -> sample(x_T, generator); every sampler's network calls per sample is its step count."""
    def ddim(k, eta=0.0):
        return lambda x_T, g: ddim_sample(model, x_T.shape, schedule, steps=k, eta=eta, x_T=x_T, generator=g,
                                          progress=False)

    def dpm(k, grid=None, **config):
        scheduler = diffusers_scheduler("dpm++", schedule, **config)
        return lambda x_T, g: scheduler_sample(model, scheduler, x_T.shape, grid or k, x_T=x_T, generator=g,
                                               progress=False)

    runs = {"DDIM-50": ddim(50), "DPM-Solver++ 10": dpm(10)}          # the target first
    runs |= {f"DDIM-{k}": ddim(k) for k in steps} | {f"DPM-Solver++ {k}": dpm(k) for k in steps}
    if extras:
        runs |= {f"DPM-Solver++ {k}, our grid": dpm(k, ddim_timesteps(schedule.T, k)) for k in steps}
        runs["DDIM-50 eta=1"] = ddim(50, eta=1.0)
        runs |= {f"SDE-DPM-Solver++ {k}": dpm(k, algorithm_type="sde-dpmsolver++") for k in steps if k >= 10}
    return runs


def run_seed(runs: dict, n: int, seed: int) -> list[dict]:
    x_T = torch.randn((n, 1, 28, 28), generator=torch.Generator().manual_seed(seed))
    floor = mnist_real_floor_spread(n, seed=seed)
    rows = []
    for name, sample in runs.items():
        g = torch.Generator().manual_seed(seed + 1)
        start = time.perf_counter()
        with torch.inference_mode():
            x0 = torch.cat([sample(chunk, g) for chunk in x_T.split(BATCH)])
        seconds = time.perf_counter() - start
        x0 = x0.clamp(-1, 1)
        fd = mnist_fd_spread(x0)
        rows.append(dict(sampler=name, seed=seed, fd=fd["fd"], fd_sd=fd["fd_sd"], floor=floor["fd"],
                         floor_sd=floor["fd_sd"], ratio=fd["fd"] / floor["fd"],
                         confident=mnist_scores(x0, memorization=False)["confident"], seconds=seconds))
        print(table(rows[-1:], list(rows[-1])), flush=True)
    return rows


def summary(per_seed: list[dict]) -> list[dict]:
    reference = {r["seed"]: r["fd"] for r in per_seed if r["sampler"] == "DDIM-50"}
    out = []
    for name in dict.fromkeys(r["sampler"] for r in per_seed):
        rows = [r for r in per_seed if r["sampler"] == name]
        vs_ddim50 = [r["fd"] / reference[r["seed"]] for r in rows]
        out.append(dict(sampler=name, seeds=len(rows), fd_median=statistics.median(r["fd"] for r in rows),
                        fd_sd_median=statistics.median(r["fd_sd"] for r in rows),
                        fd_min=min(r["fd"] for r in rows), fd_max=max(r["fd"] for r in rows),
                        floor_median=statistics.median(r["floor"] for r in rows),
                        floor_sd_median=statistics.median(r["floor_sd"] for r in rows),
                        vs_ddim50_median=statistics.median(vs_ddim50), vs_ddim50_max=max(vs_ddim50),
                        seconds_median=statistics.median(r["seconds"] for r in rows)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="samples per sampler and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20], help="step counts to compare")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", default=None, help="score this MNIST file instead of the shipped one")
    parser.add_argument("--extras", action="store_true",
                        help="also DPM-Solver++ on our grid, DDIM-50 eta=1 and SDE-DPM-Solver++ (twice the time)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, schedule = load_checkpoint(args.checkpoint) if args.checkpoint else load_pretrained("mnist_unet")
    runs = samplers(model, schedule, args.steps, args.extras)
    per_seed = []
    for seed in args.seeds:
        per_seed += run_seed(runs, args.n, seed)
        rows = summary(per_seed)
        print(f"\nN = {args.n}, seeds {sorted({r['seed'] for r in per_seed})}; FD / DDIM-50 (eta = 0) per seed")
        print(table(rows, list(rows[0])))
        target = next(r for r in rows if r["sampler"] == "DPM-Solver++ 10")
        write_result("solvers", dict(machine=machine(), provenance=model.provenance, n=args.n, seeds=args.seeds,
                                     target="DPM-Solver++ 10 steps: FD <= 1.2 x DDIM-50 (eta = 0)",
                                     target_met=target["vs_ddim50_max"] <= 1.2, rows=rows, per_seed=per_seed))


if __name__ == "__main__":
    main()
