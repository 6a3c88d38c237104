"""``rhythmhead demo``: the data-path video with the built-in inputs (fake reference + the real command)."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from rhythmhead.media import io


@dataclass
class _FakeReference:
    frames: np.ndarray
    landmarks: np.ndarray
    pose: np.ndarray
    key_frame: int = 0


def _fake_reference(path):
    """A static grey 'photo' with a plausible 68-point face (for testing without the face stage)."""
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    pts = np.stack([128 + 60 * np.cos(t), 128 + 80 * np.sin(t), np.zeros(68)], axis=1).astype(np.float32)
    return _FakeReference(np.full((1, 256, 256, 3), 90, np.uint8), pts[None], np.array([[0, 0.2, 0, 0, 0, 0]], np.float32))


def test_demo_with_fake_reference(tmp_path, monkeypatch):
    from rhythmhead.inference import demo_cli

    import types

    fake = types.ModuleType("rhythmhead.data.preprocess")
    fake.prepare_reference = _fake_reference
    monkeypatch.setitem(sys.modules, "rhythmhead.data.preprocess", fake)
    import rhythmhead.data as data_pkg

    monkeypatch.setattr(data_pkg, "preprocess", fake, raising=False)
    out = tmp_path / "sub" / "demo.mp4"
    short = tmp_path / "speech.wav"  # the first 2.5 s of the built-in speech keep the test fast
    with demo_cli.builtin_inputs() as (photo, speech):
        assert 5 <= io.probe(speech).duration_s <= 8
        io.write_wav(short, io.load_audio(speech)[:40000], 16000)
        info = demo_cli.run_demo(out, photo, short)
    wave = io.load_audio(short)
    seconds = len(wave) / 16000
    probe = io.probe(out)
    assert probe.has_video and probe.has_audio and probe.fps == 25
    assert (probe.width, probe.height) == (512, 512) and info["frames"] == probe.n_frames
    assert abs(probe.n_frames / 25 - seconds) < 0.1 and abs(probe.duration_s - seconds) < 0.1
    frames, _ = io.read_video(out)
    # alive: the level bar changes from frame to frame although the crop is static
    assert np.abs(np.diff(frames.astype(np.int16), axis=0)).sum(axis=(1, 2, 3)).astype(bool).mean() > 0.5
    sound = io.load_audio(out)
    n = min(len(sound), len(wave))
    assert np.corrcoef(sound[:n], wave[:n])[0, 1] > 0.9
    assert [p.name for p in out.parent.iterdir()] == ["demo.mp4"]


@pytest.mark.slow
def test_demo_command_end_to_end(tmp_path):
    """The real command, with the real reference preparation (skipped only while that stage does not exist)."""
    try:
        from rhythmhead.data.preprocess import prepare_reference  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"reference preparation not built yet: {exc}")
    out = tmp_path / "tmp" / "demo.mp4"
    proc = subprocess.run([sys.executable, "-m", "rhythmhead", "demo", "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout
    from rhythmhead.inference.demo_cli import builtin_inputs

    with builtin_inputs() as (_, speech):
        seconds = io.probe(speech).duration_s
    probe = io.probe(out)
    assert probe.has_video and probe.has_audio
    assert abs(probe.duration_s - seconds) <= 0.1 and abs(probe.n_frames / 25 - seconds) <= 0.1
    assert io.load_audio(out).size > 0
    frames, _ = io.read_video(out, max_frames=1)
    assert frames[0].std() > 20  # a real picture, not a blank frame


def test_demo_to_a_directory_fails_cleanly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rhythmhead", "demo", "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and str(tmp_path) in proc.stderr
