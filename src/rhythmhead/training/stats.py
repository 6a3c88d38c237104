"""Named scalar statistics: ``report(name, value)`` from anywhere, reduced across ranks once per log tick.

Values are accumulated as (sum, count) on their own device without a host sync; ``collect()`` (called by every rank at
the same step) reduces them over ranks and returns the means. ``StatsWriter`` (rank 0) appends one JSON line per tick to
``RUN/stats.jsonl`` and mirrors the scalars to TensorBoard under ``RUN/tensorboard``.
"""
from __future__ import annotations

import json
import math
import resource
import sys
from pathlib import Path

import torch

from . import distributed

_sums: dict[str, torch.Tensor] = {}
_counts: dict[str, int] = {}


def report(name: str, value: float | torch.Tensor) -> None:
    """Add ``value`` (a number or a tensor: every element counts once) to the running mean of ``name``."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        total, count = value.double().sum(), value.numel()
    else:
        total, count = torch.tensor(float(value), dtype=torch.float64), 1
    if count == 0:
        return
    _sums[name] = _sums[name] + total.to(_sums[name].device) if name in _sums else total
    _counts[name] = _counts.get(name, 0) + count


def reset() -> None:
    """Drop everything reported since the last ``collect()``."""
    _sums.clear()
    _counts.clear()


def collect() -> dict[str, float]:
    """Means of everything reported since the last call, over all ranks (every rank must call it); resets."""
    local = {k: (float(v.item()), _counts[k]) for k, v in _sums.items()}
    reset()
    merged: dict[str, list[float]] = {}
    for part in distributed.all_gather_object(local):
        for name, (total, count) in part.items():
            acc = merged.setdefault(name, [0.0, 0])
            acc[0] += total
            acc[1] += count
    return {name: total / count for name, (total, count) in sorted(merged.items())}


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (``resource.getrusage``: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def peak_gpu_mb(device: torch.device) -> float | None:
    """Peak CUDA memory allocated by torch on ``device`` in MiB, or None off CUDA."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / (1 << 20)


class StatsWriter:
    """Rank 0's sink for ticks: ``RUN/stats.jsonl`` (one JSON object per line) + TensorBoard scalars."""

    def __init__(self, run_dir: str | Path, filename: str = "stats.jsonl", tensorboard: bool = True):
        self.path = Path(run_dir) / filename
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tb_dir = Path(run_dir) / "tensorboard" if tensorboard else None
        self._tb = None

    def write(self, step: int, values: dict[str, float]) -> None:
        line = {"step": step, **{k: (v if isinstance(v, (int, str)) or math.isfinite(v) else str(v))
                                 for k, v in values.items() if v is not None}}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
        if self._tb_dir is not None:
            if self._tb is None:
                from torch.utils.tensorboard import SummaryWriter  # imported lazily: it is slow to import
                self._tb = SummaryWriter(str(self._tb_dir))
            for name, value in values.items():
                if isinstance(value, (int, float)) and name != "step":
                    self._tb.add_scalar(name, value, global_step=step)
            self._tb.flush()

    def truncate_after(self, step: int) -> None:
        """Drop lines with a step beyond ``step`` (left by an interrupted run that is now resumed from ``step``)."""
        if not self.path.is_file():
            return
        lines = self.path.read_text().splitlines()
        kept = [ln for ln in lines if (s := _line_step(ln)) is not None and s <= step]
        self.path.write_text("".join(ln + "\n" for ln in kept))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _line_step(line: str) -> int | None:
    """The ``step`` of one JSON line, or None for a blank or torn line (a run killed mid-write)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None
