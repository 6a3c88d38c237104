"""MediaPipe's C++ core (absl logging, TFLite) writes start-up lines straight to file descriptor 2, which neither
``GLOG_minloglevel`` nor Python's logging reaches. :func:`quiet_native_stderr` hides them around MediaPipe calls; set
``RHYTHMHEAD_MEDIAPIPE_LOG=1`` to see them.

Most of those lines (``inference_feedback_manager.cc … Feedback manager requires a model with a single signature``,
``All log messages before absl::InitializeLog()``, TFLite's delegate lines) are printed while the graph opens its
calculators. A MediaPipe solution's constructor only *starts* the graph (``start_run`` returns at once) and the
calculators open on MediaPipe's own threads a moment later, after a block around the constructor has already given
fd 2 back. :func:`start_quietly` therefore keeps fd 2 silenced until the new graph is idle (every calculator open).
Each ``process`` call waits for its graph to go idle as well, so a block around it covers everything it prints.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the duration of the block (Python exceptions still propagate)."""
    if os.environ.get("RHYTHMHEAD_MEDIAPIPE_LOG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_quietly(make: Callable[[], T]) -> T:
    """``make()`` a MediaPipe solution (e.g. ``FaceMesh(...)``) and wait, fd 2 silenced, until its graph has opened."""
    with quiet_native_stderr():
        solution = make()
        graph = getattr(solution, "_graph", None)  # mediapipe.python.solution_base.SolutionBase's graph
        if graph is not None:
            graph.wait_until_idle()
    return solution
