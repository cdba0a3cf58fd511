"""Shared bits of the benchmark scripts: machine description and JSON results."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """What the numbers were measured on (CPU model, cores, torch, threads, load at the start)."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        info = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        cpu = info.get("Model name", "").strip()
        flags = info.get("Flags", "")
    except (OSError, subprocess.SubprocessError):
        cpu, flags = platform.processor(), ""
    return dict(cpu=cpu, logical_cores=os.cpu_count(), avx512="avx512f" in flags,
                torch=str(torch.__version__), torch_threads=torch.get_num_threads(),
                python=platform.python_version(), load_average=os.getloadavg(),
                when=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path


def table(rows: list[dict], columns: list[str]) -> str:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
