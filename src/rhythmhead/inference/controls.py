"""Pure functions that shape the predicted motion before rendering: the user's controls.

Every function takes and returns arrays with time first (T frames at 25 fps) and has no state; the pipeline composes them.
Pose arrays are ``(T,6)`` = rotation vector (rad) + translation (px) in the paper's convention; landmarks are ``(T,68,3)``
frontal (canonical) coordinates in crop pixels.
"""
from __future__ import annotations

import numpy as np

from ..common import smooth  # the one temporal smoothing, shared with training

# iBUG-68 eyelids: upper lid points and the lower lid points they close onto (right eye 36-41, left eye 42-47).
_UPPER_LID = np.array([37, 38, 43, 44])
_LOWER_LID = np.array([41, 40, 47, 46])


def scale_motion(pose: np.ndarray, anchor: np.ndarray, scale: float) -> np.ndarray:
    """Amplitude control: ``anchor + scale·(pose − anchor)``. scale 0 holds the anchor pose, 1 leaves the motion as is."""
    return anchor[None] + float(scale) * (pose - anchor[None])


def hold_pose(anchor: np.ndarray, n_frames: int) -> np.ndarray:
    """``--still``: the anchor pose ``(6,)`` repeated → ``(T,6)``."""
    return np.repeat(np.asarray(anchor, np.float32)[None], n_frames, axis=0)


def fit_length(track: np.ndarray, n_frames: int) -> np.ndarray:
    """A driving track (pose or landmarks, time first) cut or extended to ``n_frames``, extended by mirroring back and
    forth so there is no jump (ping-pong), as a user expects from a short driving clip under long audio."""
    if len(track) == 0:
        raise ValueError("empty driving track")
    if len(track) >= n_frames:
        return track[:n_frames]
    period = np.concatenate([track, track[-2:0:-1]]) if len(track) > 2 else track
    reps = int(np.ceil(n_frames / len(period)))
    return np.concatenate([period] * reps)[:n_frames]


# How inference shapes Φ's raw poses (shape_motion). Measured by `rhythmhead evaluate motion --folds 5` on the 62-clip
# store (fast Φ, adv 0.5), model_smoothed row, std ratio / ΔP ratio / beat alignment (replay 0.45) / rotation L1:
#   Φ's 11 training taps, no matching: 0.15 / 0.27 / 0.57 / 3.79°;  11 taps, gain ≤ 8: 0.64 / 1.15 / 0.56 / 4.00°;
#   11 taps, gain ≤ 20: 0.90 / 1.65 / 0.57 / 4.19°;  15 taps, ≤ 20: 0.88 / 1.35 / 0.48 / 4.18°;
#   21 taps, ≤ 20: 0.87 / 1.08 / 0.38 / 4.17°.  15 taps keep both ratios in 0.7–1.4 and the beats above replay.
# The gain from the robust spread (MAD) with a soft limit at 3 σ (one wild excursion of Φ — seen: a 60° yaw on a dev
# clip — neither sets the gain nor shows): 15 taps, ≤ 20: 0.89 / 1.35 / 0.49 / 4.22°; MAD without the limit over-
# shoots (1.41 / 2.06); plain std with the limit under-shoots (0.76 / 1.16).
# And with the smoothing widened until the motion is at most MAX_SPEED_RATIO times as fast as the reference's (mean
# |Δ|): ≤ 1.0: 0.87 / 0.87 / 0.31 / 4.18°, pose Fréchet 4.3;  ≤ 1.2: 0.88 / 0.98 / 0.37 / 4.19°, 3.8;  ≤ 1.5: 0.88 /
# 1.14 / 0.45 / 4.20°, 3.7 (replay: 1.04 / 1.10 / 0.45 / 3.70°, 3.1); without: 0.89 / 1.35 / 0.49 / 4.22°, 5.8.
# With the ends eased (and not fitted) and Φ at adversarial weight 2, whose raw motion is damped further (std ratio
# 0.20), the gain cap binds on near-still predictions: cap 20: 0.70 / 1.09 / 0.52 / 3.98°, FD 4.9; cap 50: 0.97 /
# 1.37 / 0.49 / 4.21°, FD 4.3; cap 200: 1.20 / 1.54 / 0.44 / 4.49°, FD 8.7. 50 is the cap.
POSE_SMOOTH_TAPS = 15
MAX_AMPLITUDE_GAIN = 50.0
MAX_SPEED_RATIO = 1.5
SMOOTH_STEPS = (21, 31, 45, 61, 91)
EASE_FRAMES = 8


