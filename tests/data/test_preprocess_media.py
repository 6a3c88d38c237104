"""Integration: preprocess two real talking clips from ../shared/media/talking_video and check the result."""
from __future__ import annotations

import numpy as np
import pytest

from rhythmhead.data.preprocess import preprocess_clip
from rhythmhead.data.store import ClipStore, write_manifest
from rhythmhead.geometry.pose import KEY_FRAME_SLACK, STABLE_68, eye_openness, mouth_openness
from rhythmhead.media.io import probe

pytestmark = pytest.mark.media

CLIPS = ("hdtf_radio10_clip0", "pcavs_00010")  # 29.97 fps 512² (2.1 s) and 25 fps 224² (4.3 s)


@pytest.fixture(scope="module")
def real_store(media_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("real_store")
    records = [preprocess_clip(media_dir / "talking_video" / f"{c}.mp4", root, c, c) for c in CLIPS]
    write_manifest(root, records)
    return ClipStore(root), media_dir


@pytest.mark.parametrize("clip", CLIPS)
def test_real_clip(real_store, clip):
    store, media_dir = real_store
    info = probe(media_dir / "talking_video" / f"{clip}.mp4")
    rec = store.record(clip)
    assert abs(rec["frames"] - info.duration_s * 25) <= 1 and rec["has_audio"]
    tr, frames = store.track(clip), store.frames(clip)
    n = rec["frames"]
    assert frames.shape == (n, 256, 256, 3) and tr["landmarks"].shape == (n, 68, 3) and tr["mesh"].shape == (n, 478, 3)
    audio = store.audio(clip)
    assert len(audio) == n * 640 and np.abs(audio).max() > 0.05
    pose = tr["pose"]
    # smooth pose: no jumps between consecutive frames (a lost or swapped track jumps by 20 degrees and more)
    step = np.abs(np.diff(pose[:, :3], axis=0)).max(1)
    assert step.max() < 0.15 and np.median(step) < 0.03
    assert np.abs(np.diff(pose[:, 3:], axis=0)).max() < 25.0
    # the frontalised stable points vary far less over time than the raw landmarks
    idx = list(STABLE_68)
    raw = tr["landmarks"][:, idx].std(0).mean()
    front = tr["frontal"][:, idx].std(0).mean()
    print(f"\n{clip}: landmark std over time raw {raw:.2f} px, frontal {front:.2f} px; "
          f"rotation range {np.degrees(np.ptp(pose[:, :3], 0)).round(1)} deg")
    assert front < 0.6 * raw
    # the face is where the paper crop puts it, or slid from there to keep the crop inside the frame (no padding)
    lm = tr["landmarks"]
    eye = (lm[:, 36:42, :2].mean(1) + lm[:, 42:48, :2].mean(1)) / 2
    assert np.all(np.abs(eye.mean(0) - [124.9, 99.9]) < 45)
    for edge in (frames[:, :2], frames[:, -2:], frames[:, :, :2], frames[:, :, -2:]):  # no black padding bars
        assert (edge.max(-1) < 10).mean() < 0.5
    # the key frame is frontal, with open eyes and a closed mouth
    ear = eye_openness(tr["frontal"])
    k = tr["key_frame"]
    assert ear[k] >= 0.9 * np.median(ear) and mouth_openness(tr["frontal"])[k] <= np.quantile(
        mouth_openness(tr["frontal"]), 0.3) + 0.05
    rot = np.abs(pose[:, :3]).sum(1)
    assert rot[k] <= rot.min() + KEY_FRAME_SLACK
