"""Per-video-frame audio windows and simple audio descriptors (pure numpy/torch, no file I/O).

Frame t of a 25 fps video owns the audio samples ``[t·S, (t+1)·S)`` with ``S = rate / fps`` samples per frame (640 at
16 kHz, 2000 at 50 kHz). The networks Φ and Ψ see, for frame t, the window of chunks t−3 … t+3 — the paper's x_{t−3:t+4},
REFERENCE.md §2.2 — where chunks before the first and after the last are copies of the first and last chunk (edge padding,
as the released ``RotateAudio/dataset.py`` pads by repetition).

Besides the windows this module gives a per-frame RMS envelope (lip-sync proxy, demo level bar) and a spectral-flux onset
detector (the beat-alignment statistic of head motion, DESIGN.md §5).
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch

__all__ = ["samples_per_frame", "num_frames", "fit_length", "frame_windows", "envelope", "onset_frames"]


def samples_per_frame(rate: int, fps: float = 25) -> int:
    """S = rate / fps audio samples per video frame; ValueError unless it is a whole number (e.g. 640 at 16 kHz)."""
    s = Fraction(rate) / Fraction(fps).limit_denominator(1001)
    if s.denominator != 1 or s <= 0:
        raise ValueError(f"rate {rate} Hz / fps {fps} is not a whole number of samples per frame")
    return int(s)


def num_frames(n_samples: int, rate: int, fps: float = 25) -> int:
    """Number of video frames that cover ``n_samples`` of audio at ``rate``: ceil(n_samples · fps / rate).

    The last frame may own a partial chunk (it is zero-padded by :func:`fit_length`); 0 samples give 0 frames.
    """
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    return math.ceil(Fraction(int(n_samples)) * Fraction(fps).limit_denominator(1001) / Fraction(int(rate)))


def fit_length(wave, length: int):
    """Cut ``wave (N,)`` to ``length`` samples or zero-pad it at the end (numpy or torch, dtype/device kept)."""
    n = wave.shape[0]
    if n >= length:
        return wave[:length]
    if isinstance(wave, torch.Tensor):
        return torch.cat([wave, wave.new_zeros(length - n)])
    return np.concatenate([wave, np.zeros(length - n, dtype=wave.dtype)])


def frame_windows(wave, n_frames: int, samples_per_frame: int, before: int = 3, after: int = 3):
    """Stack, for every video frame t, the audio chunks t−before … t+after (the paper's x_{t−3:t+4}).

    The wave is first cut or zero-padded to ``n_frames · samples_per_frame`` samples and split into ``n_frames`` chunks of
    ``samples_per_frame``; chunk indices outside [0, n_frames) are clamped, i.e. the signal is edge-padded by repeating its
    first and last chunk (REFERENCE.md §2.2).

    Args:
        wave: ``(N,)`` mono audio, numpy array or torch tensor.
        n_frames: T, the number of video frames.
        samples_per_frame: S (640 at 16 kHz and 25 fps, 2000 at 50 kHz).
        before, after: context chunks on each side (3 and 3 give windows of 7 chunks).

    Returns:
        ``(T, before + 1 + after, S)`` float32 — a numpy array for numpy input, a tensor on ``wave``'s device for tensor
        input (floating tensors keep their dtype).
    """
    if wave.ndim != 1:
        raise ValueError(f"wave must be 1-D (N,), got shape {tuple(wave.shape)}")
    if n_frames < 1 or samples_per_frame < 1 or before < 0 or after < 0:
        raise ValueError(f"bad window spec: n_frames={n_frames}, samples_per_frame={samples_per_frame}, "
                         f"before={before}, after={after}")
    chunks = fit_length(wave, n_frames * samples_per_frame).reshape(n_frames, samples_per_frame)
    offsets = np.arange(-before, after + 1)
    index = np.clip(np.arange(n_frames)[:, None] + offsets[None, :], 0, n_frames - 1)  # (T, 7)
    if isinstance(wave, torch.Tensor):
        if not chunks.is_floating_point():
            chunks = chunks.float()
        return chunks[torch.as_tensor(index, device=wave.device)]
    return np.ascontiguousarray(chunks[index], dtype=np.float32)


def envelope(wave: np.ndarray, rate: int, n_frames: int | None = None, fps: float = 25,
             block: int = 1500) -> np.ndarray:
    """Root-mean-square level of each video frame's own chunk of audio.

    Args:
        wave: ``(N,)`` mono audio in [-1, 1].
        rate: sample rate (Hz); ``rate / fps`` must be a whole number.
        n_frames: T; the wave is cut or zero-padded to T chunks (None: every frame the wave reaches).
        fps: video frame rate.
        block: frames computed at a time, so that no whole-length float64 copy of a long wave is made.

    Returns:
        ``(T,)`` float32, RMS in the wave's units (a full-scale sine gives ≈ 0.707).
    """
    s = samples_per_frame(rate, fps)
    n = num_frames(len(wave), rate, fps) if n_frames is None else int(n_frames)
    out = np.zeros(n, np.float32)
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        seg = fit_length(np.asarray(wave[b0 * s: b1 * s], dtype=np.float64), (b1 - b0) * s)
        out[b0:b1] = np.sqrt(np.mean(seg.reshape(b1 - b0, s) ** 2, axis=1))
    return out


SPEECH_DBFS = -50.0  # a track has sound if some 40 ms frame reaches this RMS level (the driving speech must)


def loudest_dbfs(wave: np.ndarray, rate: int) -> float:
    """The RMS level of the loudest 40 ms frame of ``wave``, in dBFS (−200 for an empty or all-zero wave)."""
    env = envelope(wave, rate) if len(wave) else np.zeros(1, np.float32)
    return float(20 * np.log10(max(float(env.max(initial=0.0)), 1e-10)))


def has_sound(wave: np.ndarray, rate: int) -> bool:
    """Whether ``wave`` has any sound to use: :func:`loudest_dbfs` at least :data:`SPEECH_DBFS` (the one criterion of
    a silent track, for the driving speech, a reference's own audio and a store's clips alike)."""
    return len(wave) > 0 and loudest_dbfs(wave, rate) >= SPEECH_DBFS


def _smooth(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve ``x`` with an odd- or even-length ``kernel``, edge-padded, same length as ``x``."""
    left = (len(kernel) - 1) // 2
    padded = np.pad(x, (left, len(kernel) - 1 - left), mode="edge")
    return np.convolve(padded, kernel[::-1], mode="valid")


def _pick_peaks(x: np.ndarray, threshold: np.ndarray, min_gap: int) -> np.ndarray:
    """Indices of local maxima of ``x`` above ``threshold``; of peaks closer than ``min_gap``, the higher one is kept."""
    if x.size < 3:
        return np.zeros(0, dtype=np.int64)
    inner = np.arange(1, x.size - 1)
    is_peak = (x[inner] > x[inner - 1]) & (x[inner] >= x[inner + 1]) & (x[inner] > threshold[inner])
    candidates = inner[is_peak]
    kept: list[int] = []
    for k in candidates[np.argsort(-x[candidates], kind="stable")]:
        if all(abs(int(k) - j) >= min_gap for j in kept):
            kept.append(int(k))
    return np.array(sorted(kept), dtype=np.int64)


def onset_frames(wave: np.ndarray, rate: int, n_frames: int, fps: float = 25, *, hop_s: float = 0.01,
                 win_s: float = 0.032, log_gain: float = 100.0, sigma_hops: float = 1.0, mean_window_s: float = 0.3,
                 delta: float = 0.1, min_gap_s: float = 0.1, silence: float = 1e-3,
                 flux_floor: float = 0.02) -> np.ndarray:
    """Video frames at which an acoustic onset (a syllable or beat start) occurs, by spectral flux with peak picking.

    Method (the common log-magnitude spectral-flux detector):
      1. magnitude STFT with a Hann window of ``win_s`` seconds and a hop of ``hop_s`` seconds (whole windows inside the
         signal only, each dated at its centre; a sound already present at the first sample is not an onset);
      2. log compression ``log(1 + log_gain·|X|)`` of the magnitude scaled to sine amplitude (a full-scale sine → 1);
      3. flux = mean over frequency bins of the positive part of the frame-to-frame difference; novelty = flux divided
         by ``max(max(flux), flux_floor)`` (the floor keeps a steady tone or faint noise, whose flux is only jitter, from
         being scaled up into onsets; speech peaks at 0.1–0.25), smoothed with a Gaussian of ``sigma_hops`` hops
         (σ = 10 ms by default);
      4. a peak is kept where novelty exceeds its moving mean over ``mean_window_s`` plus ``delta`` (threshold 0.1 of the
         maximum by default), is a local maximum, and lies at least ``min_gap_s`` after the previous kept peak;
      5. peak times are converted to video frame indices ``floor(t · fps)``, deduplicated, and kept below ``n_frames``.

    A wave whose peak amplitude is below ``silence`` (−60 dBFS) has no onsets.

    Args:
        wave: ``(N,)`` mono audio in [-1, 1].
        rate: sample rate (Hz).
        n_frames: T, the number of video frames (indices ≥ T are dropped).
        fps: video frame rate.

    Returns:
        Sorted ``int64`` array of frame indices in [0, T).
    """
    wave = np.asarray(wave, dtype=np.float64)
    empty = np.zeros(0, dtype=np.int64)
    if wave.ndim != 1:
        raise ValueError(f"wave must be 1-D (N,), got shape {wave.shape}")
    hop = max(1, int(round(hop_s * rate)))
    win = max(2, int(round(win_s * rate)))
    if wave.size < win + hop or np.max(np.abs(wave)) < silence:
        return empty
    # only whole windows inside the signal: padding would make the cut at either end look like a broadband onset.
    # STFT frame k covers samples [k·hop, k·hop + win) and is dated at its centre.
    frames = np.lib.stride_tricks.sliding_window_view(wave, win)[::hop]
    hann = np.hanning(win)
    spec = np.abs(np.fft.rfft(frames * hann, axis=1)) / (hann.sum() / 2)
    logspec = np.log1p(log_gain * spec)
    flux = np.maximum(np.diff(logspec, axis=0), 0.0).mean(axis=1)
    flux = np.concatenate([[0.0], flux])  # flux[k]: change into STFT frame k
    novelty = flux / max(float(flux.max()), flux_floor)
    if sigma_hops > 0:
        radius = max(1, int(math.ceil(4 * sigma_hops)))
        kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_hops) ** 2)
        novelty = _smooth(novelty, kernel / kernel.sum())
    mean_len = max(1, int(round(mean_window_s / hop_s)))
    threshold = _smooth(novelty, np.full(mean_len, 1.0 / mean_len)) + delta
    peaks = _pick_peaks(novelty, threshold, min_gap=max(1, int(round(min_gap_s / hop_s))))
    times = (peaks * hop + win / 2) / rate
    idx = np.unique(np.floor(times * fps + 1e-9).astype(np.int64))
    return idx[(idx >= 0) & (idx < n_frames)]


SPEECH_REL = 0.10  # speech: RMS envelope above 10 % of its 95th percentile, dilated by SPEECH_PAD frames
SPEECH_PAD = 5


def speech_frames(env) -> np.ndarray:
    """``(T,)`` bool: frames in or near speech (envelope above ``SPEECH_REL`` of its 95th percentile, ± ``SPEECH_PAD``
    frames, so the silent closure of a /p/ or /b/ inside a word counts as speech)."""
    e = np.asarray(env, np.float64)
    if e.size == 0:
        return np.zeros(0, bool)
    loud = e > SPEECH_REL * max(float(np.percentile(e, 95)), 1e-12)
    from scipy.ndimage import binary_dilation

    return binary_dilation(loud, np.ones(2 * SPEECH_PAD + 1, bool)) if loud.any() else loud
