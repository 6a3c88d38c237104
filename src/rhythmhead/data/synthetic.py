"""A small, valid clip store made from nothing: for tests and smoke runs on machines without real media.

:func:`make_synthetic_store` writes exactly the layout of :mod:`rhythmhead.data.store` (manifest.jsonl, per clip
frames.mp4, audio.wav, track.npz, .done). Each clip is consistent in every part:

* audio.wav: 16 kHz "speech-like" sound: syllables (Hann-shaped bursts of 0.1–0.3 s with pauses) of a harmonic voice
  (f0 100–220 Hz with vibrato, 8 harmonics) plus breath noise;
* the mouth opening of frame t is the syllable envelope over that frame's 40 ms, in [0, 1]: the lower lip, lower teeth
  region and chin of the canonical mesh drop by up to 14 px (the stable pose points never move);
* the head pose is a smooth random motion (a few slow sinusoids per channel) plus a nod that follows the envelope;
* landmarks/mesh = the canonical face (``face.landmarks.canonical_mesh_478``) with that mouth, posed by ``Rᵀ(x − t)``;
  the stored pose is re-estimated from the landmarks exactly as preprocessing does, and frontal = R·l + t;
* frames.mp4: a face-like drawing of the posed mesh (skin-coloured hull, eyes with pupils, brows, nose, lips whose
  inner part opens with the audio) on a per-clip background, so image stages can train on it.

Deterministic for a given seed, and fast (4 clips × 60 frames well under 2 s).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..face.landmarks import canonical_68, canonical_mesh_478, mesh_to_68
from ..geometry.pose import apply_pose, estimate_pose, frontalize, key_frame
from .store import AUDIO, CROP_SIZE, DONE, FPS, FRAMES, TRACK, ClipStore, save_track, write_manifest

__all__ = ["make_synthetic_store", "synthetic_audio", "synthetic_pose", "open_mouth", "draw_face"]

AUDIO_RATE = 16000
MOUTH_DROP_PX = 14.0  # lower-lip/chin drop at full opening, crop pixels


def synthetic_audio(n_frames: int, rng: np.random.Generator, rate: int = AUDIO_RATE, fps: float = FPS) -> tuple[np.ndarray, np.ndarray]:
    """Speech-like audio of ``n_frames`` video frames: ``(wave (N,) float32 in [-1, 1], envelope (N,) in [0, 1])``."""
    n = int(round(n_frames * rate / fps))
    env = np.zeros(n)
    pos = int(rng.uniform(0.0, 0.15) * rate)
    while pos < n:
        dur = int(rng.uniform(0.10, 0.30) * rate)
        seg = np.hanning(dur + 2)[1:-1] * rng.uniform(0.5, 1.0)
        end = min(n, pos + dur)
        env[pos:end] = np.maximum(env[pos:end], seg[: end - pos])
        gap = rng.uniform(0.3, 0.6) if rng.random() < 0.15 else rng.uniform(0.02, 0.15)
        pos = end + int(gap * rate)
    t = np.arange(n) / rate
    f0 = rng.uniform(100, 220) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 9))
    voice = voice / np.abs(voice).max() + 0.25 * rng.standard_normal(n)
    wave = 0.5 * env * voice / np.abs(voice).max()
    return wave.astype(np.float32), env


def frame_envelope(env: np.ndarray, n_frames: int) -> np.ndarray:
    """Mean of a per-sample envelope over each frame's samples -> ``(n_frames,)`` normalised to a maximum of 1."""
    per = env[: len(env) // n_frames * n_frames].reshape(n_frames, -1).mean(1)
    return per / max(per.max(), 1e-8)


def synthetic_pose(n_frames: int, rng: np.random.Generator, nod: np.ndarray | None = None, fps: float = FPS) -> np.ndarray:
    """Smooth random head pose ``(T, 6)`` float64: rotvec (rad) + translation (px); ``nod`` (T,) adds a pitch motion."""
    t = np.arange(n_frames) / fps
    amp = np.array([0.12, 0.20, 0.06, 5.0, 4.0, 3.0])  # pitch, yaw, roll (rad), tx, ty, tz (px)
    pose = np.zeros((n_frames, 6))
    for k in range(6):
        for _ in range(2):
            freq = rng.uniform(0.15, 0.8)
            pose[:, k] += amp[k] / 2 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    if nod is not None:  # a nod that follows the (smoothed) speech envelope
        win = np.hanning(9)[1:-1]
        smooth = np.convolve(np.pad(nod, 3, mode="edge"), win / win.sum(), mode="valid")
        pose[:, 0] += 0.08 * (smooth - smooth.mean())
    return pose


def open_mouth(points: np.ndarray, opening: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Open the mouth of frontal points ``(N, 3)`` by ``opening`` ``(T,)`` in [0, 1] -> ``(T, N, 3)``.

    Points below the upper inner lip of ``reference`` (the canonical 68) move down, smoothly ramping over the closed lip
    gap and fading out sideways before the stable jaw points 1–5/11–15, which therefore stay put.
    """
    cx = reference[[8, 27, 30, 33, 51, 57], 0].mean()
    half_width = 0.9 * min(abs(reference[5, 0] - cx), abs(reference[11, 0] - cx))
    y_top, y_bottom = reference[62, 1], max(reference[66, 1], reference[62, 1] + 1.0)
    ramp = np.clip((points[:, 1] - y_top) / (y_bottom - y_top), 0.0, 1.0)
    side = np.clip(1 - ((points[:, 0] - cx) / half_width) ** 2, 0.0, 1.0) ** 2
    drop = MOUTH_DROP_PX * ramp * side  # (N,)
    out = np.repeat(points[None].astype(np.float64), len(opening), axis=0)
    out[:, :, 1] += opening[:, None] * drop[None]
    return out


def _draw_face(img: np.ndarray, mesh_xy: np.ndarray, lm: np.ndarray, skin: tuple[int, int, int]) -> None:
    import cv2

    def poly(idx, color, closed=True, fill=True, thickness=1):
        p = np.round(lm[list(idx)] * 16).astype(np.int32)
        if fill:
            cv2.fillPoly(img, [p], color, lineType=cv2.LINE_AA, shift=4)
        else:
            cv2.polylines(img, [p], closed, color, thickness, lineType=cv2.LINE_AA, shift=4)

    hull = cv2.convexHull(np.round(mesh_xy[:468] * 16).astype(np.int32))
    cv2.fillConvexPoly(img, hull, skin, lineType=cv2.LINE_AA, shift=4)
    shade = tuple(int(c * 0.75) for c in skin)
    poly(range(0, 17), shade, closed=False, fill=False, thickness=2)  # jaw line
    for brow in (range(17, 22), range(22, 27)):
        poly(brow, (60, 40, 30), closed=False, fill=False, thickness=3)
    poly(range(27, 31), shade, closed=False, fill=False, thickness=2)  # nose bridge
    poly(range(31, 36), (int(skin[0] * 0.6), int(skin[1] * 0.5), int(skin[2] * 0.5)), closed=False, fill=False, thickness=2)
    for eye in (range(36, 42), range(42, 48)):
        poly(eye, (245, 245, 245))
        centre = lm[list(eye)].mean(0)
        radius = max(1.5, 0.22 * np.ptp(lm[list(eye), 0]))
        cv2.circle(img, tuple(np.round(centre * 16).astype(int)), int(radius * 16), (40, 30, 20), -1, cv2.LINE_AA, shift=4)
        poly(eye, (50, 30, 20), fill=False)
    poly(range(48, 60), (170, 60, 70))  # lips
    poly(range(60, 68), (60, 15, 25))  # mouth opening


def draw_face(mesh_xy: np.ndarray, landmarks_xy: np.ndarray, background: np.ndarray, skin: tuple[int, int, int]) -> np.ndarray:
    """One ``(256, 256, 3)`` uint8 frame: a face-like drawing of posed mesh/landmark x,y over ``background``."""
    img = background.copy()
    _draw_face(img, mesh_xy, landmarks_xy, skin)
    return img


def _background(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:CROP_SIZE, 0:CROP_SIZE] / CROP_SIZE
    c0, c1 = rng.uniform(30, 200, 3), rng.uniform(30, 200, 3)
    w = (0.6 * yy + 0.4 * xx)[..., None]
    return np.ascontiguousarray((c0 * (1 - w) + c1 * w).astype(np.uint8))


def make_synthetic_store(root: str | Path, n_clips: int = 4, n_frames: int = 60, n_speakers: int | None = None,
                         with_audio: bool = True, seed: int = 0) -> ClipStore:
    """Write a valid clip store of synthetic talking faces under ``root`` and open it.

    Args:
        root: the store folder (created; existing clips of the same ids are overwritten).
        n_clips: number of clips (ids ``syn000``, ``syn001``, ...).
        n_frames: frames per clip (25 fps).
        n_speakers: distinct speakers (``spk0``, ...), assigned round-robin; default ``ceil(n_clips / 2)``.
        with_audio: write audio.wav (else the clips are silent videos, ``has_audio`` false).
        seed: everything is a deterministic function of the seed.

    Returns:
        the :class:`~rhythmhead.data.store.ClipStore` over ``root``.
    """
    from ..media.io import VideoWriter, write_wav

    if n_clips < 1 or n_frames < 1:
        raise ValueError(f"need n_clips >= 1 and n_frames >= 1, got {n_clips}, {n_frames}")
    n_speakers = max(1, min(n_clips, n_speakers or (n_clips + 1) // 2))
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    canon_mesh = canonical_mesh_478().astype(np.float64)
    canon_68 = canonical_68().astype(np.float64)
    canon_t = torch.from_numpy(canon_68)
    records = []
    for i in range(n_clips):
        rng = np.random.default_rng([seed, i])
        clip_id = f"syn{i:03d}"
        clip_dir = root / clip_id
        clip_dir.mkdir(parents=True, exist_ok=True)
        (clip_dir / DONE).unlink(missing_ok=True)
        wave, env = synthetic_audio(n_frames, rng)
        opening = frame_envelope(env, n_frames)
        true_pose = synthetic_pose(n_frames, rng, nod=opening)
        frontal_mesh = open_mouth(canon_mesh, opening, canon_68)  # (T, 478, 3)
        mesh = apply_pose(torch.from_numpy(frontal_mesh), torch.from_numpy(true_pose))
        landmarks = mesh_to_68(mesh)
        pose = estimate_pose(landmarks, canon_t)  # what preprocessing would measure (equals true_pose)
        frontal = frontalize(landmarks, pose)
        # the key frame of the track as stored (float32): the float64 values can fall on the other side of a threshold
        key = key_frame(torch.from_numpy(pose.numpy().astype(np.float32)).double(), frontal.numpy().astype(np.float32))
        background = _background(rng)
        skin = tuple(int(c) for c in rng.uniform([170, 120, 90], [240, 190, 160]))
        mesh_np, lm_np = mesh.numpy(), landmarks.numpy()
        with VideoWriter(clip_dir / FRAMES, fps=FPS, preset="ultrafast") as writer:
            for t in range(n_frames):
                writer.write(draw_face(mesh_np[t, :, :2], lm_np[t, :, :2], background, skin))
        if with_audio:
            write_wav(clip_dir / AUDIO, wave, AUDIO_RATE)
        else:
            (clip_dir / AUDIO).unlink(missing_ok=True)
        save_track(clip_dir / TRACK, landmarks=lm_np, mesh=mesh_np, pose=pose.numpy(), frontal=frontal.numpy(),
                   key_frame=key, fps=FPS)
        record = {
            "id": clip_id, "source": f"synthetic://seed{seed}/{clip_id}", "frames": n_frames,
            "seconds": round(n_frames / FPS, 3), "has_audio": bool(with_audio), "speaker": f"spk{i % n_speakers}",
        }
        (clip_dir / DONE).write_text(json.dumps(record, sort_keys=True) + "\n", encoding="utf-8")
        records.append(record)
    write_manifest(root, records)
    return ClipStore(root)
