"""What one step of ddpm_helpers.training.train() asks of the device: operators dispatched and host reads.

On a GPU a small U-Net's step is set by how many kernels it launches and how often the host must wait for
the device (every read of a device value back to Python, e.g. `loss.item()` or `if t.max() >= T`), more than
by its arithmetic. This counts both for one training step with a TorchDispatchMode (the difference between
runs of 2 and 1 steps, so setup is not counted) and names the source line of every host read. On the CPU,
AdamW runs with foreach=True as it does by default on CUDA (its per-parameter step counters are host tensors
there, so their reads cost nothing and are not listed); --device cuda counts the real thing.

    python bench/train_dispatch.py [--device cpu] [--channels 32 64 64] [--batch-size 64]
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import traceback
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from common import machine, table, write_result
from ddpm_helpers.models import UNet
from ddpm_helpers.schedules import NoiseSchedule
from ddpm_helpers.training import train

# Operators that only relabel memory (no kernel), and the one that reads a value back to the host.
NO_KERNEL = {"aten.view", "aten._unsafe_view", "aten.t", "aten.transpose", "aten.expand", "aten.detach",
             "aten.alias", "aten.unsqueeze", "aten.squeeze", "aten.reshape", "aten.slice", "aten.select",
             "aten.permute", "aten.as_strided", "aten.lift_fresh"}
HOST_READ = "aten._local_scalar_dense"
SOURCES = ("ddpm_helpers", "torch/optim", "torch/nn/utils")   # swa_utils (AveragedModel) is under torch/optim


class DispatchCounter(TorchDispatchMode):
    """Counts operators by name, and reads of `device_type` values back to the host by the package or torch
    source line that asked for them (on CUDA a read of a host tensor does not wait for the GPU)."""

    def __init__(self, device_type: str):
        super().__init__()
        self.device_type = device_type
        self.ops = collections.Counter()
        self.reads = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        self.ops[name] += 1
        if name == HOST_READ and args[0].device.type == self.device_type:
            frames = [f for f in traceback.extract_stack() if any(s in f.filename for s in SOURCES)]
            where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno} {frames[-1].line}" if frames else "?"
            self.reads[where] += 1
        return func(*args, **(kwargs or {}))


def count(steps: int, channels, batch_size: int, device: str) -> DispatchCounter:
    schedule = NoiseSchedule.linear(T=1000)
    torch.manual_seed(0)
    model = UNet(channels=tuple(channels), prediction="x0", schedule=schedule)
    data = torch.rand(4 * batch_size, 1, 28, 28) * 2 - 1
    with DispatchCounter(torch.device(device).type) as counter:
        train(model, data, schedule, steps=steps, batch_size=batch_size, progress=False, device=device,
              loss_weighting="min_snr", generator=torch.Generator().manual_seed(0))
    return counter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64, 64])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    on_cpu = torch.device(args.device).type == "cpu"
    foreach = mock.patch("torch.optim.AdamW", functools.partial(torch.optim.AdamW, foreach=True))
    with foreach if on_cpu else contextlib.nullcontext():
        one, two = (count(n, args.channels, args.batch_size, args.device) for n in (1, 2))
    ops, reads = two.ops - one.ops, two.reads - one.reads
    # AdamW's per-parameter step counters: host tensors on CUDA, so their reads are only counted on the CPU
    optimizer_reads = {k: v for k, v in reads.items() if "optimizer.py" in k}
    reads = {k: v for k, v in reads.items() if k not in optimizer_reads}
    row = dict(device=args.device, channels=str(tuple(args.channels)), batch=args.batch_size,
               kernel_ops=sum(v for k, v in ops.items() if k not in NO_KERNEL | {HOST_READ}),
               host_reads=sum(reads.values()))
    print(table([row], list(row)))
    for where, n in sorted(reads.items(), key=lambda kv: -kv[1]):
        print(f"  {n} x {where}")
    write_result(f"train_dispatch_{args.device}", dict(machine=machine(), row=row, host_reads=reads,
                                                      optimizer_step_counter_reads=sum(optimizer_reads.values()),
                                                      ops=dict(sorted(ops.items()))))


if __name__ == "__main__":
    main()
