"""Classifier-free guidance on MNIST: how often a sample is the requested digit vs how far the samples
are from real digits, for guidance scales s, against the real floor at the same N.

    python bench/guidance_tradeoff.py [--n 1000] [--steps 50] [--scales 0,1,2,3,5,8] [--seeds 0,1]
                                      [--intervals all,259-579] [--threads 2] [--checkpoint PATH]

For each seed: --n labels, an equal share per digit (1,000 = 100 per digit), one x_T drawn from the
seed and shared by every scale (so the scales differ only by guidance), DDIM (eta = 0, --steps steps)
of classifier_free_guidance(model, labels, s, interval), samples clamped to [-1, 1]; every scale is
run with every --intervals entry ("all": guidance at every step; "LO-HI": guidance only at the
timesteps LO <= t <= HI, conditional sampling elsewhere, Kynkäänniemi et al. 2024). Scores:
`requested`, the share the package's MNIST classifier assigns to the requested digit (argmax);
`confident` and the Fréchet distance `fd` from ddpm_helpers.metrics.mnist_scores, next to
mnist_real_floor(N, seed) of real held-out digits. Default model: load_pretrained("mnist_unet_cond"). Writes
bench/results/guidance_tradeoff.json (or candidate_guidance_tradeoff.json with --checkpoint).
Issue 15's targets (N = 1,000, DDIM-50): at s = 3, requested >= 97% and fd <= 2x the floor; at s = 1, >= 90%.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import machine, table, write_result
from ddpm_helpers.checkpoints import load_checkpoint, load_pretrained
from ddpm_helpers.guidance import classifier_free_guidance
from ddpm_helpers.metrics import mnist_real_floor, mnist_scores
from ddpm_helpers.samplers import ddim_sample


def guided_scores(model, schedule, n: int, scale: float, steps: int, seed: int,
                  interval: tuple[int, int] | None = None) -> dict:
    labels = torch.arange(n) % 10
    x_T = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    start = time.perf_counter()
    with torch.inference_mode():
        guided = classifier_free_guidance(model, labels, scale, interval)
        x0 = ddim_sample(guided, (n, 1, 28, 28), schedule, steps=steps, x_T=x_T, progress=False).clamp(-1, 1)
    seconds = time.perf_counter() - start
    scores = mnist_scores(x0, memorization=False, return_probs=True)
    probs = scores["probs"]
    per_digit = [float((probs[labels == d].argmax(dim=1) == d).double().mean()) for d in range(10)]
    return dict(scale=scale, interval=_interval_name(interval), seed=seed,
                requested=float((probs.argmax(dim=1) == labels).double().mean()), worst_digit=min(per_digit),
                per_digit=per_digit, confident=scores["confident"], fd=scores["fd"], sample_s=seconds)


def _interval_name(interval: tuple[int, int] | None) -> str:
    return "all" if interval is None else f"{interval[0]}-{interval[1]}"


def _parse_interval(text: str) -> tuple[int, int] | None:
    if text == "all":
        return None
    lo, sep, hi = text.partition("-")
    if not (sep and lo.isdigit() and hi.isdigit()):
        raise SystemExit(f"--intervals takes 'all' or LO-HI timesteps such as 259-579, got {text!r}")
    return int(lo), int(hi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="samples per scale and seed (a multiple of 10)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--scales", default="0,1,2,3,5,8", help="guidance scales s, comma-separated")
    parser.add_argument("--seeds", default="0,1", help="seeds of x_T and of the real floor, comma-separated")
    parser.add_argument("--intervals", default="all",
                        help="guidance intervals, comma-separated: 'all' (every step) or LO-HI timesteps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", default=None, help="score this conditional file instead of the shipped one")
    args = parser.parse_args()
    if args.n % 10:
        raise SystemExit(f"--n must be a multiple of 10 (an equal share per digit), got {args.n}")
    torch.set_num_threads(args.threads)
    model, schedule = load_checkpoint(args.checkpoint) if args.checkpoint else load_pretrained("mnist_unet_cond")
    scales = [float(s) for s in args.scales.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    intervals = [_parse_interval(text) for text in args.intervals.split(",")]
    floors = {seed: mnist_real_floor(args.n, seed=seed, memorization=False) for seed in seeds}
    rows = []
    for seed in seeds:
        for scale in scales:
            for interval in intervals if scale != 1 else [None]:    # at s = 1 an interval changes nothing
                row = guided_scores(model, schedule, args.n, scale, args.steps, seed, interval)
                row.update(floor=floors[seed]["fd"], fd_ratio=row["fd"] / floors[seed]["fd"])
                rows.append(row)
                print(table([row], ["scale", "interval", "seed", "requested", "worst_digit", "confident", "fd",
                                    "floor", "fd_ratio", "sample_s"]), flush=True)
    settings = list(dict.fromkeys((r["scale"], r["interval"]) for r in rows))
    summary = []
    for scale, interval in settings:
        group = [r for r in rows if (r["scale"], r["interval"]) == (scale, interval)]
        summary.append(dict(scale=scale, interval=interval, **{
            f"{key}_{stat}": fn(r[key] for r in group) for key in ("requested", "fd_ratio", "fd")
            for stat, fn in (("median", statistics.median), ("min", min), ("max", max))}))
    print(f"N = {args.n} per scale and seed, DDIM-{args.steps}, seeds {seeds}; real floor fd: "
          + ", ".join(f"{floors[s]['fd']:.2f} (seed {s})" for s in seeds))
    print(table(summary, ["scale", "interval", "requested_median", "requested_min", "fd_median", "fd_ratio_median",
                          "fd_ratio_min", "fd_ratio_max"]))
    name = "candidate_guidance_tradeoff" if args.checkpoint else "guidance_tradeoff"
    write_result(name, dict(machine=machine(), provenance=model.provenance, n=args.n, steps=args.steps,
                            seeds=seeds, floors={str(k): v for k, v in floors.items()}, rows=rows,
                            summary=summary))


if __name__ == "__main__":
    main()
