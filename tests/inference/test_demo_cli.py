"""``rhythmhead demo``: the built-in photo + speech → a talking-head mp4 (a tiny random bundle keeps it fast; the bundled
models are exercised in test_bundled_models.py)."""
from __future__ import annotations

import subprocess
import sys

from rhythmhead.inference.demo_cli import builtin_inputs
from rhythmhead.media import io


def test_builtin_inputs_exist():
    with builtin_inputs() as (photo, speech):
        assert io.read_image(photo).shape[2] == 3
        assert 5 <= io.probe(speech).duration_s <= 8


def test_demo_writes_a_talking_head_with_the_speech(tmp_path, tiny_bundle):
    out = tmp_path / "sub" / "demo.mp4"
    proc = subprocess.run([sys.executable, "-m", "rhythmhead", "demo", "--out", str(out), "--models", str(tiny_bundle)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with builtin_inputs() as (_, speech):
        seconds = io.probe(speech).duration_s
        wave = io.load_audio(speech)
    probe = io.probe(out)
    assert probe.has_video and probe.has_audio and probe.fps == 25
    assert probe.width == probe.height  # the tiny bundle generates 64², the bundled models 256²
    assert abs(probe.n_frames / 25 - seconds) <= 0.1
    sound = io.load_audio(out)
    n = min(len(sound), len(wave))
    assert n > 0.9 * len(wave)
    assert [p.name for p in out.parent.iterdir()] == ["demo.mp4"]


def test_demo_into_a_directory_fails_cleanly(tmp_path, tiny_bundle):
    proc = subprocess.run([sys.executable, "-m", "rhythmhead", "demo", "--out", str(tmp_path), "--models",
                           str(tiny_bundle)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
