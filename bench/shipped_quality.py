"""Sample quality of the shipped weights for several samplers, against the real floor at the same N.

    python bench/shipped_quality.py [mnist] [moons] [--n 1000] [--threads 2] [--ancestral] [--checkpoint PATH]
                                    [--etas 0,1] [--no-clip] [--result NAME]
mnist: the U-Net draws --n digits per sampler from one x_T (seed --seed), scored by
ddpm_helpers.metrics.mnist_scores next to mnist_real_floor; samples are clamped to [-1, 1] first (the
metrics reject values outside). --ancestral adds 1000-step ancestral sampling (about 20 minutes for
1,000 digits on 2 cores). moons: the MLP draws 1,000 points per sampler and seed (3 seeds), W2 next
to moons_real_floor. Writes bench/results/shipped_quality_<name>.json. --checkpoint scores a candidate
MNIST file instead of the shipped one (results then go to candidate_quality_mnist.json, or NAME.json with
--result NAME, so that several candidates keep their own files); --etas and --no-clip score fewer DDIM
settings (each costs 50 forwards of --n digits).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import machine, table, write_result
from ddpm_helpers.checkpoints import load_checkpoint, load_pretrained
from ddpm_helpers.metrics import mnist_real_floor, mnist_scores, moons_real_floor, moons_scores
from ddpm_helpers.samplers import ancestral_sample, ddim_sample

DDIM_SETTINGS = [dict(eta=0.0, clip_x0=False), dict(eta=0.0, clip_x0=True), dict(eta=0.5, clip_x0=False),
                 dict(eta=1.0, clip_x0=False), dict(eta=1.0, clip_x0=True)]


def eta_list(text: str) -> list[float]:
    """--etas: a comma-separated list of etas that DDIM_SETTINGS has, e.g. "0,1"."""
    known = sorted({s["eta"] for s in DDIM_SETTINGS})
    try:
        etas = [float(e) for e in text.split(",")]
    except ValueError:
        etas = None
    if etas is None or not set(etas) <= set(known):
        raise argparse.ArgumentTypeError(f"give a comma-separated list drawn from {known}, got {text!r}")
    return etas


def samplers(model, schedule, shape, steps, x_T, ancestral: bool, etas=None, clip: bool = True) -> dict:
    """The DDIM settings to score (those with eta in `etas`, if given; without clip_x0 unless `clip`)."""
    settings = [s for s in DDIM_SETTINGS if (etas is None or s["eta"] in etas) and (clip or not s["clip_x0"])]
    runs = {f"ddim{steps} eta={s['eta']:g}{' clip' if s['clip_x0'] else ''}":
            (lambda g, s=s: ddim_sample(model, shape, schedule, steps=steps, generator=g, progress=False,
                                        x_T=x_T, **s)) for s in settings}
    if ancestral:
        runs["ancestral1000"] = lambda g: ancestral_sample(model, shape, schedule, generator=g, x_T=x_T,
                                                           progress=len(shape) == 4)
    return runs


def timed(sample, seed: int) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    with torch.inference_mode():
        x0 = sample(torch.Generator().manual_seed(seed))
    return x0, time.perf_counter() - start


def run_mnist(args) -> None:
    model, schedule = load_checkpoint(args.checkpoint) if args.checkpoint else load_pretrained("mnist_unet")
    shape = (args.n, 1, 28, 28)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed))
    floor = mnist_real_floor(args.n, seed=args.seed)
    rows = []
    for name, sample in samplers(model, schedule, shape, args.steps, x_T, args.ancestral, args.etas,
                                 not args.no_clip).items():
        x0, seconds = timed(sample, args.seed + 1)
        scores = mnist_scores(x0.clamp(-1, 1))
        rows.append(dict(sampler=name, fd=scores["fd"], fd_ratio=scores["fd"] / floor["fd"],
                         confident=scores["confident"], min_class=min(scores["class_share"]),
                         max_class=max(scores["class_share"]), outside_range=float((x0.abs() > 1).float().mean()),
                         sample_s=seconds))
        print(table(rows[-1:], list(rows[-1])), flush=True)
    print(f"real floor at N = {args.n}: fd {floor['fd']:.2f}, confident {floor['confident']:.3f}")
    print(table(rows, list(rows[0])))
    name = args.result or ("candidate_quality_mnist" if args.checkpoint else "shipped_quality_mnist")
    write_result(name, dict(machine=machine(), provenance=model.provenance, n=args.n, steps=args.steps,
                            seed=args.seed, floor=floor, rows=rows))


def run_moons(args, n: int = 1000, seeds=(0, 1, 2)) -> None:
    model, schedule = load_pretrained("moons_mlp")
    per_seed = []
    for seed in seeds:
        x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
        floor = moons_real_floor(n, seed=seed)["w2"]
        for name, sample in samplers(model, schedule, (n, 2), args.steps, x_T, ancestral=True).items():
            x0, seconds = timed(sample, seed + 1)
            scores = moons_scores(x0, seed=seed)
            per_seed.append(dict(sampler=name, seed=seed, w2=scores["w2"], floor=floor, ratio=scores["w2"] / floor,
                                 off_share=scores["off_share"], sample_s=seconds))
    rows = [dict(sampler=name, median_ratio=statistics.median(r["ratio"] for r in per_seed if r["sampler"] == name),
                 median_w2=statistics.median(r["w2"] for r in per_seed if r["sampler"] == name),
                 median_off_share=statistics.median(r["off_share"] for r in per_seed if r["sampler"] == name))
            for name in dict.fromkeys(r["sampler"] for r in per_seed)]
    print(f"moons, N = {n}, median over seeds {list(seeds)} (exact W2 / real floor at the same N)")
    print(table(rows, list(rows[0])))
    write_result("shipped_quality_moons", dict(machine=machine(), provenance=model.provenance, n=n,
                                               steps=args.steps, rows=rows, per_seed=per_seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", choices=["mnist", "moons"], default=["mnist", "moons"])
    parser.add_argument("--n", type=int, default=1000, help="MNIST samples per sampler")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ancestral", action="store_true", help="MNIST: add ancestral-1000 (slow)")
    parser.add_argument("--checkpoint", default=None, help="MNIST: score this file instead of the shipped one")
    parser.add_argument("--etas", type=eta_list, default=None,
                        help="MNIST: score only the DDIM settings with these etas, e.g. 0,1 (default: 0, 0.5, 1)")
    parser.add_argument("--no-clip", action="store_true", help="MNIST: skip the settings that clip x0_pred")
    parser.add_argument("--result", default=None,
                        help="MNIST results file name, without .json (default: shipped_quality_mnist, or "
                             "candidate_quality_mnist with --checkpoint)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if "moons" in args.models:
        run_moons(args)
    if "mnist" in args.models:
        run_mnist(args)


if __name__ == "__main__":
    main()
