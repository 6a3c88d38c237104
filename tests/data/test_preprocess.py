"""Tests for rhythmhead.data.preprocess on small videos made on the fly (no ../shared needed)."""
from __future__ import annotations

import numpy as np
import pytest

from rhythmhead.data.preprocess import prepare_reference, preprocess_clip
from rhythmhead.data.store import ClipStore, load_track, write_manifest
from rhythmhead.errors import InputError
from rhythmhead.media.io import probe, read_video, write_video


def test_preprocess_clip_writes_a_valid_clip(face_video, tmp_path):
    rec = preprocess_clip(face_video, tmp_path, "astro", "nasa")
    assert rec["frames"] == 30 and rec["has_audio"] and rec["speaker"] == "nasa"  # 1.2 s at 25 fps
    clip = tmp_path / "astro"
    assert (clip / ".done").is_file() and (clip / "audio.wav").is_file()
    assert not list(clip.glob(".*tmp*"))
    frames, fps = read_video(clip / "frames.mp4")
    assert frames.shape == (30, 256, 256, 3) and fps == 25
    tr = load_track(clip / "track.npz")
    lm = tr["landmarks"]
    assert lm.shape == (30, 68, 3) and tr["mesh"].shape == (30, 478, 3)
    # landmarks sit where the crop puts a face: eyes near (125, 100), face about 112 px across
    eye = (lm[:, 36:42, :2].mean(1) + lm[:, 42:48, :2].mean(1)) / 2
    assert np.allclose(eye.mean(0), [124.9, 99.9], atol=6)
    assert 90 < np.ptp(lm[0, :, 0]) < 135
    # the sliding face is followed by the (smoothed) crop; the still head has a near-zero, steady rotation
    assert np.abs(tr["pose"][:, :3]).max() < 0.35 and np.abs(np.diff(tr["pose"][:, :3], axis=0)).max() < 0.05
    write_manifest(tmp_path, [rec])
    store = ClipStore(tmp_path)
    assert store.audio("astro").shape == (30 * 640,)


def test_prepare_reference_photo_and_video(face_video, astronaut_frames, tmp_path):
    from PIL import Image

    photo = tmp_path / "astro.png"
    Image.fromarray(astronaut_frames(1, size=400)[0]).save(photo)
    ref = prepare_reference(photo)
    assert ref.is_image and ref.frames.shape == (1, 256, 256, 3) and ref.key_frame == 0
    assert ref.boxes.shape == (1, 3) and ref.source_size == (400, 400)
    assert ref.landmarks.shape == (1, 68, 3) and ref.pose.shape == (1, 6) and ref.found.all()
    vid = prepare_reference(face_video)
    assert not vid.is_image and vid.frames.shape == (30, 256, 256, 3) and vid.mesh.shape == (30, 478, 3)
    assert 0 <= vid.key_frame < 30
    # the crop boxes follow the face sliding right (0.4 px per source frame)
    assert vid.boxes[-1, 0] > vid.boxes[0, 0]


def test_no_face_and_audio_only(tmp_path):
    from rhythmhead.media.io import write_wav

    blank = tmp_path / "blank.mp4"
    write_video(blank, np.zeros((10, 64, 64, 3), np.uint8), fps=25)
    with pytest.raises(InputError, match="no face found") as err:
        preprocess_clip(blank, tmp_path / "out", "blank", "x")
    assert "blank.mp4" in str(err.value) and not (tmp_path / "out" / "blank").exists()
    wav = tmp_path / "speech.wav"
    write_wav(wav, np.zeros(1600, np.float32), 16000)
    with pytest.raises(InputError, match="no video track"):
        prepare_reference(wav)


def test_gaps_are_interpolated(astronaut_frames, tmp_path):
    frames = astronaut_frames(20)
    frames[5:8] = 0  # three frames without a face
    path = tmp_path / "gappy.mp4"
    write_video(path, frames, fps=25)
    ref = prepare_reference(path)
    assert list(np.nonzero(~ref.found)[0]) == [5, 6, 7]
    assert np.isfinite(ref.landmarks).all()
    mid = ref.landmarks[6, 30]
    assert np.linalg.norm(mid - (ref.landmarks[4, 30] + ref.landmarks[8, 30]) / 2) < 2.0
    frames[2:18] = 0  # now most frames lack a face
    write_video(path, frames, fps=25)
    with pytest.raises(InputError, match="no face found in 80%"):
        prepare_reference(path)


def test_silent_audio_track_counts_as_no_audio(astronaut_frames, tmp_path):
    path = tmp_path / "quiet.mp4"
    write_video(path, astronaut_frames(10), fps=25, audio=np.zeros(6400, np.float32), sample_rate=16000)
    assert probe(path).has_audio
    rec = preprocess_clip(path, tmp_path / "s", "quiet", "q")
    assert rec["has_audio"] is False and not (tmp_path / "s" / "quiet" / "audio.wav").exists()


def test_several_faces_follow_the_largest_central_one(astronaut_frames, tmp_path):
    import cv2
    from PIL import Image

    big = astronaut_frames(1, size=400)[0]
    small = cv2.resize(big, (300, 300), interpolation=cv2.INTER_AREA)
    canvas = np.full((600, 1000, 3), 90, np.uint8)
    canvas[100:500, 300:700] = big
    canvas[20:320, 680:980] = small  # overlaps the big picture's corner; both faces are detected
    path = tmp_path / "two.png"
    Image.fromarray(canvas).save(path)
    with pytest.warns(UserWarning, match="2 faces"):
        ref = prepare_reference(path)
    x0, y0, side = ref.boxes[0]
    centre = (x0 + side / 2, y0 + side / 2)
    assert 300 < centre[0] < 700 and 100 < centre[1] < 500  # the big, central face


def test_audio_longer_than_video(astronaut_frames, tmp_path):
    path = tmp_path / "long_audio.mp4"
    t = np.arange(32000) / 16000  # 2 s of audio under 0.8 s of video
    write_video(path, astronaut_frames(20), fps=25, audio=(0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32))
    assert probe(path).duration_s > 1.5
    rec = preprocess_clip(path, tmp_path / "s", "long", "x")
    assert rec["frames"] == 20 and rec["has_audio"]
    frames, _ = read_video(tmp_path / "s" / "long" / "frames.mp4")
    assert len(frames) == 20
    write_manifest(tmp_path / "s", [rec])
    assert ClipStore(tmp_path / "s").audio("long").shape == (20 * 640,)
