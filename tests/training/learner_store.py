"""A small clip store for the learner tests (Φ, Ψ, their evaluation).

Uses :func:`rhythmhead.data.synthetic.make_synthetic_store` where it exists; otherwise writes a minimal store with the same
layout (track.npz + audio.wav + manifest, no frames.mp4: the learners never read frames) whose mouth opening and head
motion follow the audio envelope, so that the learners have something to learn.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

RATE = 16000


def _fake_store(root: Path, n_clips: int, n_frames: int, seed: int) -> Path:
    from rhythmhead.data.store import save_track, write_manifest
    from rhythmhead.geometry.pose import apply_pose
    from rhythmhead.media.io import write_wav
    import torch

    rng = np.random.default_rng(seed)
    base = np.zeros((68, 3), np.float32)
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    base[:, 0] = 128 + 60 * np.cos(angles)
    base[:, 1] = 128 + 70 * np.sin(angles)
    base[:, 2] = 10 * np.sin(2 * angles)
    records = []
    for c in range(n_clips):
        clip_id = f"clip{c:02d}"
        d = root / clip_id
        d.mkdir(parents=True, exist_ok=True)
        t = np.arange(n_frames * 640) / RATE
        env_rate = rng.uniform(2.0, 5.0)
        env = 0.5 + 0.5 * np.sin(2 * np.pi * env_rate * t + rng.uniform(0, 6)) ** 2
        wave = (0.3 * env * rng.standard_normal(t.size)).astype(np.float32)
        frame_env = np.sqrt((wave.reshape(n_frames, 640) ** 2).mean(1))
        frame_env = frame_env / frame_env.max()
        frontal = np.repeat(base[None] + rng.normal(0, 1.5, (1, 68, 3)).astype(np.float32), n_frames, 0)
        frontal[:, [65, 66, 67], 1] += 12 * frame_env[:, None]  # lower inner lip follows the envelope
        frontal[:, 56:59, 1] += 12 * frame_env[:, None]
        phase = np.arange(n_frames) / 25.0
        pose = np.zeros((n_frames, 6), np.float32)
        pose[:, 0] = 0.05 * np.sin(2 * np.pi * 0.7 * phase) + 0.03 * frame_env
        pose[:, 1] = 0.08 * np.sin(2 * np.pi * 0.4 * phase + c)
        pose[:, 2] = 0.02 * np.cos(2 * np.pi * 0.5 * phase)
        pose[:, 3:] = rng.normal(0, 2, 3) + np.stack([3 * np.sin(phase), 2 * np.cos(phase), np.zeros_like(phase)], 1)
        landmarks = apply_pose(torch.from_numpy(frontal), torch.from_numpy(pose)).numpy()
        save_track(d / "track.npz", landmarks=landmarks, mesh=np.zeros((n_frames, 478, 3), np.float32), pose=pose,
                   frontal=frontal, key_frame=0, fps=25.0)
        write_wav(d / "audio.wav", wave, RATE)
        (d / ".done").touch()
        records.append({"id": clip_id, "source": f"synthetic/{clip_id}", "frames": n_frames,
                        "seconds": n_frames / 25.0, "has_audio": True, "speaker": f"spk{c}"})
    write_manifest(root, records)
    return root


def make_store(root: Path, n_clips: int = 4, n_frames: int = 60, seed: int = 0) -> Path:
    """A valid store at ``root`` with ``n_clips`` speech clips of ``n_frames`` frames, one speaker each."""
    try:
        from rhythmhead.data.synthetic import make_synthetic_store
    except ImportError:
        return _fake_store(Path(root), n_clips, n_frames, seed)
    make_synthetic_store(root, n_clips=n_clips, n_frames=n_frames, n_speakers=n_clips, seed=seed)
    return Path(root)
