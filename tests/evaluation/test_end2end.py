"""``rhythmhead evaluate end2end`` on two synthetic talking clips with a tiny random bundle (face scoring faked for speed).

The clips are the packaged portrait moving with the packaged speech; the face probe (MediaPipe + dlib on every output
frame, slow) is replaced by a stub that finds a face only in frames close to the real ones, which is enough to check the
protocol: reference/continuation split, the rows, the baselines, cross-identity columns and the report layout.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

ASSETS = Path(str(resources.files("rhythmhead") / "assets"))


def _clip(path: Path, seconds: float, offset_s: float, phase: float) -> Path:
    import cv2

    from rhythmhead.media.io import VideoWriter, load_audio, read_image

    img = read_image(ASSETS / "demo_photo.png")
    wave = load_audio(ASSETS / "demo_speech.wav", 16000)
    wave = wave[int(offset_s * 16000): int((offset_s + seconds) * 16000)]
    h, w = img.shape[:2]
    with VideoWriter(path, fps=25, audio=wave, sample_rate=16000, preset="ultrafast") as writer:
        for t in range(int(seconds * 25)):
            m = cv2.getRotationMatrix2D((w / 2, h / 2), 5 * np.sin(2 * np.pi * t / 20 + phase), 1.0)
            writer.write(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT))
    return path


class FakeProbe:
    """Landmarks: the real crop's landmarks are unknown here, so a fixed face; descriptors: the mean colour."""

    def __init__(self):
        from rhythmhead.face.landmarks import canonical_68

        self.face = canonical_68().astype(np.float32)

    def landmarks(self, frames):
        return np.repeat(self.face[None], len(frames), 0)

    def descriptors(self, frames):
        f = np.asarray(frames, np.float32).reshape(len(frames), -1, 3).mean(1)
        return np.concatenate([f, np.ones((len(frames), 125), np.float32)], 1)

    def close(self):
        pass


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    _clip(d / "a.mp4", 1.2, 0.9, 0.0)
    _clip(d / "b.mp4", 1.2, 3.0, 1.0)
    (d / "notes.txt").write_text("not a clip")
    return d


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from rhythmhead.inference.random_bundle import write_random_bundle

    return write_random_bundle(tmp_path_factory.mktemp("bundle"), "tiny", ablations=("no_warp",))


def test_end2end_report(clips_dir, bundle, tmp_path, monkeypatch):
    from rhythmhead.cli import main
    from rhythmhead.evaluation import end2end

    monkeypatch.setattr(end2end, "FaceProbe", FakeProbe)
    out = tmp_path / "r.json"
    main(["evaluate", "end2end", "--clips", str(clips_dir), "--models", str(bundle), "--out", str(out),
          "--max-frames", "10"])
    report = json.loads(out.read_text())
    methods, settings = report["methods"], report["settings"]
    assert report["task"] == "end2end"
    assert list(methods) == ["model", "model_upsampled", "model_no_warp", "gt_pose", "gt_motion", "static", "real"]
    assert settings["clip_names"] == ["a", "b"] and settings["ablations"] == ["no_warp"]
    a = settings["per_clip"]["a"]
    assert end2end.reference_frames(30) == 15 and settings["max_frames"] == 10
    # the static baseline (the reference's key frame) beats random networks on SSIM; gt rows use the real motion
    assert methods["static"]["ssim"] > methods["model"]["ssim"]
    assert a["gt_pose"]["std_rot_deg"] == pytest.approx(a["real"]["std_rot_deg"], rel=1e-5)
    assert a["static"]["std_rot_deg"] < 1e-6 < a["real"]["std_rot_deg"]
    for key in ("x_csim_ref", "x_sync_plan", "x_std_rot_deg", "sharp_face", "sharp_mouth", "x_sharp_face"):
        assert key in methods["model"]
    assert isinstance(methods["model"]["face_fd"], (float, str))
    assert np.isfinite(float(methods["model"]["sync_plan"]))


def test_clips_folder_errors(tmp_path):
    from rhythmhead.errors import InputError
    from rhythmhead.evaluation.end2end import list_clips

    with pytest.raises(InputError, match="clips folder not found"):
        list_clips(tmp_path / "none")
    with pytest.raises(InputError, match="no video clips"):
        list_clips(tmp_path)