def match_amplitude(track: np.ndarray, target_std: np.ndarray | None, max_gain: float = MAX_AMPLITUDE_GAIN,
                    limit: float = 3.0, fit: np.ndarray | None = None) -> np.ndarray:
    """Per channel, the deviations of ``track (T, C)`` from its median scaled so that their robust std (1.4826 × the
    median absolute deviation, so that one excursion of Φ does not set the gain) is ``target_std (C,)`` — the gain
    capped at ``max_gain`` both ways, channels that do not move left alone — then soft-limited to ``limit`` target
    stds (``limit · σ · tanh(d / (limit · σ))``): no head turns far beyond what the person does. ``fit (T,)`` bool:
    the frames the median and spread are measured on (default all). ``None`` returns the track."""
    if target_std is None or len(track) < 2:
        return track
    x = np.asarray(track, np.float64)
    sel = x if fit is None or not np.any(fit) else x[np.asarray(fit, bool)]
    center = np.median(sel, 0, keepdims=True)
    dev = x - center
    spread = 1.4826 * np.median(np.abs(sel - center), 0)
    spread = np.where(spread > 1e-8, spread, dev.std(0))
    target = np.asarray(target_std, np.float64)
    gain = np.where(spread > 1e-8, target / np.maximum(spread, 1e-8), 1.0)
    dev = dev * np.clip(gain, 1.0 / max_gain, max_gain)[None]
    bound = np.maximum(limit * target, 1e-12)[None]
    dev = np.where(spread[None] > 1e-8, bound * np.tanh(dev / bound), dev)
    return (center + dev).astype(track.dtype)


def shape_motion(poses: np.ndarray, target_std: np.ndarray | None, target_speed: np.ndarray | None = None,
                 taps: int = POSE_SMOOTH_TAPS, max_speed: float = MAX_SPEED_RATIO,
                 ease: tuple[bool, bool] = (True, True)) -> np.ndarray:
    """What inference does to Φ's raw poses ``(T, 6)`` (and what ``evaluate motion`` scores as ``model_smoothed``):
    Hanning smoothing (removes the frame-to-frame jitter Φ leaves), then :func:`match_amplitude` to the motion std of
    the reference (its own clip, a style clip, or the default style's typical speaker): Φ trained with MSE predicts a
    damped mean motion (std about a sixth of the real one on held-out speakers); the reference says how much this
    person moves, Φ when and which way. With ``target_speed (6,)`` (the reference's mean |Δ| per frame) the smoothing
    widens (``SMOOTH_STEPS``) until the motion is at most ``max_speed`` times as fast as the person's: a slow mover
    is not given Φ's quicker tempo at his amplitude. The motion eases in and out over ``EASE_FRAMES`` at the ends
    of the speech (``ease``: at the start, at the end — ``evaluate motion`` eases only the end of a window, which is
    where its audio ends). ``target_std`` None: smoothing only."""
    if target_std is None or len(poses) < 2:
        return smooth(poses, taps)
    # Φ's first and last frames (its convolutions' zero padding at the ends of the speech) swing far once amplified:
    # they neither set the gain nor show — the motion eases in from, and out to, its median pose over EASE_FRAMES
    n = min(EASE_FRAMES, len(poses) // 3)
    ramp = np.ones(len(poses))
    edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / max(n, 1))
    if n and ease[0]:
        ramp[:n] = edge
    if n and ease[1]:
        ramp[len(poses) - n:] = edge[::-1]
    fit = ramp >= 1.0
    out = match_amplitude(smooth(poses, taps), target_std, fit=fit)
    if target_speed is not None:
        speed = np.maximum(np.asarray(target_speed, np.float64), 1e-9)
        for wider in (t for t in SMOOTH_STEPS if t > taps):
            if np.mean(np.abs(np.diff(out[fit], axis=0)).mean(0) / speed) <= max_speed:
                break
            out = match_amplitude(smooth(poses, wider), target_std, fit=fit)
    center = np.median(out[fit], 0, keepdims=True)
    return (center + (out - center) * ramp[:, None]).astype(out.dtype)


