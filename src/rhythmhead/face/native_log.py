"""MediaPipe's C++ core (absl logging, TFLite) writes start-up lines straight to file descriptor 2, which neither
``GLOG_minloglevel`` nor Python's logging reaches. :func:`quiet_native_stderr` hides them around MediaPipe calls; set
``RHYTHMHEAD_MEDIAPIPE_LOG=1`` to see them."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator


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
