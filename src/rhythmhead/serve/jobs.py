"""The jobs of ``rhythmhead serve``: checked submissions, a bounded queue, a worker pool, progress, frames, expiry.

:class:`JobManager` owns a work folder and one loaded :class:`~rhythmhead.inference.pipeline.TalkingHeadPipeline`,
shared by ``workers`` threads. Sharing is safe: generation only reads the networks (eval mode, ``no_grad``, which
is per thread), fine-tuning works on a deep copy of G, and every MediaPipe graph is made per call
(``tests/serve/test_api.py::test_pipeline_is_thread_safe`` compares concurrent with sequential frames).

A job's files live in ``<work>/<job id>/`` only: uploads as ``<field><suffix>`` (the suffix from a whitelist, never a
client's file name), the plan as ``plan.npz``, the video as ``video.mp4`` (written atomically by
:meth:`Result.save <rhythmhead.inference.pipeline.Result.save>`). Life of a job::

    new_upload_dir() → save the uploads there → submit(files, controls)
        → queued → running → done | failed | cancelled

:meth:`JobManager.submit` checks everything cheap before queueing (fields, file types, controls with
:class:`~rhythmhead.inference.options.GenerationControls`, media headers, the speech's length and silence, a photo's
face) and raises :class:`FieldError` (an :class:`~rhythmhead.errors.InputError` naming the field) or
:class:`QueueFull`. What only generation can find (e.g. no face in a reference *video*, tracked by the worker) fails
the job, with the field in ``error``. Finished jobs, and upload folders never submitted, are deleted
``expire_minutes`` after they finished (or were last written).
"""
from __future__ import annotations

import logging
import math
import re
import shutil
import threading
import time
import uuid
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..common import IMAGE_SUFFIXES, VIDEO_SUFFIXES, atomic_path
from ..errors import InputError
from ..inference.options import NAMES, GenerationControls, check, flag

log = logging.getLogger("rhythmhead.serve")

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
VIDEOS = frozenset(VIDEO_SUFFIXES)
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus"}) | VIDEOS
# upload field → accepted file name endings; reference and audio are required
FILE_FIELDS: dict[str, frozenset[str]] = {
    "reference": IMAGE_SUFFIXES | VIDEOS,
    "audio": AUDIO_SUFFIXES,
    "pose_from": VIDEOS | {".npy"},
    "expression_from": IMAGE_SUFFIXES | VIDEOS,
    "motion_style": VIDEOS,
}
REQUIRED = ("reference", "audio")
STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
VIDEO_NAME, PLAN_NAME = "video.mp4", "plan.npz"


class FieldError(InputError):
    """Bad input, naming the request field it is about (``"audio"``, ``"controls.motion_scale"``, ...)."""

    def __init__(self, field: str | None, message: str):
        self.field = field
        super().__init__(message)


class QueueFull(Exception):
    """The queue holds ``queue`` jobs already; try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int):
        self.retry_after = retry_after
        super().__init__(f"the queue is full; retry in {retry_after} s")


class UnknownJob(KeyError):
    """No job has this id (never made, removed, or expired)."""


class ServerClosed(Exception):
    """The manager is shutting down and takes no new jobs."""


class _Stop(Exception):
    """Raised inside a running job's callbacks to stop it (cancelled, or the server stopping)."""


class FrameBuffer:
    """The newest JPEG frames of one running job (at most ``size``): the worker never waits for a reader, a slow
    reader skips frames. Frames are numbered from 0; :meth:`read` returns those after a number."""

    def __init__(self, size: int = 32):
        self._frames: deque[tuple[int, bytes]] = deque(maxlen=size)
        self._next = 0
        self._cond = threading.Condition()
        self.closed = False

    def push(self, jpeg: bytes) -> None:
        with self._cond:
            self._frames.append((self._next, jpeg))
            self._next += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def newest(self) -> int:
        """The number of the newest frame (-1: none yet); a new reader starts just before it."""
        with self._cond:
            return self._next - 1

    def read(self, after: int, timeout: float = 1.0) -> list[tuple[int, bytes]] | None:
        """Frames numbered above ``after`` (waits up to ``timeout`` s for one; ``[]`` if none came); None once the
        buffer is closed and nothing is left to read."""
        with self._cond:
            if not self.closed and self._next - 1 <= after:
                self._cond.wait(timeout)
            new = [(i, b) for i, b in self._frames if i > after]
            return None if not new and self.closed else new


