"""Training throughput of the U-Net (images/s) and the share of the CPU's peak FLOP rate it reaches.

FLOPs of one training step (forward + backward) are counted by torch.utils.flop_counter on the
real step; the peak is both (a) the nominal rate, cores x FLOP/cycle x clock, with the FLOP/cycle
and clock given on the command line (defaults: AMD Zen 5, two 512-bit FMA pipes = 64 FP32
FLOP/cycle, 2.6 GHz, the TSC rate lscpu reports) and (b) a measured float32 matmul (4096^2),
the best this CPU does in practice.

    python bench/train_throughput.py [--threads 2] [--channels 32 64 64] [--batch-size 128]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import machine, table, write_result
from ddpm_helpers.diffusion import loss_simple
from ddpm_helpers.models import UNet
from ddpm_helpers.schedules import NoiseSchedule


def matmul_peak(repeats: int = 5, size: int = 4096) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times)


def step_flops_and_times(channels, batch_size: int, steps: int) -> tuple[float, list[float]]:
    torch.manual_seed(0)
    model, schedule = UNet(channels=tuple(channels)), NoiseSchedule.linear(T=1000)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x0 = torch.rand(batch_size, 1, 28, 28) * 2 - 1

    def step():
        loss = loss_simple(model, x0, schedule)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return counter.get_total_flops(), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64, 64])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--flop-per-cycle", type=float, default=64.0, help="FP32 FLOP per cycle per core")
    parser.add_argument("--ghz", type=float, default=2.6)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    flops, times = step_flops_and_times(args.channels, args.batch_size, args.steps)
    median = statistics.median(times)
    nominal = args.threads * args.flop_per_cycle * args.ghz * 1e9
    measured_peak = matmul_peak()
    row = dict(channels=str(tuple(args.channels)), batch=args.batch_size, step_s=median,
               images_per_s=args.batch_size / median, gflop_per_step=flops / 1e9,
               gflop_per_s=flops / median / 1e9, share_of_nominal=flops / median / nominal,
               matmul_gflop_per_s=measured_peak / 1e9, share_of_matmul=flops / median / measured_peak)
    print(table([row], list(row)))
    write_result(f"train_throughput_{'_'.join(map(str, args.channels))}_t{args.threads}",
                 dict(machine=machine(), threads=args.threads, nominal_peak_gflop_per_s=nominal / 1e9,
                      peak_assumption=f"{args.threads} cores x {args.flop_per_cycle} FLOP/cycle x {args.ghz} GHz",
                      row=row, step_times=times))


if __name__ == "__main__":
    main()