def motion_amplitude(poses: np.ndarray, taps: int) -> tuple[np.ndarray, np.ndarray]:
    """How much and how fast a reference moves, the targets of :func:`shape_motion`: per channel, the std over time
    and the mean |Δ| per frame of its poses ``(T, 6)`` smoothed with ``taps`` (as Φ's training targets are), in raw
    units (rad, px; ``evaluation.motion_stats`` reports the same statistics in degrees) → ``(std (6,), speed (6,))``
    float32."""
    sm = smooth(np.asarray(poses, np.float32), taps)
    speed = np.abs(np.diff(sm, axis=0)).mean(0) if len(sm) > 1 else np.zeros(sm.shape[1:])
    return sm.std(0).astype(np.float32), speed.astype(np.float32)


REST_RAMP = 4  # frames over which the mouth settles into, and leaves, its rest shape around a pause


def rest_in_silence(codes: np.ndarray, rest_code: np.ndarray | None, speech: np.ndarray) -> np.ndarray:
    """Ψ's codes ``(T, n)`` brought to ``rest_code (n,)`` — the reference's own closed-mouth expression — where
    ``speech (T,)`` is False (pauses of the speech, :func:`rhythmhead.audio.windows.speech_frames`), over a
    ``REST_RAMP``-frame cosine ramp: Ψ, trained on speech, leaves the mouth half open in silence. ``rest_code`` None
    returns the codes."""
    if rest_code is None or len(codes) == 0 or np.all(speech):
        return codes
    from scipy.ndimage import distance_transform_edt

    quiet = ~np.asarray(speech, bool)
    ramp = np.clip(distance_transform_edt(quiet) / (REST_RAMP + 1), 0.0, 1.0)  # frames from the nearest speech
    weight = (0.5 - 0.5 * np.cos(np.pi * ramp))[:, None]
    return (codes * (1.0 - weight) + np.asarray(rest_code, np.float64)[None] * weight).astype(codes.dtype)


def shape_expression(codes: np.ndarray, taps: int, opening, reference_openings, rest_code: np.ndarray,
                     speech: np.ndarray) -> np.ndarray:
    """What inference does to Ψ's codes ``(T, n)`` (and what ``evaluate expression`` scores as ``model_smoothed``):
    :func:`smooth` with ``taps``; :func:`map_openings`, the openings (``opening(codes) -> (T,)``) given the
    distribution of ``reference_openings`` (:func:`reference_openings`; None: a photo, Ψ's own openings) about the
    closed-mouth ``rest_code``; :func:`rest_in_silence`, that closed mouth where ``speech (T,)`` is False."""
    codes = map_openings(smooth(codes, taps), rest_code, opening, reference_openings, speech)
    return rest_in_silence(codes, rest_code, speech)


def scale_expression(codes: np.ndarray, neutral: np.ndarray, scale: float) -> np.ndarray:
    """``--expression-scale``: expression PCA codes ``(T,n)`` pushed away from (scale > 1) or towards (< 1) a neutral code."""
    return neutral[None] + float(scale) * (codes - neutral[None])


def blink_curve(n_frames: int, rng: np.random.Generator, fps: float = 25.0, mean_interval_s: float = 4.0,
                duration_s: float = 0.2) -> np.ndarray:
    """Eye closure ``(T,)`` in [0,1]: blinks at random intervals (gamma-distributed around ``mean_interval_s``, as human
    blinks are roughly every 2–6 s), each a smooth close-open of ``duration_s``."""
    closure = np.zeros(n_frames, np.float32)
    length = max(3, int(round(duration_s * fps)))
    shape = np.sin(np.linspace(0, np.pi, length)) ** 2
    t = rng.gamma(4.0, mean_interval_s / 4.0) * fps * 0.5  # the first blink comes sooner
    while t < n_frames:
        start = int(t)
        end = min(n_frames, start + length)
        closure[start:end] = np.maximum(closure[start:end], shape[: end - start])
        t += max(length + 1, rng.gamma(4.0, mean_interval_s / 4.0) * fps)
    return closure


def apply_blinks(frontal: np.ndarray, closure: np.ndarray) -> np.ndarray:
    """Close the eyelids of frontal landmarks ``(T,68,3)`` by ``closure (T,)``: upper lids move onto the lower lids
    (90 % of the way at full closure, the lower lid rising 10 %)."""
    out = frontal.copy()
    c = closure[:, None, None]
    upper, lower = frontal[:, _UPPER_LID], frontal[:, _LOWER_LID]
    meet = 0.9 * lower + 0.1 * upper
    out[:, _UPPER_LID] = upper + c * (meet - upper)
    out[:, _LOWER_LID] = lower + c * 0.1 * (upper - lower)
    return out


