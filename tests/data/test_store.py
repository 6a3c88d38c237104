"""Tests for rhythmhead.data.store: manifest validation, track/frames/audio access, speaker split."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from rhythmhead.data.store import (ClipStore, fold_split, load_track, read_manifest, save_track, speaker_folds,
                                   speaker_split, write_manifest)
from rhythmhead.errors import InputError


def test_store_reads_everything(synthetic_store):
    store = synthetic_store
    assert len(store) == 4 and store.ids() == ["syn000", "syn001", "syn002", "syn003"]
    rec = store.record("syn001")
    assert set(rec) >= {"id", "source", "frames", "seconds", "has_audio", "speaker"}
    tr = store.track("syn001")
    assert tr["landmarks"].shape == (30, 68, 3) and tr["landmarks"].dtype == np.float32
    assert tr["mesh"].shape == (30, 478, 3) and tr["pose"].shape == (30, 6) and tr["frontal"].shape == (30, 68, 3)
    assert isinstance(tr["key_frame"], int) and 0 <= tr["key_frame"] < 30 and tr["fps"] == 25.0
    frames = store.frames("syn001")
    assert frames.shape == (30, 256, 256, 3) and frames.dtype == np.uint8
    audio = store.audio("syn001")
    assert audio.dtype == np.float32 and abs(len(audio) - 30 * 640) <= 640
    assert audio.shape == (len(audio),) and np.abs(audio).max() > 0.05
    assert "syn001" in store and "nope" not in store


def test_not_a_store(tmp_path):
    with pytest.raises(InputError, match="no manifest.jsonl") as err:
        ClipStore(tmp_path)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(InputError, match="not a folder"):
        ClipStore(tmp_path / "missing")


def test_bad_manifest_lines(tmp_path):
    (tmp_path / "manifest.jsonl").write_text("{not json}\n")
    with pytest.raises(InputError, match="line 1 is not valid JSON"):
        ClipStore(tmp_path)
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"id": "a", "frames": 3}) + "\n")
    with pytest.raises(InputError, match="lacks"):
        ClipStore(tmp_path)
    good = {"id": "a", "source": "x", "frames": 3, "seconds": 0.12, "has_audio": False, "speaker": "s"}
    (tmp_path / "manifest.jsonl").write_text((json.dumps(good) + "\n") * 2)
    with pytest.raises(InputError, match="duplicate"):
        ClipStore(tmp_path)


def test_unknown_clip_and_missing_files(synthetic_store, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synthetic_store.root, root)
    store = ClipStore(root)
    with pytest.raises(InputError, match="no clip"):
        store.track("zzz")
    (root / "syn000" / "track.npz").unlink()
    with pytest.raises(InputError, match="track file is missing"):
        store.track("syn000")
    (root / "syn001" / "frames.mp4").unlink()
    with pytest.raises(InputError, match="frames.mp4 is missing"):
        store.frames("syn001")


def test_track_round_trip_and_validation(tmp_path):
    rng = np.random.default_rng(0)
    arrays = dict(landmarks=rng.normal(size=(5, 68, 3)), mesh=rng.normal(size=(5, 478, 3)),
                  pose=rng.normal(size=(5, 6)), frontal=rng.normal(size=(5, 68, 3)))
    path = save_track(tmp_path / "t.npz", **arrays, key_frame=2)
    back = load_track(path)
    assert back["key_frame"] == 2 and back["fps"] == 25.0
    for k, v in arrays.items():
        assert back[k].dtype == np.float32 and np.allclose(back[k], v, atol=1e-6)
    with pytest.raises(InputError, match="key_frame"):
        save_track(tmp_path / "u.npz", **arrays, key_frame=5)
    bad = dict(arrays, mesh=arrays["mesh"][:4])
    with pytest.raises(InputError, match="mesh"):
        save_track(tmp_path / "v.npz", **bad, key_frame=0)
    assert not (tmp_path / "v.npz").exists() and not (tmp_path / "u.npz").exists()


def test_write_manifest_round_trip(tmp_path):
    recs = [{"id": f"c{i}", "source": f"/v/{i}.mp4", "frames": 10 + i, "seconds": 0.4, "has_audio": i % 2 == 0,
             "speaker": f"s{i // 2}"} for i in range(4)]
    write_manifest(tmp_path, recs)
    assert read_manifest(tmp_path) == recs
    assert not list(tmp_path.glob(".*tmp*"))


def _records(n_clips, n_speakers):
    return [{"id": f"c{i}", "speaker": f"s{i % n_speakers}"} for i in range(n_clips)]


@pytest.mark.parametrize("n_speakers", [2, 3, 5, 10])
def test_speaker_split_disjoint(n_speakers):
    recs = _records(30, n_speakers)
    train, val = speaker_split(recs, val_fraction=0.2, seed=1)
    assert sorted(train + val) == sorted(r["id"] for r in recs)
    spk = {r["id"]: r["speaker"] for r in recs}
    assert train and val
    assert not {spk[i] for i in train} & {spk[i] for i in val}
    assert speaker_split(recs, 0.2, seed=1) == (train, val)  # deterministic


def test_speaker_split_edge_cases():
    train, val = speaker_split(_records(5, 1))
    assert len(train) == 5 and val == []
    train, val = speaker_split(_records(6, 2), val_fraction=0.0)
    assert len(val) == 3  # clamped to one speaker
    train, val = speaker_split(_records(6, 2), val_fraction=1.0)
    assert len(train) == 3
    assert speaker_split([]) == ([], [])
    seeds = {tuple(speaker_split(_records(20, 10), 0.3, seed=s)[1]) for s in range(5)}
    assert len(seeds) > 1  # the seed matters


def _sized_records(seed=0):
    """25 clips of 14 speakers, some with several clips, frame counts from 50 to 1500."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(25):
        spk = f"s{min(i, 13) if i < 14 else rng.integers(0, 14)}"
        recs.append({"id": f"c{i:02d}", "speaker": spk, "frames": int(rng.choice([50, 74, 74, 120, 250, 500, 1500]))})
    return recs


