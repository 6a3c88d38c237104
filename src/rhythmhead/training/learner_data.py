"""Datasets of the two learners Φ (head motion) and Ψ (expression), read from a clip store.

The store is small (tens of clips), so every clip's audio windows and track are loaded once and kept in memory
(:func:`load_clip` is cached per process). Clips without audio are skipped. Splits are speaker-disjoint
(:func:`rhythmhead.data.store.speaker_split`, or one fold of :func:`rhythmhead.data.store.speaker_folds` held out).

Φ (:class:`MotionWindows`): one item = a window of one clip: τ reference frames + T−τ frames to predict, as audio windows
``(T, 7, S)`` and normalised, 11-tap-Hanning-smoothed poses ``(T, 6)`` (REFERENCE.md §2.1, §2.4). Training windows draw
τ ~ U{32..96} and T−τ ~ U{16..96} per item (shrunk proportionally to fit a short clip) at a random start;
:meth:`MotionWindows.collate` crops a batch to the smallest τ (keeping the frames next to the boundary) and the smallest
T−τ. Validation windows are fixed: τ = 64 and T−τ = 64 (fewer where the clip is shorter; see :func:`eval_windows`).

Ψ (:class:`ExpressionFrames`): one item = one frame: its audio window flattened to ``(7·S,)`` (random gain from
{−12, −9, …, +6} dB in training, REFERENCE.md §3), the clip's reference code (the closed-mouth frame) and the target code
of the frame (frontal landmarks smoothed with a 5-tap Hanning window, identity offset removed).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..audio.windows import frame_windows, samples_per_frame
from ..common import smooth
from ..data.pca import ExpressionPCA
from ..data.store import ClipStore, fold_split, speaker_split
from ..errors import InputError


# -- clips ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LearnerClip:
    """One clip's data for the learners (all arrays float32, T frames).

    Attributes:
        clip_id, speaker: from the manifest.
        wave: ``(N,)`` mono audio at ``audio_rate``.
        audio_rate: Hz.
        windows: ``(T, 7, S)`` per-frame audio windows.
        pose: ``(T, 6)`` tracked pose (rotation vector rad + translation px), unsmoothed.
        frontal: ``(T, 68, 3)`` frontalised landmarks (crop px).
        landmarks: ``(T, 68, 3)`` tracked landmarks in the crop (px).
    """

    clip_id: str
    speaker: str
    wave: np.ndarray
    audio_rate: int
    windows: np.ndarray
    pose: np.ndarray
    frontal: np.ndarray
    landmarks: np.ndarray

    @property
    def n_frames(self) -> int:
        return int(self.pose.shape[0])


@functools.lru_cache(maxsize=256)
def _load_clip_cached(root: str, clip_id: str, audio_rate: int, fps: float) -> LearnerClip | None:
    store = ClipStore(root)
    record = store.record(clip_id)
    wave = store.audio(clip_id, rate=audio_rate)
    if wave is None or wave.size == 0:
        return None
    track = store.track(clip_id)
    n = track["pose"].shape[0]
    windows = frame_windows(np.asarray(wave, dtype=np.float32), n, samples_per_frame(audio_rate, fps))
    return LearnerClip(clip_id=clip_id, speaker=record["speaker"], wave=np.asarray(wave, dtype=np.float32),
                       audio_rate=audio_rate, windows=windows, pose=track["pose"], frontal=track["frontal"],
                       landmarks=track["landmarks"])


def load_clip(root: str | Path, clip_id: str, audio_rate: int = 16000, fps: float = 25) -> LearnerClip | None:
    """One clip's :class:`LearnerClip` (cached per process), or None when the clip has no audio."""
    return _load_clip_cached(str(Path(root).resolve()), clip_id, int(audio_rate), float(fps))


def split_ids(root: str | Path, val_fraction: float = 0.2, seed: int = 0, folds: int = 0,
              fold: int = 0) -> tuple[list[str], list[str]]:
    """Speaker-disjoint (train ids, val ids) of a store, from its manifest.

    ``folds`` = 0: the ``val_fraction`` split (:func:`~rhythmhead.data.store.speaker_split`). ``folds`` = K ≥ 2: fold
    ``fold`` of :func:`~rhythmhead.data.store.speaker_folds` (seed ``seed``) is the val side, the other folds train.
    """
    records = ClipStore(root).manifest()
    if folds:
        return fold_split(records, folds, fold, seed)
    return speaker_split(records, val_fraction=val_fraction, seed=seed)


