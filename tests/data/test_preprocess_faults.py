"""Faults of ``rhythmhead preprocess``: a killed (SIGKILL) or stopped (SIGTERM) run leaves no process behind and a valid
manifest of the clips it finished; reruns keep one failed.jsonl row per clip; runs sharing a store list a clip once."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rhythmhead.data import preprocess as preprocess_mod
from rhythmhead.data.store import DONE, ClipStore, ManifestWriter, read_manifest
from rhythmhead.media.io import write_video

# a 20 s clip keeps one worker busy while the other finishes a short one (~4 s each): the run is stopped then
REAL_CLIPS = ("news_german_20s", "pcavs_00010", "pcavs_731200067")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (from /proc: no psutil needed)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if _alive(child):
                out.add(child)
                todo.append(child)
    return out


def _wait(cond, timeout: float, what: str, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"preprocess ended ({proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout:.0f} s")
        time.sleep(0.05)


def _listed(store: Path) -> list[str]:
    try:
        return [r["id"] for r in read_manifest(store)]
    except Exception:  # noqa: BLE001 - not there yet
        return []


@pytest.mark.media
@pytest.mark.slow  # a subprocess with two workers that load torch and MediaPipe, on real clips (~12 s)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_stopped_run_leaves_no_process_and_a_valid_manifest(media_dir, tmp_path, cli, sig):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in REAL_CLIPS:
        shutil.copy(media_dir / "talking_video" / f"{name}.mp4", videos)
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-m", "rhythmhead", "preprocess", str(videos), "--out", str(store),
                             "--workers", "2", "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    kids: set[int] = set()
    try:
        # a short clip is finished (and listed) while a worker is busy with the long one
        _wait(lambda: _listed(store), 240, "clip in manifest.jsonl", proc)
        kids = _descendants(proc.pid)
        assert len(kids) >= 3, kids  # two workers and multiprocessing's resource tracker
        os.kill(proc.pid, sig)
        proc.wait(timeout=60)
        _wait(lambda: not any(_alive(k) for k in kids), 5, "end of the workers and the resource tracker")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for k in kids:  # survivors of a failed check
            if _alive(k):
                os.kill(k, signal.SIGKILL)
    err = proc.stderr.read()
    done = sorted(p.parent.name for p in store.glob(f"*/{DONE}"))
    assert done and ClipStore(store).ids() == done  # valid, and every finished clip is listed
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM
        assert len(err.strip().splitlines()) == 1 and "SIGTERM" in err, err  # no worker noise, no native log lines
        assert sorted(p.name for p in store.iterdir() if p.is_dir()) == done  # the workers removed their partial clips
        code, out, _ = cli(["preprocess", videos / f"{done[0]}.mp4", "--out", store, "--no-progress"])
        assert code == 0 and "0 ok, 0 failed, 1 already done" in out and f"{len(done)} clips in" in out
    else:
        assert proc.returncode == -signal.SIGKILL


def test_manifest_lists_each_clip_as_it_finishes(face_video, tmp_path, cli, monkeypatch):
    """A run killed at any point leaves the finished clips listed: the manifest grows clip by clip."""
    videos = tmp_path / "v"
    videos.mkdir()
    for name in ("a", "b"):
        shutil.copy(face_video, videos / f"{name}.mp4")
    store = tmp_path / "store"
    seen = []
    real = preprocess_mod.preprocess_clip

    def spy(src, out, clip_id, *args, **kwargs):
        seen.append(_listed(store))  # what a SIGKILL now would leave
        return real(src, out, clip_id, *args, **kwargs)

    monkeypatch.setattr(preprocess_mod, "preprocess_clip", spy)
    code, out, _ = cli(["preprocess", videos, "--out", store, "--no-progress"])
    assert code == 0 and seen == [[], ["a"]]
    assert ClipStore(store).ids() == ["a", "b"]


def test_rerun_keeps_one_failed_row_per_clip(face_video, tmp_path, cli):
    videos = tmp_path / "v"
    videos.mkdir()
    write_video(videos / "blank.mp4", np.zeros((10, 64, 64, 3), np.uint8), fps=25)
    write_video(videos / "dark.mp4", np.zeros((12, 64, 64, 3), np.uint8), fps=25)
    store = tmp_path / "store"

    def rows():
        path = store / "failed.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    for _ in range(3):
        code, *_ = cli(["preprocess", videos, "--out", store, "--no-progress"])
        assert code == 1
        assert sorted(r["id"] for r in rows()) == ["blank", "dark"]
    shutil.copy(face_video, videos / "blank.mp4")  # fixed: it now succeeds, and its row goes
    code, *_ = cli(["preprocess", videos, "--out", store, "--no-progress"])
    assert code == 1 and [r["id"] for r in rows()] == ["dark"]
    assert ClipStore(store).ids() == ["blank"]


def test_runs_sharing_a_store_list_a_clip_once(tmp_path):
    """A clip finished by one run (``.done`` written, line not yet appended) while another run rebuilds the manifest."""
    rec = {"id": "x", "source": "/v/x.mp4", "frames": 3, "seconds": 0.12, "has_audio": False, "speaker": "x"}
    mine, other = ManifestWriter(tmp_path), ManifestWriter(tmp_path)
    mine.rebuild()
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / DONE).write_text(json.dumps(rec))
    other.rebuild()  # lists x
    mine.add(rec)
    mine.add({**rec, "id": "y"})
    assert [r["id"] for r in read_manifest(tmp_path)] == ["x", "y"]
