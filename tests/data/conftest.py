"""Fixtures for the data tests: a synthetic store, and small real-face videos made from scikit-image's astronaut."""
from __future__ import annotations

import numpy as np
import pytest

from rhythmhead.data.synthetic import make_synthetic_store


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory):
    """A 4-clip, 2-speaker synthetic ClipStore with audio (30 frames per clip)."""
    return make_synthetic_store(tmp_path_factory.mktemp("store"), n_clips=4, n_frames=30, seed=0)


def _astronaut_frames(n_frames: int, size: int = 256) -> np.ndarray:
    """``(n, size, size, 3)`` frames of the public-domain astronaut portrait (skimage) sliding slowly right and down."""
    import cv2
    from skimage import data

    img = cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    out = []
    for t in range(n_frames):
        m = np.float32([[1, 0, 0.4 * t], [0, 1, 0.2 * t]])
        out.append(cv2.warpAffine(img, m, (size, size), borderMode=cv2.BORDER_REFLECT))
    return np.stack(out)


@pytest.fixture(scope="session")
def face_video(tmp_path_factory):
    """A 1.2 s, 30 fps talking-head stand-in with a 16 kHz tone as audio: the real face path without ../shared."""
    from rhythmhead.media.io import write_video

    path = tmp_path_factory.mktemp("videos") / "astro.mp4"
    rate = 16000
    t = np.arange(int(1.2 * rate)) / rate
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    write_video(path, _astronaut_frames(36), fps=30, audio=audio, sample_rate=rate)
    return path


@pytest.fixture(scope="session")
def astronaut_frames():
    """``make(n_frames, size=256) -> (n, size, size, 3)`` uint8 frames of a real face sliding slowly (skimage astronaut)."""
    return _astronaut_frames
