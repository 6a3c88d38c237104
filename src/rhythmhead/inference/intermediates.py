"""``--save-intermediates DIR``: what the pipeline computed on the way to the frames, for looking and debugging.

Files (each written atomically):

* ``poses.npy`` ``(T, 6)`` rotation vector (rad) + translation (crop px); ``landmarks.npy`` ``(T, 68, 3)`` posed
  landmarks (crop px); ``frontal.npy`` ``(T, 68, 3)``; ``codes.npy`` ``(T, n)`` expression PCA codes (when Ψ ran);
  ``envelope.npy`` ``(T,)`` speech RMS per frame; ``blinks.npy`` ``(T,)`` eye closure.
* ``renders.mp4`` — the 3-D-aware renders as G reads them (at G's size, 128² for ``fast``), streamed while the
  frames are made; ``render_XXXXX.png`` — a few of them.
* ``pose_curves.png`` — the six pose channels over time (degrees / pixels);
  ``mouth_vs_speech.png`` — mouth opening (inner-lip gap of the frontal landmarks) against the speech envelope, with
  their correlation in the title; ``info.json`` — settings and stage timings.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np

from ..common import staged_name, sweep_stale

N_PNG = 4  # render PNGs


@contextlib.contextmanager
def staged_dir(out_dir: str | Path) -> Iterator[Path]:
    """A hidden temporary folder beside ``out_dir`` whose files move into ``out_dir`` only on success (no partial
    output on failure: the temporary folder is removed)."""
    dest = Path(out_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(dest.parent, dest.name)
    tmp = staged_name(dest)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        dest.mkdir(exist_ok=True)
        for item in tmp.iterdir():
            os.replace(item, dest / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save_npy(path: Path, array: np.ndarray) -> None:
    from ..media.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array))


def _save_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    from ..media.io import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def plot_pose_curves(path: Path, poses: np.ndarray, fps: float = 25.0) -> None:
    """Six pose channels against time: rotations in degrees (left), translations in crop pixels (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..media.io import atomic_path

    t = np.arange(len(poses)) / fps
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), constrained_layout=True)
    for i, name in enumerate(("pitch (x)", "yaw (y)", "roll (z)")):
        axes[0].plot(t, np.degrees(poses[:, i]), label=name, lw=1)
    for i, name in enumerate(("x", "y", "z")):
        axes[1].plot(t, poses[:, 3 + i], label=name, lw=1)
    axes[0].set(title="head rotation", xlabel="time (s)", ylabel="degrees")
    axes[1].set(title="head translation", xlabel="time (s)", ylabel="crop pixels")
    for ax in axes:
        ax.legend(fontsize=8, loc="upper right")
        ax.grid(alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def mouth_correlation(frontal: np.ndarray, env: np.ndarray) -> float:
    """Pearson correlation of mouth opening with the speech envelope (NaN for a constant series)."""
    from ..data.pca import open_rate

    mouth = np.asarray(open_rate(frontal), np.float64)
    if len(mouth) < 3 or np.ptp(mouth) < 1e-6 or np.ptp(env) < 1e-9:
        return float("nan")
    return float(np.corrcoef(mouth, env)[0, 1])


def plot_mouth_vs_speech(path: Path, frontal: np.ndarray, env: np.ndarray, fps: float = 25.0) -> float:
    """Mouth opening and speech envelope on twin axes; returns their correlation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..data.pca import open_rate
    from ..media.io import atomic_path

    t = np.arange(len(env)) / fps
    corr = mouth_correlation(frontal, env)
    fig, ax = plt.subplots(figsize=(11, 3.2), constrained_layout=True)
    ax.plot(t, open_rate(frontal), color="tab:red", lw=1, label="mouth opening")
    ax.set(xlabel="time (s)", ylabel="inner-lip gap (px)", title=f"mouth opening vs speech (r = {corr:.2f})")
    ax2 = ax.twinx()
    ax2.fill_between(t, env, color="tab:blue", alpha=0.25, step="mid", label="speech RMS")
    ax2.set_ylabel("speech RMS")
    ax.grid(alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return corr


class IntermediatesWriter:
    """Writes the files of the module docstring into ``out_dir``: :meth:`begin` (arrays and plots), :meth:`add_renders`
    per chunk (inside a ``with`` block, which owns the renders video), then the ``with`` exit writes ``info.json``."""

    def __init__(self, out_dir: str | Path, n_frames: int, fps: float = 25.0):
        self.dir = Path(out_dir)
        self.n_frames, self.fps = n_frames, fps
        self._video = None
        self._done = 0
        self._png_at = set(np.linspace(0, max(n_frames - 1, 0), min(N_PNG, n_frames)).astype(int).tolist())
        self.info: dict = {}

    def begin(self, plan, env: np.ndarray, info: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _save_npy(self.dir / "poses.npy", plan.poses.astype(np.float32))
        _save_npy(self.dir / "landmarks.npy", plan.landmarks.astype(np.float32))
        _save_npy(self.dir / "frontal.npy", plan.frontal.astype(np.float32))
        _save_npy(self.dir / "envelope.npy", env.astype(np.float32))
        _save_npy(self.dir / "blinks.npy", plan.closure.astype(np.float32))
        if plan.codes is not None:
            _save_npy(self.dir / "codes.npy", plan.codes.astype(np.float32))
        plot_pose_curves(self.dir / "pose_curves.png", plan.poses, self.fps)
        corr = plot_mouth_vs_speech(self.dir / "mouth_vs_speech.png", plan.frontal, env, self.fps)
        self.info = {**info, "mouth_speech_corr": corr}

    def __enter__(self) -> "IntermediatesWriter":
        from ..media.io import VideoWriter

        self.dir.mkdir(parents=True, exist_ok=True)
        self._video = VideoWriter(self.dir / "renders.mp4", fps=self.fps, preset="veryfast").__enter__()
        return self

    def add_renders(self, renders: np.ndarray) -> None:
        for r in renders:
            if self._done in self._png_at:
                _save_png(self.dir / f"render_{self._done:05d}.png", r)
            self._video.write(np.ascontiguousarray(r))
            self._done += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        from ..media.io import atomic_path

        video, self._video = self._video, None
        if video is not None:
            if self._done == 0 and exc_type is None:
                video.__exit__(RuntimeError, RuntimeError("no renders"), None)  # nothing to write: drop the file
            else:
                video.__exit__(exc_type, exc, tb)
        if exc_type is None:
            with atomic_path(self.dir / "info.json") as tmp:
                tmp.write_text(json.dumps(self.info, indent=2, default=str) + "\n")
        return False
