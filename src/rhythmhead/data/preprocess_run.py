"""Preprocessing many videos into a clip store: discovery, worker processes, sharding, idempotence, manifest.

:func:`preprocess_store` is what ``rhythmhead preprocess`` and the preprocessing benchmark call:

* inputs are files or folders (searched recursively for videos); a missing input, a folder without videos, or a named
  file that is not a readable video raises InputError before anything is written;
* ``shard=(i, n)`` keeps every n-th video of the sorted list starting at i, so n machines can share one store;
* a clip is finished when its ``.done`` marker exists (it holds the manifest record); finished clips are skipped, so a
  killed run resumes where it stopped, and partial clip folders are redone;
* failures (no face, corrupt data, …) go to ``STORE/failed.jsonl`` with the reason and do not stop the run; the file
  keeps one row per source, the latest (a rerun replaces a clip's row, and drops it once the clip succeeds);
* ``manifest.jsonl`` is rebuilt from the ``.done`` markers at the start and the end of the run and gets one appended
  line per finished clip in between (:class:`rhythmhead.data.store.ManifestWriter`), so even a run killed with
  SIGKILL leaves a valid manifest of the clips it finished;
* with ``workers > 1`` clips run in ``spawn`` worker processes, each with its own MediaPipe tracker;
* stopping the run (Ctrl-C, or SIGTERM, which ``rhythmhead``'s entry point turns into SystemExit) terminates the workers
  and rebuilds the manifest before the exception goes on. A worker ignores Ctrl-C (the parent stops the pool), removes
  its unfinished clip folder on SIGTERM, and dies with its parent even when the parent is killed with SIGKILL: Linux's
  ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, and elsewhere a check of the parent's pid before each clip. Once the workers
  are gone, multiprocessing's resource tracker (which lives while any of them holds its pipe) exits too.
"""
from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import InputError
from .layouts import VIDEO_SUFFIXES, assign_ids
from .store import ManifestWriter, record_failure

__all__ = ["find_videos", "preprocess_store", "RunSummary", "load_speaker_map"]

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _is_under(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def find_videos(inputs: Sequence[str | Path], exclude: str | Path | None = None) -> list[Path]:
    """Videos named by ``inputs`` (files, or folders searched recursively), sorted and de-duplicated.

    Raises:
        InputError: a missing input, a folder with no videos, or a named file that is not a readable video.
    """
    from ..media.io import probe

    if not inputs:
        raise InputError("no input videos or folders given")
    exclude = Path(exclude) if exclude is not None else None
    found: dict[Path, Path] = {}
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise InputError("does not exist", p)
        if p.is_dir():
            videos = [v for v in p.rglob("*") if v.is_file() and v.suffix.lower() in VIDEO_SUFFIXES
                      and not any(part.startswith(".") for part in v.relative_to(p).parts) and not _is_under(v, exclude)]
            if not videos:
                raise InputError(f"has no videos (looked for {', '.join(VIDEO_SUFFIXES)} recursively)", p)
        else:
            info = probe(p)  # InputError for unreadable/corrupt files
            if getattr(info, "is_image", False) or not info.has_video:
                what = "a still image" if getattr(info, "is_image", False) else "audio only"
                raise InputError(f"is not a video ({what}); preprocess takes talking-face videos", p)
            videos = [p]
        for v in videos:
            found.setdefault(v.resolve(), v)
    return [found[k] for k in sorted(found)]


def load_speaker_map(path: str | Path | None) -> dict[str, str]:
    """A JSON object ``{clip id or file stem: speaker}`` (None → empty)."""
    if path is None:
        return {}
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"unreadable speaker map ({exc})", path) from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in data.items()):
        raise InputError("speaker map must be a JSON object of clip id (or file stem) -> speaker name", path)
    return data


@dataclass(frozen=True)
class RunSummary:
    """What a preprocessing run did.

    Args:
        ok: clips preprocessed now.
        failed: clips that failed now (see failed.jsonl).
        skipped: clips already finished before the run.
        frames: 25 fps frames written by this run.
        seconds: wall time of the run.
        store: the store folder.
        total: finished clips in the store after the run.
    """

    ok: int
    failed: int
    skipped: int
    frames: int
    seconds: float
    store: Path
    total: int

    @property
    def fps(self) -> float:
        """Frames written per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One summary line for the terminal."""
        return (f"preprocess: {self.ok} ok, {self.failed} failed, {self.skipped} already done; {self.frames} frames in "
                f"{self.seconds:.1f} s ({self.fps:.1f} frames/s); {self.total} clips in {self.store}")


# -- worker side -------------------------------------------------------------------------------------------------------
_TRACKER = None
_CROP_MODE = "smooth"
_PARENT: int | None = None  # the parent's pid, in a worker process


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this worker when ``parent`` dies (Linux); :func:`_work` also checks the parent's pid."""
    global _PARENT
    _PARENT = parent
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the check in _work remains
        pass
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


def _exit_on_sigterm(signum, _frame) -> None:
    raise SystemExit(128 + signum)  # unwinds preprocess_clip, which removes the unfinished clip folder