@dataclass
class _Job:
    id: str
    dir: Path
    files: dict[str, Path]
    controls: GenerationControls
    reference: object = None  # a photo's Reference, tracked at submit time
    pose_track: object = None  # a .npy pose_from, loaded at submit time
    state: str = "queued"
    done: int = 0
    total: int | None = None
    timings: dict = field(default_factory=dict)
    error: dict | None = None
    notes: list = field(default_factory=list)
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    stop: str | None = None  # why a running job must stop: "cancelled" or "shutdown"
    frames: FrameBuffer | None = field(default_factory=FrameBuffer)
    plan_ready: bool = False


def _jpeg(frame: np.ndarray, quality: int = 80) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes() if ok else b""


class JobManager:
    """Jobs over one shared pipeline (see the module docstring).

    Args:
        pipe: a loaded :class:`~rhythmhead.inference.pipeline.TalkingHeadPipeline`.
        work_dir: the only folder jobs write to (created if missing).
        workers: generation threads.
        queue: jobs that may wait (beyond the running ones) before :meth:`submit` raises :class:`QueueFull`.
        expire_minutes: finished jobs (and unsubmitted upload folders) are deleted this long after.
        max_seconds: the longest speech accepted (a request's ``max_seconds`` control can only lower it; 0 = none).
    """

    def __init__(self, pipe, work_dir: str | Path, workers: int = 1, queue: int = 8, expire_minutes: float = 60,
                 max_seconds: float = 600):
        if workers < 1 or queue < 0 or expire_minutes <= 0 or max_seconds < 0:
            raise InputError("workers must be ≥ 1, queue ≥ 0, expire_minutes > 0 and max_seconds ≥ 0")
        self.pipe = pipe
        self.work_dir = Path(work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.workers, self.queue_size = workers, queue
        self.expire_seconds, self.max_seconds = expire_minutes * 60.0, max_seconds
        self._jobs: dict[str, _Job] = {}
        self._queue: deque[str] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._pending: set[str] = set()  # the folders of submissions being checked (they hold queue places)
        # at most this many submissions are checked at once (media decoding, a photo's face): a burst of uploads
        # neither starves the workers nor piles up decoded media in memory
        self._checking = threading.BoundedSemaphore(workers + 1)
        self._durations: deque[float] = deque(maxlen=20)
        self._threads = [threading.Thread(target=self._work, name=f"rhythmhead-worker-{i}", daemon=True)
                         for i in range(workers)]
        self._threads.append(threading.Thread(target=self._sweep, name="rhythmhead-expiry", daemon=True))
        for t in self._threads:
            t.start()

    # -- submitting --------------------------------------------------------------------------------------------------
    def new_upload_dir(self) -> Path:
        """A new empty job folder ``<work>/<job id>/`` to save one submission's uploads into."""
        path = self.work_dir / uuid.uuid4().hex
        path.mkdir()
        return path

    def submit(self, files: dict[str, Path], controls: dict) -> str:
        """Check a submission and queue it; returns the job id (the name of its upload folder).

        ``files``: field name (:data:`FILE_FIELDS`) → a file saved in one folder of :meth:`new_upload_dir`;
        ``controls``: generation control name → value. On any error the upload folder is removed.

        Raises:
            FieldError: bad input (the field and the problem); QueueFull; ServerClosed.
        """
        folder, pending = None, False
        try:
            folder = self._upload_folder(files)
            job = _Job(folder.name, folder, {k: Path(v).resolve() for k, v in files.items()},
                       self._controls(controls, files))
            with self._cond:  # refuse before the costly checks; a job being checked holds its queue place
                self._check_capacity()
                self._pending.add(folder.name)
                pending = True
            with self._checking:
                self._check_media(job)
            with self._cond:
                if self._closed:
                    raise ServerClosed("the server is shutting down")
                self._jobs[job.id] = job
                self._queue.append(job.id)
                self._cond.notify_all()
            return job.id
        except BaseException:
            for path in [folder] if folder is not None else self._own_folders(files):
                shutil.rmtree(path, ignore_errors=True)
            raise
        finally:
            if pending:
                with self._cond:
                    self._pending.discard(folder.name)

    def _upload_folder(self, files: dict[str, Path]) -> Path:
        if not isinstance(files, dict):
            raise FieldError(None, "files must map field names to saved uploads")
        for key in files:
            if key not in FILE_FIELDS:
                raise FieldError(key, f"unknown upload field (known: {', '.join(FILE_FIELDS)})")
        for key in REQUIRED:
            if not files.get(key):
                raise FieldError(key, "is required")
        folders = set()
        for key, path in files.items():
            p = Path(path).resolve()
            if p.parent.parent != self.work_dir or not JOB_ID.match(p.parent.name) or not p.is_file():
                raise FieldError(key, "must be a file saved in a folder made by new_upload_dir()")
            if p.suffix.lower() not in FILE_FIELDS[key]:
                raise FieldError(key, f"unsupported file type '{p.suffix}' (accepted: "
                                      f"{', '.join(sorted(FILE_FIELDS[key]))})")
            folders.add(p.parent)
        if len(folders) != 1:
            raise FieldError(None, "all files of a job must be in one upload folder")
        folder = folders.pop()
        if folder.name in self._jobs:
            raise FieldError(None, "this upload folder was submitted already")
        return folder

    def _own_folders(self, files) -> set[Path]:
        """The upload folders (not yet jobs) of this manager that ``files`` point into."""
        out = set()
        for path in (files.values() if isinstance(files, dict) else ()):
            try:
                parent = Path(path).resolve().parent
            except (TypeError, OSError):
                continue
            if parent.parent == self.work_dir and JOB_ID.match(parent.name) and parent.name not in self._jobs:
                out.add(parent)
        return out

    def _controls(self, values, files) -> GenerationControls:
        if not isinstance(values, dict):
            raise FieldError("controls", "must be a JSON object of control: value")
        values = {str(k).replace("-", "_"): v for k, v in values.items()}
        if "preset" in values:
            raise FieldError("controls.preset", "the preset is chosen by the server (rhythmhead serve --preset)")
        unknown = sorted(set(values) - set(NAMES))
        if unknown:
            raise FieldError(f"controls.{unknown[0]}", f"unknown generation control(s) {', '.join(unknown)} "
                                                       f"(known: {', '.join(NAMES)})")
        for name, value in values.items():
            try:
                check(name, value)
            except InputError as exc:  # named as the request names it: motion_scale, not --motion-scale
                raise FieldError(f"controls.{name}", str(exc).replace(flag(name), name, 1)) from None
        c = GenerationControls.from_values(values)
        if self.max_seconds and (not c.max_seconds or c.max_seconds > self.max_seconds):
            c = GenerationControls.from_values({"max_seconds": self.max_seconds}, c)
        if c.still and files.get("pose_from"):
            raise FieldError("pose_from", "pose_from and the still control exclude each other")
        return c

    def _check_media(self, job: _Job) -> None:
        """Headers of every upload, the speech (decoded: length, silence) and a photo's face."""
        from ..inference.inputs import check_input_files, load_driving_audio, load_reference

        f = job.files
        try:
            job.pose_track = check_input_files(f)  # the checks of rhythmhead generate
        except InputError as exc:
            raise FieldError(getattr(exc, "field", None), _public(str(exc), job.dir)) from None
        with _as_field(job.dir, "audio"):
            load_driving_audio(f["audio"], max_seconds=job.controls.max_seconds)
        if f["reference"].suffix.lower() in IMAGE_SUFFIXES:  # a photo's face is quick to find; a video's is the job's
            with _as_field(job.dir, "reference"):
                job.reference, job.notes = load_reference(f["reference"])

    def _check_capacity(self) -> None:
        if self._closed:
            raise ServerClosed("the server is shutting down")
        if len(self._queue) + len(self._pending) >= self.queue_size:
            raise QueueFull(self.retry_after())

    def retry_after(self) -> int:
        """Seconds until a queue place is likely free: a worker's next free moment, from the mean recent job time."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 10.0
        return int(min(3600, max(1, math.ceil(mean / self.workers))))

    # -- reading -----------------------------------------------------------------------------------------------------
    def _job(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise UnknownJob(job_id)
        return job

    def get(self, job_id: str) -> dict:
        """The job as JSON: ``{"id", "state", "progress": {"done", "total"}, "timings", "error", "notes", "created",
        "started", "finished", "queue_position"}`` (times in Unix seconds; ``error``: ``{"field", "message"}``).

        Raises:
            UnknownJob.
        """
        job = self._job(job_id)
        with self._cond:
            position = self._queue.index(job.id) + 1 if job.state == "queued" and job.id in self._queue else None
        return {"id": job.id, "state": job.state, "progress": {"done": job.done, "total": job.total},
                "timings": dict(job.timings), "error": job.error, "notes": list(job.notes), "created": job.created,
                "started": job.started, "finished": job.finished, "queue_position": position}

    def video_path(self, job_id: str) -> Path | None:
        """The finished mp4, or None until the job is done (UnknownJob for an unknown id)."""
        job = self._job(job_id)
        path = job.dir / VIDEO_NAME
        return path if job.state == "done" and path.is_file() else None

    def poses(self, job_id: str) -> dict | None:
        """``{"fps", "frames", "poses": (T, 6), "landmarks": (T, 68, 2)}`` as lists once the job's motion is planned
        (while it runs, or done), else None. Poses: rotation vector (rad) + translation (crop px); landmarks: crop
        px."""
        from ..common import FPS

        job = self._job(job_id)
        path = job.dir / PLAN_NAME
        if not job.plan_ready or not path.is_file():
            return None
        with np.load(path) as plan:
            poses, landmarks = plan["poses"], plan["landmarks"]
        return {"fps": FPS, "frames": len(poses), "poses": np.round(poses.astype(np.float64), 5).tolist(),
                "landmarks": np.round(landmarks.astype(np.float64), 2).tolist()}

    def frames(self, job_id: str) -> FrameBuffer | None:
        """The JPEG frame buffer of a queued or running job; None once it finished."""
        return self._job(job_id).frames

    def stats(self) -> dict:
        with self._cond:
            states = [j.state for j in self._jobs.values()]
        return {"queued": states.count("queued"), "running": states.count("running"), "workers": self.workers,
                "queue": self.queue_size}

    # -- cancelling, expiry, shutdown --------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> dict:
        """Cancel a queued or running job (a running one stops at its next chunk, leaving no video), or remove a
        finished one with its files. Returns the job's JSON (``state: "removed"`` for a removal)."""
        job = self._job(job_id)
        with self._cond:
            if job.state == "queued":
                self._queue.remove(job.id)
                self._finish(job, "cancelled")
                shutil.rmtree(job.dir, ignore_errors=True)
            elif job.state == "running":
                job.stop = "cancelled"
            else:
                self._jobs.pop(job.id, None)
                shutil.rmtree(job.dir, ignore_errors=True)
                return {"id": job.id, "state": "removed"}
        return self.get(job_id)

    def expire(self) -> int:
        """Delete the finished jobs, and the upload folders never submitted, older than ``expire_minutes``; returns
        how many folders went."""
        now, gone = time.time(), 0
        with self._cond:
            old = [j for j in self._jobs.values() if j.finished is not None and now - j.finished > self.expire_seconds]
            for job in old:
                self._jobs.pop(job.id)
            known = set(self._jobs) | self._pending
        for job in old:
            shutil.rmtree(job.dir, ignore_errors=True)
            gone += 1
        for entry in self.work_dir.iterdir():
            try:
                stale = (JOB_ID.match(entry.name) and entry.name not in known and entry.is_dir()
                         and now - max([entry.stat().st_mtime] + [p.stat().st_mtime for p in entry.iterdir()])
                         > self.expire_seconds)
            except OSError:  # removed meanwhile
                continue
            if stale:
                shutil.rmtree(entry, ignore_errors=True)
                gone += 1
        return gone

    def close(self, grace: float = 30.0) -> None:
        """Stop: queued jobs are cancelled, running ones get ``grace`` seconds to finish, then are stopped and
        marked failed; every job and upload folder is deleted (no job outlives the server; other files in the work
        folder are left alone)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            while self._queue:
                job = self._jobs[self._queue.popleft()]
                self._finish(job, "cancelled", "the server stopped")
            self._cond.notify_all()
        workers = self._threads[:-1]
        deadline = time.monotonic() + grace
        for t in workers:
            t.join(max(0.0, deadline - time.monotonic()))
        for job in list(self._jobs.values()):
            if job.state == "running":
                job.stop = "shutdown"
        for t in self._threads:
            t.join(10.0)
        for entry in self.work_dir.iterdir():  # jobs and unsubmitted uploads: the server's own folders only
            if JOB_ID.match(entry.name) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)

    # -- workers -----------------------------------------------------------------------------------------------------
    def _finish(self, job: _Job, state: str, message: str | None = None, field: str | None = None) -> None:
        job.state, job.finished = state, time.time()
        if message is not None:
            job.error = {"field": field, "message": message}
        if job.frames is not None:
            job.frames.close()
            job.frames = None
        job.reference = job.pose_track = None

    def _sweep(self) -> None:
        period = min(60.0, max(0.05, self.expire_seconds / 4))
        while True:
            with self._cond:
                if self._closed:
                    return
                self._cond.wait(period)
                if self._closed:
                    return
            try:
                self.expire()
            except Exception:  # noqa: BLE001 — the sweeper must outlive one bad folder
                log.exception("expiring jobs failed")

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._jobs[self._queue.popleft()]
                job.state, job.started = "running", time.time()
            self._run(job)

    def _run(self, job: _Job) -> None:
        from ..inference.inputs import load_driving_audio

        f, c = job.files, job.controls
        files = {k: str(v) for k, v in f.items()}

        def check_stop(*_):
            if job.stop:
                raise _Stop(job.stop)

        def on_progress(done, total):
            job.done, job.timings = done, result.timer.summary()
            check_stop()

        def on_frames(chunk):
            buffer = job.frames
            if buffer is not None:
                for frame in chunk:
                    buffer.push(_jpeg(frame))

        try:
            audio = load_driving_audio(f["audio"], max_seconds=c.max_seconds)
            result = self.pipe(job.reference if job.reference is not None else f["reference"], audio,
                               pose_from=job.pose_track if job.pose_track is not None else files.get("pose_from"),
                               motion_style=files.get("motion_style"), expression_from=files.get("expression_from"),
                               controls=c)
            job.total = result.n_frames
            job.notes = [_public(n, job.dir) for n in dict.fromkeys(job.notes + result.notes)]
            with atomic_path(job.dir / PLAN_NAME) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, poses=result.poses, landmarks=result.landmarks)
            job.plan_ready = True
            check_stop()
            result.save(job.dir / VIDEO_NAME, progress=on_progress, on_frames=on_frames)
            job.timings = result.timer.summary()
            self._durations.append(time.time() - job.started)
            with self._cond:
                self._finish(job, "done")
        except _Stop as stop:
            with self._cond:
                if str(stop) == "cancelled":
                    self._finish(job, "cancelled")
                    shutil.rmtree(job.dir, ignore_errors=True)
                else:
                    self._finish(job, "failed", "the server stopped before the job finished")
        except InputError as exc:
            with self._cond:
                self._finish(job, "failed", _public(str(exc), job.dir), _field_of(exc, f))
        except Exception:  # noqa: BLE001 — one job's failure must not stop the worker
            log.exception("job %s failed", job.id)
            with self._cond:
                self._finish(job, "failed", "internal error while generating (logged on the server)")


@contextmanager
def _as_field(folder: Path, name: str):
    """An InputError inside becomes a FieldError naming the field ``name``, without the server's paths."""
    try:
        yield
    except FieldError:
        raise
    except InputError as exc:
        raise FieldError(name, _public(str(exc), folder)) from None


def _public(message: str, folder: Path) -> str:
    """A message without the server's paths: ``<work>/<id>/audio.wav: too short`` → ``audio.wav: too short``."""
    return message.replace(f"{folder}/", "").replace(str(folder), "")


def _field_of(exc: InputError, files: dict[str, Path]) -> str | None:
    """The upload field an InputError is about (from its path or message), if any."""
    text = str(exc)
    for key, path in files.items():
        if (exc.path is not None and str(exc.path) == str(path)) or str(path) in text:
            return key
    return getattr(exc, "field", None)
