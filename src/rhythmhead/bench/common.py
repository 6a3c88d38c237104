"""Timing and memory measurement shared by the stage benchmarks (``rhythmhead bench``).

Peak memory is the process's resident-set high-water mark, read from ``/proc/self/status`` (``VmHWM``) after resetting
it through ``/proc/self/clear_refs`` (Linux ≥ 4.0), so it covers the measured call only, including torch's native
allocations that tracemalloc cannot see. Where that reset is not possible the value is ``resource.getrusage``'s
``ru_maxrss`` (the peak over the whole process so far) and ``peak_source`` says so. On CUDA ``peak_gpu_mb`` is torch's
``max_memory_allocated`` over the call.
"""
from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _reset_peak_rss() -> bool:
    try:
        _CLEAR.write_text("5")  # 5 = reset the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


def _vm_hwm_mb() -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB → MiB
    except OSError:
        return None
    return None


def _ru_maxrss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def measure(fn: Callable[[], Any], n_items: int, warmup: int = 0, device: str | torch.device | None = None
            ) -> dict[str, Any]:
    """Run ``fn()`` (which processes ``n_items`` items: frames, steps, ...) once after ``warmup`` untimed calls.

    Returns ``{"fps": items per second, "peak_mb": peak RSS in MiB during the call, "seconds", "items",
    "peak_source"}`` plus ``"peak_gpu_mb"`` when ``device`` is CUDA.
    """
    cuda = device is not None and torch.device(device).type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    exact = _reset_peak_rss() and _vm_hwm_mb() is not None
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = _vm_hwm_mb() if exact else _ru_maxrss_mb()
    out = {"fps": n_items / seconds if seconds > 0 else float("inf"), "peak_mb": round(peak, 1),
           "seconds": round(seconds, 4), "items": n_items,
           "peak_source": "VmHWM (reset before the call)" if exact else "ru_maxrss (process lifetime)"}
    if cuda:
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / (1 << 20), 1)
    return out
