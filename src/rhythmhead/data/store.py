"""The clip store: preprocessed clips on disk, and the one reader every training stage uses.

Layout (written by ``rhythmhead preprocess`` and by :func:`rhythmhead.data.synthetic.make_synthetic_store`)::

    STORE/
      manifest.jsonl          one JSON object per finished clip: id, source, frames, seconds, has_audio, speaker
      failed.jsonl            clips that could not be preprocessed (source, reason), one row per source; optional
      <clip_id>/
        frames.mp4            the 256×256 face crop at 25 fps (H.264)
        audio.wav             16 kHz mono speech; absent for silent videos
        track.npz             landmarks (T,68,3), mesh (T,478,3), pose (T,6), frontal (T,68,3) float32,
                              key_frame () int, fps () float  — units as in docs/ARCHITECTURE.md
        .done                 marker, written last: the clip directory is complete; it holds the clip's manifest
                              record (JSON), so the manifest can always be rebuilt from the markers
      .lock                   taken (flock) while manifest.jsonl or failed.jsonl is written: runs may share a store

The manifest is validated when the store is opened, so a wrong folder fails at startup with one line naming it.
While ``rhythmhead preprocess`` runs, :class:`ManifestWriter` keeps the manifest listing every finished clip (rebuilt
from the markers at the start and end, one appended line per finished clip), so a killed run leaves a valid manifest;
:func:`record_failure` keeps one failed.jsonl row per source, the latest.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..common import CROP as CROP_SIZE
from ..common import FPS
from ..errors import InputError

MANIFEST = "manifest.jsonl"
FAILED = "failed.jsonl"
DONE = ".done"
LOCK = ".lock"
FRAMES = "frames.mp4"
AUDIO = "audio.wav"
TRACK = "track.npz"
RECORD_KEYS = ("id", "source", "frames", "seconds", "has_audio", "speaker")
# name -> trailing shape (after T) of the float32 arrays in track.npz
TRACK_ARRAYS: dict[str, tuple[int, ...]] = {"landmarks": (68, 3), "mesh": (478, 3), "pose": (6,), "frontal": (68, 3)}

__all__ = ["ClipStore", "speaker_split", "speaker_folds", "fold_split", "read_manifest", "write_manifest", "save_track", "load_track", "validate_record",
           "finished_records", "ManifestWriter", "record_failure", "store_lock"]


def validate_record(record: Any, where: str) -> dict:
    """Check one manifest record (keys and types); returns it, or raises InputError naming ``where``."""
    if not isinstance(record, dict):
        raise InputError("manifest line is not a JSON object", where)
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise InputError(f"manifest record lacks {', '.join(missing)}", where)
    if not isinstance(record["id"], str) or not record["id"] or "/" in record["id"]:
        raise InputError(f"manifest record has a bad id {record['id']!r}", where)
    if not isinstance(record["frames"], int) or record["frames"] <= 0:
        raise InputError(f"manifest record {record['id']} has a bad frame count {record['frames']!r}", where)
    if not isinstance(record["has_audio"], bool):
        raise InputError(f"manifest record {record['id']} has a non-boolean has_audio", where)
    if not isinstance(record["speaker"], str) or not record["speaker"]:
        raise InputError(f"manifest record {record['id']} has a bad speaker {record['speaker']!r}", where)
    return record


def read_manifest(root: str | Path) -> list[dict]:
    """The validated records of ``root/manifest.jsonl`` (InputError when the folder is not a clip store)."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise InputError("is not a folder (expected a clip store made by `rhythmhead preprocess`)", root)
    if not path.is_file():
        raise InputError(f"is not a clip store: no {MANIFEST} (make one with `rhythmhead preprocess VIDEOS --out {root}`)", root)
    records, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"line {n} is not valid JSON ({exc.msg})", path) from None
        validate_record(record, f"{path}:{n}")
        if record["id"] in seen:
            raise InputError(f"line {n}: duplicate clip id {record['id']}", path)
        seen.add(record["id"])
        records.append(record)
    return records


