"""Head-motion statistics (DESIGN.md §5): how much and how a pose sequence moves, and whether it moves with the speech.

All functions take poses ``(T, 6)`` = rotation vector (rad) + translation (px) as numpy arrays and report rotations in
degrees, translations in pixels of the 256² crop.

* :func:`motion_std` — std over time per dimension (the "diversity" of the motion).
* :func:`mean_change` — ΔP, the mean absolute per-frame change per dimension.
* :func:`velocity_minima` — frames where the head's angular speed has a local minimum (the motion "beats": a head
  movement ends and the next begins).
* :func:`beat_alignment` — the beat-alignment score of AI Choreographer / Bailando adapted to speech: for every audio
  onset, ``exp(−d²/2σ²)`` with d the distance in frames to the nearest motion beat, averaged over the onsets (1 = every
  onset has a motion beat on it, ≈ 0 = none nearby). NaN where either side has no beat.
* :func:`beat_alignment_chance` — the same score with the onsets circularly shifted by every offset, averaged: what
  beats of that density score by chance. The score rewards dense (jittery) motion beats, so the *excess* over chance
  (``beat_align_excess``) is the number to compare between methods.
* :func:`summarise` — the scalar statistics reported by the evaluator.
* :func:`std_ratio`, :func:`change_ratio` — how much a method moves next to the real motion of the same windows,
  generated ÷ real, from pooled statistics (mean over windows of the per-window std or ΔP, averaged over the three
  rotation or translation components, then divided): robust to windows where the real head is nearly still.
* :func:`window_features`, :func:`pose_frechet` — the distribution of short-window motion statistics (per 32-frame
  window: std and mean |Δ| of each of the six components) of a method against the real motion's, as the Fréchet distance
  between Gaussians fitted to the two sets of windows (each feature divided by the real windows' std of that feature,
  so degrees and pixels weigh alike).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy.signal import argrelextrema

DEFAULT_SIGMA = 2.0  # frames (80 ms at 25 fps)
FD_WINDOW = 32  # frames per window of pose_frechet's statistics
FD_HOP = 16


def _check(pose) -> np.ndarray:
    p = np.asarray(pose, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 6:
        raise ValueError(f"poses must be (T, 6), got {p.shape}")
    return p


def to_units(pose) -> np.ndarray:
    """``(T, 6)`` with the rotation converted to degrees (translation stays in px)."""
    p = _check(pose).copy()
    p[:, :3] = np.degrees(p[:, :3])
    return p


def motion_std(pose) -> np.ndarray:
    """``(6,)`` std over time (deg, px)."""
    return to_units(pose).std(0)


def mean_change(pose) -> np.ndarray:
    """``(6,)`` ΔP: mean absolute change between consecutive frames (deg/frame, px/frame); zeros for T < 2."""
    p = to_units(pose)
    return np.abs(np.diff(p, axis=0)).mean(0) if len(p) > 1 else np.zeros(6)


def angular_speed(pose) -> np.ndarray:
    """``(T−1,)`` norm of the per-frame rotation-vector change, in degrees/frame (speed between frames t and t+1)."""
    p = to_units(pose)
    return np.linalg.norm(np.diff(p[:, :3], axis=0), axis=1)


def velocity_minima(pose, min_speed_range: float = 1e-3) -> np.ndarray:
    """Frames at which the angular speed has a strict local minimum (speed index t maps to frame t+1).

    A sequence whose speed varies by less than ``min_speed_range`` deg/frame (a held pose) has no beats.
    """
    speed = angular_speed(pose)
    if len(speed) < 3 or np.ptp(speed) < min_speed_range:
        return np.zeros(0, dtype=np.int64)
    return argrelextrema(speed, np.less)[0].astype(np.int64) + 1


def beat_alignment(motion_beats, audio_beats, sigma: float = DEFAULT_SIGMA) -> float:
    """Mean over audio onsets of ``exp(−d²/2σ²)``, d = frames to the nearest motion beat (NaN if either is empty)."""
    m = np.asarray(motion_beats, dtype=np.float64)
    a = np.asarray(audio_beats, dtype=np.float64)
    if m.size == 0 or a.size == 0:
        return float("nan")
    d = np.abs(a[:, None] - m[None, :]).min(axis=1)
    return float(np.exp(-(d ** 2) / (2 * sigma ** 2)).mean())


def beat_alignment_chance(motion_beats, audio_beats, n_frames: int, sigma: float = DEFAULT_SIGMA) -> float:
    """Mean of :func:`beat_alignment` over the onsets circularly shifted by 1 … n_frames−1 frames (NaN if empty)."""
    m = np.asarray(motion_beats, dtype=np.int64)
    a = np.asarray(audio_beats, dtype=np.int64)
    if m.size == 0 or a.size == 0 or n_frames < 2:
        return float("nan")
    return float(np.mean([beat_alignment(m, (a + s) % n_frames, sigma) for s in range(1, n_frames)]))


def summarise(pose, audio_onsets=None, sigma: float = DEFAULT_SIGMA) -> dict[str, float]:
    """Scalar statistics of one sequence: std and ΔP of rotation (deg) and translation (px), and, given the audio
    onsets (frame indices), the beat alignment, its chance level and the excess over chance."""
    std, change = motion_std(pose), mean_change(pose)
    out = {"std_rot_deg": float(std[:3].mean()), "std_trans_px": float(std[3:].mean()),
           "dP_rot_deg": float(change[:3].mean()), "dP_trans_px": float(change[3:].mean())}
    if audio_onsets is not None:
        beats = velocity_minima(pose)
        out["beat_align"] = beat_alignment(beats, audio_onsets, sigma)
        out["beat_align_chance"] = beat_alignment_chance(beats, audio_onsets, len(pose), sigma)
        out["beat_align_excess"] = out["beat_align"] - out["beat_align_chance"]
    return out


def _pooled_ratio(generated: Sequence, real: Sequence, stat: Callable) -> tuple[float, float]:
    if len(generated) != len(real) or not len(real):
        raise ValueError(f"need the same non-zero number of generated and real windows, got {len(generated)} and "
                         f"{len(real)}")
    g = np.mean([stat(x) for x in generated], axis=0)
    r = np.mean([stat(x) for x in real], axis=0)
    out = []
    for part in (slice(0, 3), slice(3, 6)):
        den = float(r[part].mean())
        out.append(float(g[part].mean()) / den if den > 1e-12 else float("nan"))
    return out[0], out[1]


def std_ratio(generated: Sequence, real: Sequence) -> tuple[float, float]:
    """(rotation, translation) motion-std ratio generated ÷ real over paired windows ``(T_i, 6)``, from pooled
    statistics: the mean over windows of :func:`motion_std`, averaged over the three components, divided. A held pose
    gives 0, a copy of the real motion scaled about any pose by s gives s; NaN where the real motion is still."""
    return _pooled_ratio(generated, real, motion_std)


def change_ratio(generated: Sequence, real: Sequence) -> tuple[float, float]:
    """(rotation, translation) ΔP ratio generated ÷ real, pooled like :func:`std_ratio` (from :func:`mean_change`)."""
    return _pooled_ratio(generated, real, mean_change)


def window_features(pose, length: int = FD_WINDOW, hop: int = FD_HOP) -> np.ndarray:
    """``(n, 12)`` statistics of the windows ``[s, s+length)``, s = 0, hop, …: std (deg, px) of the six components,
    then their mean absolute per-frame change. No row for a sequence shorter than ``length``."""
    p = to_units(pose)
    rows = [np.concatenate([p[s: s + length].std(0), np.abs(np.diff(p[s: s + length], axis=0)).mean(0)])
            for s in range(0, len(p) - length + 1, max(1, hop))]
    return np.asarray(rows, np.float64).reshape(-1, 12)


def pose_frechet(generated: Sequence, real: Sequence, length: int = FD_WINDOW, hop: int = FD_HOP) -> float:
    """Fréchet distance (:func:`rhythmhead.evaluation.metrics.frechet_distance`) between Gaussians fitted to the
    :func:`window_features` of the ``generated`` sequences and those of the ``real`` ones, every feature divided by its
    std over the real windows (a feature constant over them keeps its units). 0 for the same distribution; NaN with
    fewer than two windows on a side."""
    from .metrics import frechet_distance

    g = [window_features(x, length, hop) for x in generated]
    r = [window_features(x, length, hop) for x in real]
    g = np.concatenate(g) if g else np.zeros((0, 12))
    r = np.concatenate(r) if r else np.zeros((0, 12))
    if len(g) < 2 or len(r) < 2:
        return float("nan")
    scale = r.std(0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    return frechet_distance(g / scale, r / scale)
