"""Preprocessing benchmark: the 19 real talking clips of ``../shared/media/talking_video`` with 2 worker processes.

``fps`` is 25 fps output frames written per second of wall time for the whole run, worker start-up included (what a user
of ``rhythmhead preprocess --workers 2`` sees); ``peak_mb`` is the larger of this process's peak RSS during the run and
the peak RSS of its biggest child process (one worker: ``ru_maxrss`` of the children). Target: ≥ 50 frames/s on 2 cores.
"""
from __future__ import annotations

import os
import resource
import tempfile
from pathlib import Path

from ..errors import InputError
from .common import measure

WORKERS = 2


def media_dir() -> Path:
    """``$RHYTHMHEAD_MEDIA`` or the ``shared/media`` folder beside the repository."""
    env = os.environ.get("RHYTHMHEAD_MEDIA")
    return Path(env) if env else Path(__file__).resolve().parents[4] / "shared" / "media"


def run(preset: str = "fast", workers: int = WORKERS) -> dict[str, dict]:
    """Preprocess the talking clips into a temporary store → ``{"preprocess": {"fps", "peak_mb", "clips", "workers", ...}}``.

    ``preset`` does not change preprocessing (it has no model sizes); it is accepted for the bench interface.
    """
    from ..data.preprocess_run import preprocess_store

    videos = media_dir() / "talking_video"
    if not videos.is_dir():
        raise InputError("no talking clips to measure on (set RHYTHMHEAD_MEDIA)", videos)
    result = {}
    with tempfile.TemporaryDirectory(prefix="rhythmhead-bench-") as tmp:
        def go():
            result["summary"] = preprocess_store([videos], Path(tmp) / "store", workers=workers, progress=False,
                                                 log=lambda msg: None)

        stats = measure(go, n_items=1)
    summary = result["summary"]
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"preprocess": {
        "fps": round(summary.fps, 2),
        "peak_mb": round(max(stats["peak_mb"], children_mb), 1),
        "clips": summary.ok,
        "failed": summary.failed,
        "frames": summary.frames,
        "seconds": round(summary.seconds, 2),
        "workers": workers,
    }}