def write_manifest(root: str | Path, records: Iterable[dict]) -> Path:
    """Write ``root/manifest.jsonl`` atomically (temp file + rename), one record per line in the given order."""
    from ..media.io import atomic_path

    root = Path(root)
    path = root / MANIFEST
    text = "".join(json.dumps(validate_record(dict(r), str(path)), sort_keys=True) + "\n" for r in records)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path


def finished_records(root: str | Path) -> list[dict]:
    """The records held by the ``.done`` markers of the finished clip folders under ``root``, sorted by id.

    A marker that is empty or not a valid record (e.g. from an older version) is skipped: that clip counts as unfinished.
    """
    out = []
    root = Path(root)
    if not root.is_dir():
        return out
    for marker in sorted(root.glob(f"*/{DONE}")):
        try:
            record = validate_record(json.loads(marker.read_text(encoding="utf-8")), str(marker))
        except (InputError, json.JSONDecodeError, OSError, UnicodeDecodeError):
            continue
        if record["id"] == marker.parent.name:
            out.append(record)
    return sorted(out, key=lambda r: r["id"])


@contextlib.contextmanager
def store_lock(root: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``root/.lock`` (``flock``; released when the block ends or the process dies)."""
    fd = os.open(Path(root) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _rows(path: Path) -> list[tuple[str, Any]]:
    """``(line, parsed JSON or None)`` for every non-blank line of ``path`` (none when it is missing)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                out.append((line, json.loads(line)))
            except json.JSONDecodeError:
                out.append((line, None))
    return out


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


class ManifestWriter:
    """Keeps ``root/manifest.jsonl`` listing every finished clip while a run adds clips to the store.

    :meth:`rebuild` rewrites the file from the ``.done`` markers (atomically); :meth:`add` appends one record with a
    single ``write`` in append mode, so a run killed at any moment leaves a valid manifest of the clips it finished.
    Both hold :func:`store_lock`. When another run sharing the store has rebuilt the file since this writer last wrote
    it (a new inode), :meth:`add` first reads it, so a clip that rebuild already listed is not listed twice.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.path = self.root / MANIFEST
        self._inode: int | None = None

    def rebuild(self) -> list[dict]:
        """Rewrite the manifest from the markers; returns the finished records (sorted by id)."""
        with store_lock(self.root):
            records = finished_records(self.root)
            write_manifest(self.root, records)
            self._inode = _inode(self.path)
        return records

    def add(self, record: dict) -> None:
        """Append one finished clip's record."""
        line = json.dumps(validate_record(dict(record), str(self.path)), sort_keys=True) + "\n"
        with store_lock(self.root):
            if self._inode != _inode(self.path):
                self._inode = _inode(self.path)
                if any(isinstance(r, dict) and r.get("id") == record["id"] for _, r in _rows(self.path)):
                    return
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode("utf-8"))
                self._inode = os.fstat(fd).st_ino
            finally:
                os.close(fd)


def record_failure(root: str | Path, source: str, entry: dict | None) -> None:
    """Make ``entry`` the one row of ``source`` in ``root/failed.jsonl`` (None: drop its row; the clip now succeeded).

    The file is rewritten atomically under :func:`store_lock`, so reruns never pile up rows for the same clip.
    """
    from ..media.io import atomic_path

    path = Path(root) / FAILED
    with store_lock(root):
        rows = _rows(path)
        kept = [line for line, r in rows if isinstance(r, dict) and r.get("source") != source]
        if entry is not None:
            kept.append(json.dumps(entry))
        if kept == [line for line, _ in rows]:
            return
        with atomic_path(path) as tmp:
            Path(tmp).write_text("".join(x + "\n" for x in kept), encoding="utf-8")


