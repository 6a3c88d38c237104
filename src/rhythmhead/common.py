"""Constants and small helpers that data, training, evaluation and inference share: each is defined here once.

* :data:`CROP` — side of the reference and store crops; every landmark and pose pixel unit is one of this crop.
* :data:`FPS` — the frame rate of stores, training windows and output videos.
* :data:`VIDEO_SUFFIXES`, :data:`IMAGE_SUFFIXES` — file name endings read as videos / still images.
* :func:`warp_crop` — how a crop reaches G's image size, the same in training and at inference.
* :func:`atomic_path` — how every output file of the project is written (a temporary file renamed into place);
  :func:`sweep_stale` removes what a killed writer left.
* :func:`smooth` — the temporal smoothing of poses, landmarks and codes, the same in training and at inference (the
  paper's Hanning windows: 11 taps for Φ's poses, 5 for Ψ's landmarks).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError

__all__ = ["CROP", "FPS", "VIDEO_SUFFIXES", "IMAGE_SUFFIXES", "hann_taps", "smooth", "index_affine", "warp_crop",
           "atomic_path"]

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


def index_affine(affine: np.ndarray) -> np.ndarray:
    """A ``(2, 3)`` affine on continuous pixel coordinates (centres at i + 0.5) as OpenCV's integer-index affine."""
    a, b = affine[:, :2], affine[:, 2]
    return np.concatenate([a, (b + a @ np.array([0.5, 0.5]) - 0.5)[:, None]], 1)


def warp_crop(image: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    """``image (H, W, C)`` through the continuous-coordinate ``affine (2, 3)`` into a ``size``² image, bilinear with
    reflected edges: how a crop reaches G's image size, in training (with its augmentation's affine) and at inference
    (a plain resize), so that G reads the same pixels in both."""
    import cv2

    return cv2.warpAffine(np.ascontiguousarray(image), index_affine(np.asarray(affine, np.float64)), (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def sweep_stale(folder: Path, name: str, suffix: str = "") -> None:
    """Remove the temporary files and folders of ``name`` that a killed process left in ``folder``: those of
    :func:`atomic_path` and :func:`staged_name` whose process id is no longer running."""
    import re
    import shutil

    pattern = re.compile(rf"^\.{re.escape(name)}\.(\d+)\..*tmp{re.escape(suffix)}$")
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def staged_name(dest: Path) -> Path:
    """The hidden temporary name beside ``dest`` of a folder being written by this process (swept by
    :func:`sweep_stale` once the process is gone)."""
    return dest.parent / f".{dest.name}.{os.getpid()}.tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Write a file atomically: yields a temporary path in the same folder with the same suffix.

    On a clean exit the temporary file replaces ``path`` (``os.replace``, atomic on one file system); on an exception it is
    removed and ``path`` is left untouched. The parent folder is created if needed. The temporary name is hidden and
    carries the process id (``.<name>.<pid>.<random>.tmp<suffix>``): an interrupted process (SIGKILL) leaves no file
    under the final name, and the next write of the same name removes what a dead process left (:func:`sweep_stale`).

    Raises:
        InputError: ``path`` is a directory, or its folder cannot be created or written.
    """
    dest = Path(path)
    if dest.is_dir():
        raise InputError("is a directory, expected an output file name", dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(dest.parent, dest.name, dest.suffix)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.{os.getpid()}.",
                                        suffix=f".tmp{dest.suffix}")
    except OSError as exc:
        raise InputError(f"cannot write here ({exc.strerror or exc})", dest) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes the file private; give it the permissions of a normal file
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
