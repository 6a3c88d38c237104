"""``rhythmhead generate``: a good run, ``--jobs``, and one line + exit status 2 + no output for each kind of bad input."""
from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from rhythmhead.media.io import probe, write_wav

PHOTO = Path(str(resources.files("rhythmhead") / "assets" / "demo_photo.png"))


def base(tmp_path, bundle, reference=PHOTO, audio=None, **extra):
    argv = ["generate", "--reference", str(reference), "--audio", str(audio), "--out", str(tmp_path / "out.mp4"),
            "--models", str(bundle), "-q"]
    for key, value in extra.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def assert_failed_cleanly(code, err, tmp_path, *phrases):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert not (tmp_path / "out.mp4").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_generate_writes_video_and_summary(tmp_path, tiny_bundle, speech_1s, cli):
    code, out, err = cli(base(tmp_path, tiny_bundle, audio=speech_1s, motion_scale=0.5, seed=2,
                              save_intermediates=tmp_path / "inter"))
    assert code == 0, err
    info = probe(tmp_path / "out.mp4")
    assert info.has_video and info.has_audio and info.n_frames == 30
    assert "wrote" in out and "generator" in out and "frames/s" in out
    assert (tmp_path / "inter" / "poses.npy").is_file()


def test_missing_reference(tmp_path, tiny_bundle, speech_1s, cli):
    code, _, err = cli(base(tmp_path, tiny_bundle, reference=tmp_path / "nope.jpg", audio=speech_1s))
    assert_failed_cleanly(code, err, tmp_path, "nope.jpg", "no such file")


def test_photo_without_face(tmp_path, tiny_bundle, speech_1s, cli):
    from PIL import Image

    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(tmp_path / "wall.png")
    code, _, err = cli(base(tmp_path, tiny_bundle, reference=tmp_path / "wall.png", audio=speech_1s))
    assert_failed_cleanly(code, err, tmp_path, "wall.png", "no face")


def test_several_faces_warns_and_takes_the_largest(tmp_path, tiny_bundle, speech_1s, cli):
    from PIL import Image

    from rhythmhead.media.io import read_image

    img = read_image(PHOTO)
    Image.fromarray(np.concatenate([img, img[:, ::-1]], 1)).save(tmp_path / "two.png")
    code, _, err = cli(base(tmp_path, tiny_bundle, reference=tmp_path / "two.png", audio=speech_1s))
    assert code == 0, err
    assert "warning:" in err and "2 faces" in err and "largest" in err
    assert (tmp_path / "out.mp4").is_file()


def test_too_short_audio(tmp_path, tiny_bundle, cli):
    write_wav(tmp_path / "short.wav", 0.3 * np.sin(np.arange(3200) / 5.0), 16000)
    code, _, err = cli(base(tmp_path, tiny_bundle, audio=tmp_path / "short.wav"))
    assert_failed_cleanly(code, err, tmp_path, "short.wav", "too short", "minimum is 0.5 s")


def test_silent_audio(tmp_path, tiny_bundle, cli):
    write_wav(tmp_path / "silence.wav", np.zeros(32000), 16000)
    code, _, err = cli(base(tmp_path, tiny_bundle, audio=tmp_path / "silence.wav"))
    assert_failed_cleanly(code, err, tmp_path, "silence.wav", "silent")


def test_audio_over_the_length_limit(tmp_path, tiny_bundle, cli):
    rate = 16000
    tone = (0.2 * np.sin(np.arange(rate) * 0.3)).astype(np.float32)
    write_wav(tmp_path / "long.wav", np.tile(tone, 20 * 60), rate)  # 20 minutes
    code, _, err = cli(base(tmp_path, tiny_bundle, audio=tmp_path / "long.wav"))
    assert_failed_cleanly(code, err, tmp_path, "long.wav", "20.0 min", "limit of 10 min", "--max-seconds")


@pytest.mark.parametrize("damage", ["corrupt", "wrong_stage"])
def test_bad_checkpoint(tmp_path, tiny_bundle, speech_1s, cli, damage):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "models")
    if damage == "corrupt":
        (bundle / "motion.safetensors").write_bytes(b"\x00" * 64)
        phrase = "not a readable safetensors"
    else:
        shutil.copy(bundle / "expression.safetensors", bundle / "motion.safetensors")
        phrase = "is a 'expression' checkpoint, expected 'motion'"
    code, _, err = cli(base(tmp_path, bundle, audio=speech_1s))
    assert_failed_cleanly(code, err, tmp_path, "motion.safetensors", phrase)


def test_options_that_exclude_each_other(tmp_path, tiny_bundle, speech_1s, cli):
    np.save(tmp_path / "p.npy", np.zeros((4, 6), np.float32))
    code, _, err = cli(base(tmp_path, tiny_bundle, audio=speech_1s, still=True, pose_from=tmp_path / "p.npy"))
    assert code == 2 and "exclude" in err and not (tmp_path / "out.mp4").exists()


def test_bad_pose_file(tmp_path, tiny_bundle, speech_1s, cli):
    np.save(tmp_path / "p.npy", np.zeros((4, 5), np.float32))
    code, _, err = cli(base(tmp_path, tiny_bundle, audio=speech_1s, pose_from=tmp_path / "p.npy"))
    assert_failed_cleanly(code, err, tmp_path, "p.npy", "(T, 6)")


def test_jobs_load_models_once(tmp_path, tiny_bundle, speech_1s, cli, monkeypatch):
    from rhythmhead.inference import pipeline

    loads = []
    load = pipeline.TalkingHeadPipeline.load.__func__
    monkeypatch.setattr(pipeline.TalkingHeadPipeline, "load",
                        classmethod(lambda cls, *a, **k: loads.append(1) or load(cls, *a, **k)))
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(j) for j in [
        {"reference": str(PHOTO), "audio": str(speech_1s), "out": str(tmp_path / "a.mp4"), "still": True},
        {"reference": str(PHOTO), "audio": str(speech_1s), "out": str(tmp_path / "b.mp4"), "motion-scale": 2},
    ]) + "\n")
    code, out, err = cli(["generate", "--models", str(tiny_bundle), "--jobs", str(jobs), "-q"])
    assert code == 0, err
    assert loads == [1]
    assert (tmp_path / "a.mp4").is_file() and (tmp_path / "b.mp4").is_file()
    assert out.count("wrote") == 2


def test_jobs_file_with_unknown_option(tmp_path, tiny_bundle, cli):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"reference": "a", "audio": "b", "out": "c.mp4", "colour": "red"}) + "\n")
    code, _, err = cli(["generate", "--models", str(tiny_bundle), "--jobs", str(jobs)])
    assert code == 2 and "line 1" in err and "colour" in err


def test_unreadable_container_and_audio_only_reference(tmp_path, tiny_bundle, speech_1s, cli):
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x01garbage" * 100)
    code, _, err = cli(base(tmp_path, tiny_bundle, reference=tmp_path / "broken.mp4", audio=speech_1s))
    assert_failed_cleanly(code, err, tmp_path, "broken.mp4", "not a readable media file")
    code, _, err = cli(base(tmp_path, tiny_bundle, reference=speech_1s, audio=speech_1s))
    assert_failed_cleanly(code, err, tmp_path, "speech_1s.wav", "no video track")