def save_track(path: str | Path, *, landmarks, mesh, pose, frontal, key_frame: int, fps: float = FPS) -> Path:
    """Write a clip's track.npz atomically; arrays are stored float32 (validated as :func:`load_track` reads them)."""
    from ..media.io import atomic_path

    path = Path(path)
    arrays = {"landmarks": landmarks, "mesh": mesh, "pose": pose, "frontal": frontal}
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
    _check_track(arrays, int(key_frame), path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object keeps numpy from appending ".npz" to the temp name
            np.savez(fh, **arrays, key_frame=np.int64(key_frame), fps=np.float64(fps))
    return path


def _check_track(arrays: dict[str, np.ndarray], key_frame: int, where: Path) -> int:
    n = arrays["pose"].shape[0] if arrays["pose"].ndim == 2 else -1
    for name, trail in TRACK_ARRAYS.items():
        a = arrays[name]
        if a.shape != (n, *trail) or n <= 0:
            raise InputError(f"track array {name} has shape {a.shape}, expected (T, {', '.join(map(str, trail))})", where)
        if not np.isfinite(a).all():
            raise InputError(f"track array {name} holds NaN or inf", where)
    if not 0 <= key_frame < n:
        raise InputError(f"track key_frame {key_frame} is outside 0..{n - 1}", where)
    return n


def load_track(path: str | Path) -> dict[str, Any]:
    """Read and validate a track.npz: float32 arrays, ``key_frame`` int and ``fps`` float."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            out: dict[str, Any] = {k: data[k].astype(np.float32, copy=False) for k in TRACK_ARRAYS}
            out["key_frame"] = int(data["key_frame"])
            out["fps"] = float(data["fps"])
    except FileNotFoundError:
        raise InputError("track file is missing (re-run `rhythmhead preprocess`)", path) from None
    except (KeyError, ValueError, OSError) as exc:
        raise InputError(f"unreadable track file ({exc})", path) from None
    _check_track(out, out["key_frame"], path)
    return out


class ClipStore:
    """Read access to a clip store folder (see the module docstring for the layout).

    Args:
        root: the store folder; its manifest is read and validated here (InputError naming the folder otherwise).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._records = read_manifest(self.root)
        self._by_id = {r["id"]: r for r in self._records}

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, clip_id: object) -> bool:
        return clip_id in self._by_id

    def __repr__(self) -> str:
        return f"ClipStore({str(self.root)!r}, clips={len(self)})"

    def manifest(self) -> list[dict]:
        """All records (copies), in manifest order."""
        return [dict(r) for r in self._records]

    def ids(self) -> list[str]:
        """Clip ids in manifest order."""
        return [r["id"] for r in self._records]

    def record(self, clip_id: str) -> dict:
        """The manifest record of one clip."""
        return dict(self._record(clip_id))

    def clip_dir(self, clip_id: str) -> Path:
        """``root/<clip_id>``."""
        return self.root / self._record(clip_id)["id"]

    def _record(self, clip_id: str) -> dict:
        try:
            return self._by_id[clip_id]
        except KeyError:
            raise InputError(f"no clip {clip_id!r} in this store", self.root) from None

    def track(self, clip_id: str) -> dict[str, Any]:
        """``landmarks (T,68,3)``, ``mesh (T,478,3)``, ``pose (T,6)``, ``frontal (T,68,3)`` float32, ``key_frame``, ``fps``."""
        track = load_track(self.clip_dir(clip_id) / TRACK)
        n = self._record(clip_id)["frames"]
        if track["pose"].shape[0] != n:
            raise InputError(f"track has {track['pose'].shape[0]} frames, manifest says {n}", self.clip_dir(clip_id) / TRACK)
        return track

    def frames(self, clip_id: str) -> np.ndarray:
        """The decoded crop video ``(T,256,256,3)`` uint8 RGB."""
        from ..media.io import read_video

        path = self.clip_dir(clip_id) / FRAMES
        if not path.is_file():
            raise InputError("frames.mp4 is missing (re-run `rhythmhead preprocess`)", path)
        frames, _fps = read_video(path)
        if frames.ndim != 4 or frames.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
            raise InputError(f"crop video has shape {frames.shape}, expected (T, 256, 256, 3)", path)
        return frames

    def audio(self, clip_id: str, rate: int = 16000) -> np.ndarray | None:
        """Mono float32 audio ``(N,)`` at ``rate`` Hz, or None for a clip without audio."""
        from ..media.io import load_audio

        record = self._record(clip_id)
        path = self.clip_dir(clip_id) / AUDIO
        if not record["has_audio"]:
            return None
        if not path.is_file():
            raise InputError("audio.wav is missing although the manifest says the clip has audio", path)
        return load_audio(path, rate)


