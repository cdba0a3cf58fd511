"""Wall time to sample 64 MNIST digits: DDIM-50 (target <= 3 s on 2 cores) and ancestral-1000.

    python bench/sampling_speed.py [--checkpoint PATH] [--threads 2] [--repeats 5]
Prints medians and writes bench/results/sampling_speed.json.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: load_pretrained('mnist_unet')")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ancestral-repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, schedule = load_checkpoint(args.checkpoint) if args.checkpoint else load_pretrained("mnist_unet")
    shape = (args.n, 1, 28, 28)
    with torch.inference_mode():                                   # warm-up: oneDNN picks kernels
        model(torch.zeros(shape), torch.zeros(args.n, dtype=torch.long))
    runs = {
        "ddim_50": time_sampler(lambda g: ddim_sample(model, shape, schedule, steps=50, generator=g,
                                                      progress=False), args.repeats),
        "ancestral_1000": time_sampler(lambda g: ancestral_sample(model, shape, schedule, generator=g,
                                                                  progress=False), args.ancestral_repeats),
    }
    rows = [dict(sampler=name, n=args.n, median_s=statistics.median(t), min_s=min(t), max_s=max(t),
                 repeats=len(t)) for name, t in runs.items()]
    print(table(rows, list(rows[0])))
    write_result("sampling_speed", dict(machine=machine(), threads=args.threads, model=type(model).__name__,
                                        model_config=model.config, parameters=model.num_parameters(),
                                        rows=rows, times=runs))


if __name__ == "__main__":
    main()
