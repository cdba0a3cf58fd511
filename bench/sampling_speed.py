"""Wall time to sample 64 MNIST digits: DDIM-50 (target <= 3 s on 2 cores) and ancestral-1000.

    python bench/sampling_speed.py [--checkpoint PATH] [--threads 2] [--repeats 5] [--result NAME]
Prints medians and the FLOP rate the samplers reach (network FLOPs per step counted by
torch.utils.flop_counter on one forward, times the steps, over the median time) and where a
forward spends its time (self CPU time per operator, torch.profiler over 5 forwards), and writes
bench/results/NAME.json (default sampling_speed; name runs on another CPU differently).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from common import machine, table, write_result
from ddpm_helpers.checkpoints import load_checkpoint, load_pretrained
from ddpm_helpers.samplers import ancestral_sample, ddim_sample


def time_sampler(fn, repeats: int) -> list[float]:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            fn(torch.Generator().manual_seed(i))
        times.append(time.perf_counter() - start)
    return times


def operator_shares(model, shape, forwards: int = 5, top: int = 5) -> dict:
    """Share of a forward's self CPU time per operator (the `top` largest, the rest as "other")."""
    x, t = torch.zeros(shape), torch.full((shape[0],), 500)
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(forwards):
            model(x, t)
    times = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(times.values())
    ranked = sorted(times, key=times.get, reverse=True)
    shares = {name: times[name] / total for name in ranked[:top]}
    return {**shares, "other": 1 - sum(shares.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: load_pretrained('mnist_unet')")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ancestral-repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--result", default="sampling_speed", help="results file name, without .json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, schedule = load_checkpoint(args.checkpoint) if args.checkpoint else load_pretrained("mnist_unet")
    shape = (args.n, 1, 28, 28)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:   # also warms oneDNN up
        model(torch.zeros(shape), torch.zeros(args.n, dtype=torch.long))
    forward_flop = counter.get_total_flops()
    samplers = {  # name: (network calls, sampler, repeats)
        "ddim_50": (50, lambda g: ddim_sample(model, shape, schedule, steps=50, generator=g, progress=False),
                    args.repeats),
        "ancestral_1000": (1000, lambda g: ancestral_sample(model, shape, schedule, generator=g, progress=False),
                           args.ancestral_repeats),
    }
    runs = {name: time_sampler(sample, repeats) for name, (_, sample, repeats) in samplers.items()}
    rows = [dict(sampler=name, n=args.n, median_s=statistics.median(t), min_s=min(t), max_s=max(t),
                 repeats=len(t), gflop_per_s=forward_flop * samplers[name][0] / statistics.median(t) / 1e9)
            for name, t in runs.items()]
    shares = operator_shares(model, shape)
    print(f"one forward of {args.n} digits: {forward_flop / 1e9:.1f} GFLOP; self CPU time: "
          + ", ".join(f"{name} {share:.0%}" for name, share in shares.items()))
    print(table(rows, list(rows[0])))
    write_result(args.result, dict(machine=machine(), threads=args.threads, model=type(model).__name__,
                                   model_config=model.config, parameters=model.num_parameters(),
                                   forward_gflop=forward_flop / 1e9, operator_shares=shares, rows=rows,
                                   times=runs))


if __name__ == "__main__":
    main()