def speaker_split(records: Sequence[dict], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split clip ids into (train, val) so that no speaker is in both.

    Speakers are shuffled with ``seed`` and ``round(val_fraction · n_speakers)`` of them go to validation, clamped so
    that each side has at least one speaker whenever there are two or more (one speaker: everything is training).
    Ids keep the records' order within each side.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    speakers = sorted({r["speaker"] for r in records})
    order = np.random.default_rng(seed).permutation(len(speakers))
    n_val = int(round(val_fraction * len(speakers)))
    if len(speakers) >= 2:
        n_val = min(max(n_val, 1), len(speakers) - 1)
    else:
        n_val = 0
    val_speakers = {speakers[i] for i in order[:n_val]}
    train = [r["id"] for r in records if r["speaker"] not in val_speakers]
    val = [r["id"] for r in records if r["speaker"] in val_speakers]
    return train, val


def speaker_folds(records: Sequence[dict], k: int, seed: int = 0, tries: int = 256) -> list[list[str]]:
    """Deal the clips into ``k`` speaker-disjoint folds for cross-validation; every clip is in exactly one fold.

    A deal takes the speakers in a random order and gives each to the fold with the fewest frames so far (then the
    fewest clips). ``tries`` deals are drawn from ``seed`` and the best balanced one is kept (smallest sum of the
    relative spreads, max − min over total, of the folds' frame and clip counts), so the seed picks one of many
    balanced partitions. Ids keep the
    records' order within a fold. A record without ``frames`` counts one frame.
    InputError when k < 2 or there are fewer speakers than folds.
    """
    if k < 2:
        raise InputError(f"cross-validation needs at least 2 folds, got {k}")
    frames: dict[str, int] = {}
    clips: dict[str, int] = {}
    for r in records:
        frames[r["speaker"]] = frames.get(r["speaker"], 0) + max(1, int(r.get("frames", 1)))
        clips[r["speaker"]] = clips.get(r["speaker"], 0) + 1
    speakers = sorted(frames)
    if k > len(speakers):
        raise InputError(f"{k} speaker-disjoint folds need at least {k} speakers, the clips have {len(speakers)}")
    rng = np.random.default_rng(seed)
    best: tuple | None = None
    for _ in range(max(1, tries)):
        load = [[0, 0] for _ in range(k)]  # frames, clips
        fold_of: dict[str, int] = {}
        for i in rng.permutation(len(speakers)):
            spk = speakers[i]
            f = min(range(k), key=lambda j: load[j])
            fold_of[spk] = f
            load[f][0] += frames[spk]
            load[f][1] += clips[spk]
        score = sum((max(x[c] for x in load) - min(x[c] for x in load)) / max(1, sum(x[c] for x in load)) for c in (0, 1))
        if best is None or score < best[0]:
            best = (score, fold_of)
    fold_of = best[1]
    return [[r["id"] for r in records if fold_of[r["speaker"]] == f] for f in range(k)]


def fold_split(records: Sequence[dict], k: int, fold: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, held-out) ids of fold ``fold`` of :func:`speaker_folds`: train on every other fold."""
    if not 0 <= fold < k:
        raise InputError(f"fold {fold} is outside 0..{k - 1} of {k} folds")
    folds = speaker_folds(records, k, seed)
    held = set(folds[fold])
    return [r["id"] for r in records if r["id"] not in held], list(folds[fold])
