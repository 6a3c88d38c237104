"""Tests for rhythmhead.data.synthetic: a valid, consistent, deterministic, fast store."""
from __future__ import annotations

import time

import numpy as np
import torch

from rhythmhead.data.store import ClipStore
from rhythmhead.data.synthetic import make_synthetic_store
from rhythmhead.face.landmarks import canonical_68, mesh_to_68
from rhythmhead.geometry.pose import STABLE_68, apply_pose, estimate_pose, frontalize, key_frame


def test_layout_and_speakers(synthetic_store):
    root = synthetic_store.root
    for cid in synthetic_store.ids():
        for name in ("frames.mp4", "audio.wav", "track.npz", ".done"):
            assert (root / cid / name).is_file()
    speakers = [r["speaker"] for r in synthetic_store.manifest()]
    assert len(set(speakers)) == 2
    assert ClipStore(root).ids() == synthetic_store.ids()


def test_track_is_consistent(synthetic_store):
    canon = torch.from_numpy(canonical_68()).double()
    for cid in synthetic_store.ids():
        tr = synthetic_store.track(cid)
        lm = torch.from_numpy(tr["landmarks"]).double()
        pose = torch.from_numpy(tr["pose"]).double()
        assert np.allclose(mesh_to_68(tr["mesh"]), tr["landmarks"])
        assert torch.allclose(estimate_pose(lm, canon), pose, atol=1e-4)
        front = torch.from_numpy(tr["frontal"]).double()
        assert torch.allclose(frontalize(lm, pose), front, atol=1e-3)
        assert torch.allclose(apply_pose(front, pose), lm, atol=1e-3)
        # stable points sit on the canonical; the mouth moves
        idx = list(STABLE_68)
        assert torch.allclose(front[:, idx], canon[idx].expand(len(front), 27, 3).float().double(), atol=1e-3)
        gap = (front[:, 66, 1] - front[:, 62, 1]).numpy()
        assert gap.max() - gap.min() > 5
        assert tr["key_frame"] == key_frame(pose, tr["frontal"])
        # the pose moves smoothly but really moves
        step = np.abs(np.diff(tr["pose"][:, :3], axis=0)).max()
        assert step < 0.05 and np.ptp(tr["pose"][:, 1]) > 0.02


def test_mouth_follows_audio(synthetic_store):
    for cid in synthetic_store.ids():
        audio = synthetic_store.audio(cid)
        front = synthetic_store.track(cid)["frontal"]
        n = len(front)
        rms = np.sqrt((audio[: n * 640].reshape(n, 640) ** 2).mean(1))
        gap = front[:, 66, 1] - front[:, 62, 1]
        assert np.corrcoef(rms, gap)[0, 1] > 0.7


def test_frames_show_the_mouth(synthetic_store):
    # dark mouth-interior pixels grow with the mouth opening
    cid = synthetic_store.ids()[0]
    frames, tr = synthetic_store.frames(cid), synthetic_store.track(cid)
    gap = tr["frontal"][:, 66, 1] - tr["frontal"][:, 62, 1]
    o, c = int(gap.argmax()), int(gap.argmin())

    def dark(t):
        lm = tr["landmarks"][t]
        x0, x1 = int(lm[48:60, 0].min()), int(lm[48:60, 0].max()) + 1
        y0, y1 = int(lm[48:60, 1].min()), int(lm[48:60, 1].max()) + 1
        return (frames[t, y0:y1, x0:x1].max(-1) < 90).sum()

    assert dark(o) > dark(c) + 20


def test_deterministic_and_fast(tmp_path):
    t0 = time.perf_counter()
    a = make_synthetic_store(tmp_path / "a", n_clips=4, n_frames=60, seed=3)
    elapsed = time.perf_counter() - t0
    b = make_synthetic_store(tmp_path / "b", n_clips=4, n_frames=60, seed=3)
    c = make_synthetic_store(tmp_path / "c", n_clips=1, n_frames=10, seed=4, with_audio=False)
    assert elapsed < 4.0, elapsed  # about 1.2 s here; the bound leaves room for a busy machine
    for cid in a.ids():
        ta, tb = a.track(cid), b.track(cid)
        assert all(np.array_equal(ta[k], tb[k]) for k in ("landmarks", "pose"))
        assert np.array_equal(a.audio(cid), b.audio(cid))
    assert not np.array_equal(a.track("syn000")["pose"], make_synthetic_store(tmp_path / "d", 1, 60, seed=4).track("syn000")["pose"])
    assert c.audio("syn000") is None and c.record("syn000")["has_audio"] is False
    assert not (c.root / "syn000" / "audio.wav").exists()