def _init_worker(crop_mode: str, own_process: bool = True, parent: int | None = None) -> None:
    """Build this process's tracker; a dedicated worker process also dies with ``parent``, ignores Ctrl-C (the parent
    stops the pool), exits cleanly on SIGTERM (``Pool.terminate``) and limits torch to one thread."""
    global _TRACKER, _CROP_MODE
    if own_process:
        if parent is not None:
            _die_with_parent(parent)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import torch

        torch.set_num_threads(1)
    from ..face.track import FaceTracker

    _release_tracker()
    _TRACKER = FaceTracker()
    _CROP_MODE = crop_mode


def _release_tracker() -> None:
    global _TRACKER
    if _TRACKER is not None:
        _TRACKER.close()
        _TRACKER = None


def _work(task: tuple[str, str, str, str]) -> dict:
    """Preprocess one clip in a worker: returns ``{"status", "record"|"reason", "warnings", "source", "id"}``."""
    from .preprocess import preprocess_clip

    src, out, clip_id, speaker = task
    if _PARENT is not None and os.getppid() != _PARENT:  # orphaned (where PR_SET_PDEATHSIG is not available)
        os._exit(1)
    if _TRACKER is None:
        _init_worker(_CROP_MODE, own_process=False)
    result = {"source": src, "id": clip_id}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result["record"] = preprocess_clip(src, out, clip_id, speaker, tracker=_TRACKER, crop_mode=_CROP_MODE)
            result["status"] = "ok"
        except InputError as exc:
            result.update(status="failed", reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad clip must not stop a long run; the reason is recorded
            result.update(status="failed", reason=f"{type(exc).__name__}: {exc}".replace("\n", " "))
    result["warnings"] = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return result


# -- driver ------------------------------------------------------------------------------------------------------------
def _plan(videos: list[Path], done: dict[str, dict], speaker_map: dict[str, str]) -> tuple[list[tuple], int]:
    """Tasks ``(src, clip_id, speaker)`` still to do, and how many videos are already finished."""
    tasks, skipped = [], 0
    taken = set(done)
    sources = {r["source"]: r["id"] for r in done.values()}
    for path, cid, speaker in assign_ids(videos):
        speaker = speaker_map.get(cid, speaker_map.get(path.stem, speaker))
        src = str(path.resolve())
        if src in sources:
            skipped += 1
            continue
        unique, n = cid, 1
        while unique in taken:  # an id finished earlier from another source
            n += 1
            unique = f"{cid}_{n}"
        taken.add(unique)
        tasks.append((src, unique, speaker))
    return tasks, skipped


def preprocess_store(inputs: Sequence[str | Path], out: str | Path, workers: int = 1, shard: tuple[int, int] = (0, 1),
                     crop_mode: str = "smooth", speaker_map: dict[str, str] | None = None, progress: bool = True,
                     log: Callable[[str], None] | None = None) -> RunSummary:
    """Preprocess every video under ``inputs`` into the store ``out`` (see the module docstring).

    Args:
        inputs: video files and/or folders.
        out: the store folder (created).
        workers: worker processes (1: in this process).
        shard: ``(i, n)``: this run takes videos i, i+n, i+2n, … of the sorted list.
        crop_mode: ``"smooth"`` or ``"fixed"`` crop position.
        speaker_map: ``{clip id or file stem: speaker}`` overriding the layout's speaker.
        progress: show a tqdm progress bar.
        log: where warnings and failures are printed (default: tqdm.write).
    """
    from tqdm import tqdm

    out = Path(out)
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"--shard must be I/N with 0 <= I < N, got {i}/{n}")
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", out)
    videos = find_videos(inputs, exclude=out)[i::n]
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    manifest = ManifestWriter(out)
    tasks, skipped = _plan(videos, {r["id"]: r for r in manifest.rebuild()}, speaker_map or {})
    log = log or tqdm.write
    ok = failed = frames = 0
    bar = tqdm(total=len(tasks), unit="clip", disable=not progress, dynamic_ncols=True, desc="preprocess")
    jobs = [(src, str(out), cid, spk) for src, cid, spk in tasks]
    pool = None
    try:
        if not jobs:
            results = iter(())
        elif workers > 1 and len(jobs) > 1:
            pool = multiprocessing.get_context("spawn").Pool(min(workers, len(jobs)), initializer=_init_worker,
                                                             initargs=(crop_mode, True, os.getpid()))
            results = pool.imap_unordered(_work, jobs)
        else:
            _init_worker(crop_mode, own_process=False)
            results = map(_work, jobs)
        for res in results:
            for w in res["warnings"]:
                log(f"warning: {w}")
            if res["status"] == "ok":
                ok += 1
                frames += res["record"]["frames"]
                manifest.add(res["record"])
                record_failure(out, res["source"], None)
            else:
                failed += 1
                log(f"failed: {res['reason']}")
                record_failure(out, res["source"], {"source": res["source"], "id": res["id"], "reason": res["reason"],
                                                    "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
            bar.update(1)
            bar.set_postfix(ok=ok, failed=failed, fps=f"{frames / max(time.perf_counter() - start, 1e-9):.1f}")
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        else:
            _release_tracker()
        records = manifest.rebuild()
    return RunSummary(ok=ok, failed=failed, skipped=skipped, frames=frames, seconds=time.perf_counter() - start,
                      store=out, total=len(records))