@pytest.mark.parametrize("k", [2, 3, 5])
def test_speaker_folds_are_disjoint_and_cover_every_clip_once(k):
    recs = _sized_records()
    folds = speaker_folds(recs, k, seed=3)
    assert len(folds) == k and all(folds)
    ids = [i for f in folds for i in f]
    assert sorted(ids) == sorted(r["id"] for r in recs)  # every clip exactly once
    spk = {r["id"]: r["speaker"] for r in recs}
    speakers = [{spk[i] for i in f} for f in folds]
    for a in range(k):
        for b in range(a + 1, k):
            assert not speakers[a] & speakers[b]
    frames = {r["id"]: r["frames"] for r in recs}
    loads = [sum(frames[i] for i in f) for f in folds]
    assert max(loads) - min(loads) <= max(frames.values())  # balanced within one big speaker
    order = [r["id"] for r in recs]
    assert all(f == sorted(f, key=order.index) for f in folds)  # record order kept
    assert speaker_folds(recs, k, seed=3) == folds  # deterministic
    assert len({tuple(map(tuple, speaker_folds(recs, k, seed=s))) for s in range(4)}) > 1  # the seed matters


def test_fold_split_holds_out_one_fold():
    recs = _sized_records()
    folds = speaker_folds(recs, 4, seed=0)
    for f in range(4):
        train, held = fold_split(recs, 4, f, seed=0)
        assert held == folds[f] and not set(train) & set(held)
        assert sorted(train + held) == sorted(r["id"] for r in recs)


def test_speaker_folds_bad_k():
    recs = _records(6, 3)
    for k in (0, 1):
        with pytest.raises(InputError, match="at least 2 folds"):
            speaker_folds(recs, k)
    with pytest.raises(InputError, match="at least 4 speakers"):
        speaker_folds(recs, 4)
    assert len(speaker_folds(recs, 3)) == 3  # one speaker per fold
    with pytest.raises(InputError, match="outside"):
        fold_split(recs, 3, 3)