# the most map_openings may widen a mouth. Measured (`evaluate expression --folds 5`, the fast Ψ; mouth LMD px /
# opening std ratio / bilabial closures): one gain of 1–2 about the mean expression (before) 3.22 / 0.90 / 0.42;
# quantile mapping capped at 1: 3.13 / 0.80 / 0.59; 1.2: 3.17 / 0.89 / 0.59; 1.5: 3.28 / 0.96 / 0.59; 2: 3.47 / 1.00
# / 0.58; 3: 3.81 / 1.01 / 0.58 (the mean expression: 3.93)
OPEN_MAX_GAIN = 1.2


def map_openings(codes: np.ndarray, rest_code: np.ndarray, opening, reference_openings, speech=None,
                 max_gain: float = OPEN_MAX_GAIN, iterations: int = 4) -> np.ndarray:
    """Ψ's codes ``(T, n)`` moved frame by frame along the line from the closed-mouth ``rest_code (n,)`` so that the
    openings (``opening(codes) -> (T,)``) take on the distribution of ``reference_openings`` (the reference clip's
    own, over its speech frames): quantile mapping. Each frame keeps its place among the generated frames (rank over
    ``speech`` frames, True: all) and gets the reference's opening at that rank; the mouth keeps its shape (the same
    direction from the closed mouth), only how far it is open changes, by a factor in ``[0, max_gain]``. Ψ, trained
    on L1, opens about half as wide as the real mouth and rarely closes the lips; the real mouth closes on /p b m/ and
    between words, and that share of frames comes back. ``None`` or too few reference openings: the codes as they
    are."""
    ref = np.sort(np.asarray(reference_openings, np.float64)) if reference_openings is not None else np.zeros(0)
    if len(codes) < 2 or len(ref) < 8:
        return codes
    codes = np.asarray(codes, np.float64)
    rest = np.asarray(rest_code, np.float64)[None]
    dev = codes - rest
    o_rest = float(opening(rest)[0])
    g = np.asarray(opening(codes), np.float64)
    sel = np.ones(len(g), bool) if speech is None else np.asarray(speech, bool)
    if sel.sum() < 2:
        sel = np.ones(len(g), bool)
    ranked = np.sort(g[sel])
    # the rank of every frame among the generated speech frames (interpolated; ties share the mean rank)
    rank = (np.searchsorted(ranked, g, "left") + np.searchsorted(ranked, g, "right")) / (2.0 * len(ranked))
    target = np.quantile(ref, np.clip(rank, 0.0, 1.0))
    alpha = np.ones(len(g))
    current = g
    for _ in range(iterations):  # the opening is a distance, nearly linear along the line: fixed-point steps
        span = current - o_rest
        alpha = np.where(np.abs(span) > 1e-6, alpha * (target - o_rest) / np.where(np.abs(span) > 1e-6, span, 1.0),
                         alpha)
        alpha = np.clip(alpha, 0.0, max_gain)
        current = np.asarray(opening(rest + alpha[:, None] * dev), np.float64)
    return (rest + alpha[:, None] * dev).astype(np.float32)


def reference_openings(frontal: np.ndarray, speech=None) -> np.ndarray | None:
    """The inner-lip openings of a reference clip's frontal landmarks ``(T, 68, 3)`` over its ``speech`` frames
    (``(T,)`` bool; None or too few: all frames) — the distribution Ψ's openings are given (:func:`shape_expression`);
    None for fewer than 2 frames."""
    from ..data.pca import open_rate

    if len(frontal) < 2:
        return None
    o = open_rate(np.asarray(frontal, np.float64))
    if speech is not None and np.asarray(speech, bool).sum() >= 8:
        o = o[np.asarray(speech, bool)]
    return np.asarray(o, np.float64)


def relative_openings(frontal: np.ndarray, speech=None) -> np.ndarray | None:
    """:func:`reference_openings` ÷ the mouth width (the outer lip corners' distance, landmarks 48–54, median over
    the frames): openings comparable across people and crop scales (a photo's mouth is given a typical speaker's)."""
    o = reference_openings(frontal, speech)
    if o is None:
        return None
    return o / mouth_width(frontal)


def mouth_width(frontal: np.ndarray) -> float:
    """The median distance between the outer lip corners (68-point landmarks 48 and 54) of ``(T, 68, ≥2)`` or
    ``(68, ≥2)`` landmarks, in their pixels."""
    f = np.asarray(frontal, np.float64).reshape(-1, 68, np.shape(frontal)[-1])
    return float(np.median(np.linalg.norm(f[:, 54, :2] - f[:, 48, :2], axis=-1)))