def config_split(root: str | Path, data_cfg) -> tuple[list[str], list[str]]:
    """:func:`split_ids` from a learner's data config (dataclass or dict: ``val_fraction``, ``split_seed`` and the
    optional ``folds``/``fold``; configs without them, e.g. older exports, use the ``val_fraction`` split)."""
    get = data_cfg.get if isinstance(data_cfg, dict) else lambda k, d=None: getattr(data_cfg, k, d)
    folds, fold = int(get("folds", 0) or 0), int(get("fold", 0) or 0)
    if fold and not folds:
        raise InputError(f"data.fold = {fold} needs data.folds (the number of folds)")
    return split_ids(root, get("val_fraction", 0.2), get("split_seed", 0), folds, fold)


def load_clips(root: str | Path, ids: Sequence[str], audio_rate: int = 16000, fps: float = 25) -> list[LearnerClip]:
    """The clips of ``ids`` that have audio, in order."""
    clips = [load_clip(root, i, audio_rate, fps) for i in ids]
    return [c for c in clips if c is not None]


def require_clips(clips: list[LearnerClip], root: str | Path, split: str) -> list[LearnerClip]:
    """InputError naming the store when a split has no usable clip."""
    if not clips:
        raise InputError(f"no {split} clips with audio in this store (need speech clips on both sides of the "
                         "speaker split)", root)
    return clips


