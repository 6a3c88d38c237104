"""Tests for ``rhythmhead preprocess``: bad input, idempotence, failures, manifest, workers."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from rhythmhead.cli import main
from rhythmhead.data.store import ClipStore
from rhythmhead.media.io import write_video, write_wav


def _run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["preprocess", *map(str, args)])
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture
def bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no video here")
    (tmp_path / "notes.txt").write_text("not a video")
    write_wav(tmp_path / "speech.wav", np.zeros(1600, np.float32), 16000)
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    return tmp_path


@pytest.mark.parametrize("name, message", [
    ("missing.mp4", "does not exist"),
    ("empty", "has no videos"),
    ("notes.txt", ""),
    ("speech.wav", "is not a video"),
    ("corrupt.mp4", ""),
])
def test_bad_input_is_one_line_exit_2(bad_inputs, capsys, name, message):
    store = bad_inputs / "store"
    code, _, err = _run([bad_inputs / name, "--out", store, "--no-progress"], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and name in lines[0] and message in lines[0]
    assert "Traceback" not in err
    assert not store.exists()


def test_bad_shard(face_video, tmp_path, capsys):
    code, _, err = _run([face_video, "--out", tmp_path / "s", "--shard", "3/2"], capsys)
    assert code == 2 and "--shard" in err


def test_run_resume_and_failures(face_video, tmp_path, capsys):
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    shutil.copy(face_video, videos / "astro.mp4")
    shutil.copy(face_video, videos / "sub" / "astro_b.mp4")
    write_video(videos / "blank.mp4", np.zeros((10, 64, 64, 3), np.uint8), fps=25)
    store = tmp_path / "store"
    code, out, _ = _run([videos, "--out", store, "--no-progress"], capsys)
    assert code == 1  # one clip failed
    assert "2 ok, 1 failed, 0 already done" in out
    s = ClipStore(store)
    assert s.ids() == ["astro", "astro_b"] and s.record("astro")["frames"] == 30
    failed = [json.loads(line) for line in (store / "failed.jsonl").read_text().splitlines()]
    assert len(failed) == 1 and failed[0]["id"] == "blank" and "no face" in failed[0]["reason"]
    # a partial clip folder (no .done) is redone; a finished one is skipped
    (store / "astro_b" / ".done").unlink()
    (store / "astro_b" / "track.npz").unlink()
    (videos / "blank.mp4").unlink()
    code, out, _ = _run([videos, "--out", store, "--no-progress"], capsys)
    assert code == 0 and "1 ok, 0 failed, 1 already done" in out
    assert ClipStore(store).ids() == ["astro", "astro_b"] and (store / "astro_b" / "track.npz").is_file()


@pytest.mark.slow  # two spawned workers each import torch and MediaPipe (~10 s on 2 busy cores)
def test_workers_shards_and_speaker_map(face_video, tmp_path, capsys):
    videos = tmp_path / "v"
    videos.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(face_video, videos / f"{name}.mp4")
    spk = tmp_path / "speakers.json"
    spk.write_text(json.dumps({"a": "same", "c": "same"}))
    store = tmp_path / "store"
    code, out, _ = _run([videos, "--out", store, "--shard", "1/2", "--no-progress"], capsys)
    assert code == 0 and ClipStore(store).ids() == ["b"]
    code, out, _ = _run([videos, "--out", store, "--workers", "2", "--speaker-map", spk, "--no-progress"], capsys)
    assert code == 0 and "2 ok, 0 failed, 1 already done" in out
    recs = {r["id"]: r["speaker"] for r in ClipStore(store).manifest()}
    assert recs == {"a": "same", "b": "b", "c": "same"}


def test_find_videos_skips_the_store_and_hidden_files(face_video, tmp_path):
    from rhythmhead.data.preprocess_run import find_videos

    root = tmp_path / "in"
    (root / "store" / "clip").mkdir(parents=True)
    (root / ".cache").mkdir()
    shutil.copy(face_video, root / "a.MP4")
    shutil.copy(face_video, root / "store" / "clip" / "frames.mp4")
    shutil.copy(face_video, root / ".cache" / "b.mp4")
    assert find_videos([root, root / "a.MP4"], exclude=root / "store") == [root / "a.MP4"]
