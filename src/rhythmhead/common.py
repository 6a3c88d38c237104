"""Constants and small helpers that data, training, evaluation and inference share: each is defined here once.

* :data:`CROP` — side of the reference and store crops; every landmark and pose pixel unit is one of this crop.
* :data:`FPS` — the frame rate of stores, training windows and output videos.
* :data:`VIDEO_SUFFIXES`, :data:`IMAGE_SUFFIXES` — file name endings read as videos / still images.
* :func:`smooth` — the temporal smoothing of poses, landmarks and codes, the same in training and at inference (the
  paper's Hanning windows: 11 taps for Φ's poses, 5 for Ψ's landmarks).
"""
from __future__ import annotations

import numpy as np

__all__ = ["CROP", "FPS", "VIDEO_SUFFIXES", "IMAGE_SUFFIXES", "hann_taps", "smooth"]

CROP = 256
FPS = 25
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})


def hann_taps(taps: int) -> np.ndarray:
    """A normalised Hanning window with ``taps`` non-zero taps (numpy's ``hanning(n)`` has zero end taps)."""
    w = np.hanning(taps + 2)[1:-1]
    return w / w.sum()


def smooth(x: np.ndarray, taps: int) -> np.ndarray:
    """``x (T, …)`` smoothed along time (axis 0) with a ``taps``-tap Hanning window centred on each frame (edges: the
    nearest value). ``taps`` ≤ 1 returns ``x`` as it is; an even count > 1 has no centre and is refused. A float
    array keeps its dtype, anything else comes back float32 (computed in float64)."""
    taps = int(taps)
    if taps <= 1 or len(x) < 2:
        return x
    if taps % 2 == 0:
        raise ValueError(f"smoothing needs an odd number of taps (a window centred on the frame), got {taps}")
    from scipy.ndimage import convolve1d

    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    return convolve1d(x.astype(np.float64), hann_taps(taps), axis=0, mode="nearest").astype(dtype)
