"""MediaPipe's native log lines (absl, TFLite) never reach stderr; Python's own messages and tracebacks always do.

The lines used to escape because a MediaPipe solution's constructor only starts its graph: the calculators open (and
log) on MediaPipe's threads after the quiet block around the constructor had ended. The script below builds every face
model the package uses, resets the tracker (a new graph per clip, as preprocessing does), runs them on a real face,
then writes a message of its own and dies with a traceback. It runs in a subprocess, since the lines go to fd 2.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

NATIVE = re.compile(r"^[WIEF]\d{4} |inference_feedback_manager|TensorFlow Lite|absl::InitializeLog", re.M)

SCRIPT = """
import sys
import cv2
from skimage import data
from rhythmhead.face.detect import FaceDetector
from rhythmhead.face.landmarks import FaceMesher
from rhythmhead.face.track import FaceTracker

rgb = cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)  # a real face (public domain)
tracker = FaceTracker()
tracker.reset()
tracker.reset()
assert tracker(rgb) is not None
assert FaceMesher(static_image_mode=True)(rgb) is not None  # never closed: destroyed at exit
with FaceDetector() as det:
    assert det(rgb)
tracker.close()
print("error: our own message", file=sys.stderr, flush=True)
raise RuntimeError("boom")
"""


def _run(**env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


@pytest.mark.slow  # two interpreters that load MediaPipe (~5 s)
def test_no_native_lines_but_python_errors_show():
    proc = _run(RHYTHMHEAD_MEDIAPIPE_LOG="")
    assert proc.returncode == 1, proc.stderr
    assert not NATIVE.search(proc.stderr), proc.stderr
    assert "error: our own message" in proc.stderr
    assert "Traceback" in proc.stderr and "RuntimeError: boom" in proc.stderr
    # the check can see the lines: with RHYTHMHEAD_MEDIAPIPE_LOG=1 MediaPipe speaks as before
    loud = _run(RHYTHMHEAD_MEDIAPIPE_LOG="1")
    assert loud.returncode == 1 and NATIVE.search(loud.stderr), loud.stderr