# -- Φ ----------------------------------------------------------------------------------------------------------------
def pose_statistics(clips: Sequence[LearnerClip], smooth_taps: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std ``(6,)`` of the smoothed poses of all frames of ``clips`` (std floored at 1e-4)."""
    poses = np.concatenate([smooth(c.pose, smooth_taps) for c in clips]).astype(np.float64)
    return poses.mean(0).astype(np.float32), np.maximum(poses.std(0), 1e-4).astype(np.float32)


def eval_windows(n_frames: int, tau: int = 64, pred: int = 64, min_pred: int = 8) -> list[tuple[int, int, int]]:
    """Fixed evaluation windows ``(start, τ, T−τ)`` of a clip.

    The first window starts at frame 0 with τ = ``tau`` frames of reference and T−τ = ``pred`` predicted frames; a clip
    shorter than ``tau + pred`` keeps at least ``min_pred`` (or half its frames) to predict and gives the rest to the
    reference. Longer clips give further, non-overlapping full windows (start 128, 256, …).
    """
    if n_frames < 2:
        return []
    if n_frames < tau + pred:
        p = min(pred, max(min_pred, n_frames // 2), n_frames - 1)
        t = min(tau, n_frames - p)
        return [(0, t, min(pred, n_frames - t))]
    return [(s, tau, pred) for s in range(0, n_frames - tau - pred + 1, tau + pred)]


class MotionWindows(torch.utils.data.Dataset):
    """Φ windows (see the module docstring).

    Args:
        clips: the split's clips.
        pose_mean, pose_std: ``(6,)`` normalisation statistics (from the training clips).
        train: random windows (True) or the fixed evaluation windows (False).
        tau_range, pred_range: inclusive ranges of τ and T−τ in training.
        val_tau, val_pred: τ and T−τ of the evaluation windows.
        smooth_taps: Hanning taps of the pose smoothing (11 in the paper).
        frames_per_item: in training a clip appears once per this many of its frames (at least once), so long clips are
            sampled more often.
    """

    def __init__(self, clips: Sequence[LearnerClip], pose_mean: np.ndarray, pose_std: np.ndarray, train: bool,
                 tau_range: tuple[int, int] = (32, 96), pred_range: tuple[int, int] = (16, 96), val_tau: int = 64,
                 val_pred: int = 64, smooth_taps: int = 11, frames_per_item: int = 64):
        self.clips = list(clips)
        self.train = train
        self.tau_range, self.pred_range = tuple(tau_range), tuple(pred_range)
        mean, std = np.asarray(pose_mean, np.float32), np.asarray(pose_std, np.float32)
        self.poses = [(smooth(c.pose, smooth_taps) - mean) / std for c in self.clips]
        if train:
            self.index = [(i, 0, 0, 0) for i, c in enumerate(self.clips)
                          for _ in range(max(1, c.n_frames // frames_per_item)) if c.n_frames >= 2]
        else:
            self.index = [(i, s, t, p) for i, c in enumerate(self.clips)
                          for s, t, p in eval_windows(c.n_frames, val_tau, val_pred)]

    def __len__(self) -> int:
        return len(self.index)

    def _random_window(self, n_frames: int) -> tuple[int, int, int]:
        tau = int(torch.randint(self.tau_range[0], self.tau_range[1] + 1, ()))
        pred = int(torch.randint(self.pred_range[0], self.pred_range[1] + 1, ()))
        if tau + pred > n_frames:  # shrink both proportionally to fit the clip
            tau = min(max(1, round(tau * n_frames / (tau + pred))), n_frames - 1)
            pred = n_frames - tau
        start = int(torch.randint(0, n_frames - tau - pred + 1, ()))
        return start, tau, pred

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ci, start, tau, pred = self.index[i]
        clip = self.clips[ci]
        if self.train:
            start, tau, pred = self._random_window(clip.n_frames)
        sl = slice(start, start + tau + pred)
        return {"audio": torch.from_numpy(clip.windows[sl]), "pose": torch.from_numpy(self.poses[ci][sl]),
                "tau": torch.tensor(tau)}

    @staticmethod
    def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Crop every item to the batch's smallest τ (last frames of the reference) and smallest T−τ (first frames)."""
        taus = [int(it["tau"]) for it in items]
        preds = [it["pose"].shape[0] - t for it, t in zip(items, taus)]
        tau, pred = min(taus), min(preds)
        crop = [slice(t - tau, t + pred) for t in taus]
        return {"audio": torch.stack([it["audio"][c] for it, c in zip(items, crop)]),
                "pose": torch.stack([it["pose"][c] for it, c in zip(items, crop)]),
                "tau": torch.tensor(tau)}


# -- Ψ ----------------------------------------------------------------------------------------------------------------
GAINS_DB = (-12.0, -9.0, -6.0, -3.0, 0.0, 3.0, 6.0)


def expression_targets(clip: LearnerClip, pca: ExpressionPCA, smooth_taps: int = 5,
                       reference_keeps_identity: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame target codes ``(T, n)`` and the reference code ``(n,)`` of one clip.

    The targets are the codes of the smoothed frontal landmarks with the clip's identity offset removed. The reference is
    the code of the closed-mouth frame; with ``reference_keeps_identity`` it is encoded with a zero offset, so it carries
    the speaker's face shape (removing the offset would turn it into the template's code for every clip).
    """
    frontal = smooth(clip.frontal, smooth_taps)
    offset = pca.identity_offset(clip.frontal)
    codes = pca.encode(frontal, offset).astype(np.float32)
    return codes, pca.reference_code(clip.frontal, keep_identity=reference_keeps_identity).astype(np.float32)


class ExpressionFrames(torch.utils.data.Dataset):
    """Ψ frames (see the module docstring).

    Args:
        clips: the split's clips.
        pca: the fitted expression PCA.
        train: random gain augmentation (True) or none (False).
        smooth_taps: Hanning taps of the landmark smoothing (5 in the paper).
        gains_db: gains drawn uniformly in training.
        reference_keeps_identity: see :func:`expression_targets`.
    """

    def __init__(self, clips: Sequence[LearnerClip], pca: ExpressionPCA, train: bool, smooth_taps: int = 5,
                 gains_db: Sequence[float] = GAINS_DB, reference_keeps_identity: bool = True):
        self.clips = list(clips)
        self.train = train
        self.gains = torch.tensor([10.0 ** (g / 20.0) for g in gains_db], dtype=torch.float32)
        targets = [expression_targets(c, pca, smooth_taps, reference_keeps_identity) for c in self.clips]
        self.codes = [torch.from_numpy(t[0]) for t in targets]
        self.ref_codes = [torch.from_numpy(t[1]) for t in targets]
        self.index = [(i, t) for i, c in enumerate(self.clips) for t in range(c.n_frames)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ci, t = self.index[i]
        audio = torch.from_numpy(self.clips[ci].windows[t].reshape(-1))
        if self.train and len(self.gains):
            audio = audio * self.gains[int(torch.randint(0, len(self.gains), ()))]
        return {"audio": audio, "ref_code": self.ref_codes[ci], "code": self.codes[ci][t]}
