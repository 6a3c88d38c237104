"""The HTTP API of ``rhythmhead serve`` (version 1), a FastAPI app over a :class:`~rhythmhead.serve.jobs.JobManager`.

=======  =========================  ==========================================================================
method   path                       answer
=======  =========================  ==========================================================================
POST     /v1/jobs                   202 ``{"id", "state", "url"}``; 400 not multipart, bad JSON; 413 too large;
                                    422 bad field, file, media or control; 429 queue full (Retry-After);
                                    503 shutting down
GET      /v1/jobs/{id}              200 the job (:meth:`JobManager.get`); 404
GET      /v1/jobs/{id}/video        200 video/mp4; 409 not done (yet); 404
GET      /v1/jobs/{id}/poses        200 poses + landmarks JSON once planned; 409 before; 404
GET      /v1/jobs/{id}/stream       200 MJPEG of the frames while they are made; 409 finished; 404
DELETE   /v1/jobs/{id}              200 cancelled (queued/running) or removed (finished); 404
GET      /v1/info                   200 models, preset, version, limits, controls schema
GET      /healthz                   200 ``{"status": "ok", ...}`` (never needs the token)
=======  =========================  ==========================================================================

With a token every ``/v1`` call needs ``Authorization: Bearer TOKEN`` (else 401). Every error is JSON
``{"error": {"field": ..., "message": ...}}``; an unexpected one is a 500 with no traceback (logged on the server).

Uploads are parsed from the request stream as they arrive (python-multipart): each file part is written straight to
``<work>/<job id>/<field><suffix>`` — the suffix from :data:`~rhythmhead.serve.jobs.FILE_FIELDS`' whitelist, never the
client's file name as a path — and the request is refused with 413 as soon as it passes ``max_upload_mb``; nothing
is spooled to the system's temporary folder.
"""
from __future__ import annotations

import json
import logging
import secrets
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..inference.options import schema as controls_schema
from .jobs import FILE_FIELDS, FieldError, JobManager, QueueFull, ServerClosed, UnknownJob

log = logging.getLogger("rhythmhead.serve")
BOUNDARY = "frame"
MAX_TEXT = 64 * 1024  # the controls field, in bytes


class ApiError(Exception):
    """An HTTP error answered as ``{"error": {"field", "message"}}``."""

    def __init__(self, status: int, field: str | None, message: str, headers: dict | None = None):
        self.status, self.field, self.message, self.headers = status, field, message, headers
        super().__init__(message)


def _error(status: int, field, message: str, headers=None) -> JSONResponse:
    return JSONResponse({"error": {"field": field, "message": message}}, status, headers=headers)


def _version() -> str:
    try:
        return version("rhythmhead")
    except PackageNotFoundError:
        return "unknown"


class _FormWriter:
    """python-multipart callbacks: file parts into the job folder, the ``controls`` text in memory, sizes counted."""

    def __init__(self, folder: Path, limit: int, limit_mb: int):
        self.folder, self.limit, self.limit_mb = folder, limit, limit_mb
        self.files: dict[str, Path] = {}
        self.texts: dict[str, bytearray] = {}
        self.total = 0
        self._headers: dict[bytes, bytes] = {}
        self._hf, self._hv = b"", b""
        self._name: str | None = None
        self._out = None

    def callbacks(self) -> dict:
        return {"on_part_begin": self._begin, "on_header_field": self._field, "on_header_value": self._value,
                "on_header_end": self._header_end, "on_headers_finished": self._headers_done,
                "on_part_data": self._data, "on_part_end": self._end}

    def _begin(self):
        self._headers, self._name = {}, None

    def _field(self, data, start, end):
        self._hf += data[start:end]

    def _value(self, data, start, end):
        self._hv += data[start:end]

    def _header_end(self):
        self._headers[self._hf.lower()] = self._hv
        self._hf, self._hv = b"", b""

    def _headers_done(self):
        from python_multipart.multipart import parse_options_header

        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name in self.files or name in self.texts:
            raise ApiError(422, name, "given twice")
        self._name = name
        if name in FILE_FIELDS:
            filename = params.get(b"filename")
            suffix = Path(filename.decode("utf-8", "replace")).suffix.lower() if filename else ""
            if suffix not in FILE_FIELDS[name]:
                what = f"'{suffix}'" if suffix else "no file name ending"
                raise ApiError(422, name, f"must be a file upload ending in one of "
                                          f"{', '.join(sorted(FILE_FIELDS[name]))} (got {what})")
            self.files[name] = self.folder / f"{name}{suffix}"
            self._out = open(self.files[name], "xb")
        elif name == "controls":
            self.texts[name] = bytearray()
        elif name == "preset":
            raise ApiError(422, "preset", "the preset is chosen by the server (rhythmhead serve --preset)")
        else:
            raise ApiError(422, name or None, f"unknown form field (known: controls, {', '.join(FILE_FIELDS)})")

    def _data(self, data, start, end):
        self.total += end - start
        if self.total > self.limit:
            raise ApiError(413, self._name, f"the upload is over the limit of {self.limit_mb} MB")
        if self._out is not None:
            self._out.write(data[start:end])
        else:
            text = self.texts[self._name]
            if len(text) + end - start > MAX_TEXT:
                raise ApiError(413, self._name, f"over {MAX_TEXT // 1024} KB")
            text += data[start:end]

    def _end(self):
        if self._out is not None:
            self._out.close()
            self._out = None

    def close(self):
        self._end()


async def _read_upload(request: Request, manager: JobManager, limit_mb: int) -> tuple[Path, dict, dict]:
    """Stream a multipart request into a new upload folder → ``(folder, files, controls)``; the folder is removed
    on any error."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(400, None, "send multipart/form-data (fields: reference, audio, controls, ...)")
    limit = limit_mb * 1024 * 1024
    try:
        declared = int(request.headers.get("content-length", "0"))
    except ValueError:
        declared = 0
    if declared > limit + 64 * 1024:  # multipart framing and the controls on top of the files
        raise ApiError(413, None, f"the upload is over the limit of {limit_mb} MB")
    folder = manager.new_upload_dir()
    writer = _FormWriter(folder, limit, limit_mb)
    try:
        parser = MultipartParser(params[b"boundary"], writer.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
        writer.close()
        text = bytes(writer.texts.get("controls", b"")).decode("utf-8", "replace").strip()
        try:
            controls = json.loads(text) if text else {}
        except json.JSONDecodeError as exc:
            raise ApiError(400, "controls", f"not valid JSON ({exc.msg})") from None
        if not isinstance(controls, dict):
            raise ApiError(422, "controls", "must be a JSON object of control: value")
        return folder, writer.files, controls
    except ApiError:
        writer.close()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    except Exception as exc:  # a malformed body (python-multipart's own errors) or a dropped connection
        writer.close()
        shutil.rmtree(folder, ignore_errors=True)
        from python_multipart.exceptions import MultipartParseError

        if isinstance(exc, MultipartParseError):
            raise ApiError(400, None, "malformed multipart body") from None
        raise


def _mjpeg(buffer, start: int):
    """The frames of ``buffer`` after ``start`` as multipart/x-mixed-replace parts, until the job ends."""
    after = start
    while True:
        frames = buffer.read(after, timeout=1.0)
        if frames is None:
            return
        for i, jpeg in frames:
            after = i
            yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                   + jpeg + b"\r\n")


UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["reference", "audio"],
    "properties": {
        "reference": {"type": "string", "format": "binary", "description": "photo or video of the person"},
        "audio": {"type": "string", "format": "binary", "description": "the speech (wav, mp3, m4a, ... or a video)"},
        "pose_from": {"type": "string", "format": "binary", "description": "a driving video, or (T, 6) poses .npy"},
        "expression_from": {"type": "string", "format": "binary", "description": "a video driving the expression"},
        "motion_style": {"type": "string", "format": "binary", "description": "a video with speech: motion style"},
        "controls": {"type": "string", "description": 'JSON object of generation controls, e.g. '
                                                      '{"motion_scale": 1.2, "seed": 3} (see GET /v1/info)'}}}}}}}


def create_app(manager: JobManager, *, token: str | None = None, max_upload_mb: int = 200,
               info: dict | None = None):
    """The FastAPI app of the API (see the module docstring). ``info``: what ``GET /v1/info`` adds (models folder,
    preset, device, ...)."""
    app = FastAPI(title="rhythmhead", version=_version(), docs_url="/docs",
                  description="A talking head from a reference clip or photo and a speech recording. "
                              "Submit a job, poll it, download its video.")
    app.state.manager = manager

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return _error(exc.status, exc.field, exc.message, exc.headers)

    @app.exception_handler(UnknownJob)
    async def _unknown_job(request, exc: UnknownJob):  # e.g. expired between two steps of one request
        return _error(404, "id", "no such job (never made, removed or expired)")

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):
        return _error(exc.status_code, None, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _error(422, where, first.get("msg", "invalid request"))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, None, "internal server error (logged on the server)")

    def authorize(request: Request):
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(value.strip().encode(), token.encode()):
            raise ApiError(401, "authorization", "send the header 'Authorization: Bearer TOKEN'",
                           {"WWW-Authenticate": "Bearer"})

    def job_or_404(job_id: str) -> dict:
        try:
            return manager.get(job_id)
        except UnknownJob:
            raise ApiError(404, "id", f"no job {job_id} (never made, removed or expired)") from None

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])

    @v1.post("/jobs", status_code=202, openapi_extra=UPLOAD_SCHEMA)
    async def create_job(request: Request):
        """Submit a generation: multipart uploads ``reference`` and ``audio`` (required), optional ``pose_from``,
        ``expression_from``, ``motion_style``, and ``controls`` (a JSON object; ``GET /v1/info`` lists them)."""
        folder, files, controls = await _read_upload(request, manager, max_upload_mb)
        try:
            job_id = await run_in_threadpool(manager.submit, files, controls)
        except BaseException as exc:
            shutil.rmtree(folder, ignore_errors=True)  # a refused job leaves nothing (even with no file given)
            if isinstance(exc, FieldError):
                raise ApiError(422, exc.field, str(exc)) from None
            if isinstance(exc, QueueFull):
                raise ApiError(429, None, str(exc), {"Retry-After": str(exc.retry_after)}) from None
            if isinstance(exc, ServerClosed):
                raise ApiError(503, None, str(exc)) from None
            raise
        return {"id": job_id, "state": "queued", "url": f"/v1/jobs/{job_id}"}

    @v1.get("/jobs/{job_id}")
    def get_job(job_id: str):
        """State (queued, running, done, failed, cancelled), progress in frames, per-stage timings, error."""
        return job_or_404(job_id)

    @v1.get("/jobs/{job_id}/video", response_class=FileResponse)
    def get_video(job_id: str):
        """The mp4 (H.264 + AAC) once the job is done; 409 until then."""
        job = job_or_404(job_id)
        path = manager.video_path(job_id)
        if path is None:
            raise ApiError(409, "state", f"the job is {job['state']}; the video exists once it is done")
        return FileResponse(path, media_type="video/mp4", filename=f"{job_id}.mp4")

    @v1.get("/jobs/{job_id}/poses")
    def get_poses(job_id: str):
        """``{"fps", "frames", "poses": (T, 6) rotation vector rad + translation px, "landmarks": (T, 68, 2) crop
        px}``, available once the job's motion is planned (shortly after it starts running)."""
        job = job_or_404(job_id)
        poses = manager.poses(job_id)
        if poses is None:
            raise ApiError(409, "state", f"the job is {job['state']}; poses exist once it runs")
        return poses

    @v1.get("/jobs/{job_id}/stream")
    def stream(job_id: str):
        """The frames while they are made, as MJPEG: ``multipart/x-mixed-replace; boundary=frame``, each part
        ``--frame``, ``Content-Type: image/jpeg``, ``Content-Length``, a blank line, the JPEG, CRLF. Show it with
        ``<img src=...>`` or read it part by part. It starts at the newest frame (a queued job: its first), skips
        frames a slow reader misses, and ends when the job ends (then fetch ``/video``); 409 for a finished job."""
        job = job_or_404(job_id)
        buffer = manager.frames(job_id)
        if buffer is None:
            raise ApiError(409, "state", f"the job is {job['state']}; only a queued or running job streams")
        return StreamingResponse(_mjpeg(buffer, buffer.newest() - 1),
                                 media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers={"Cache-Control": "no-store"})

    @v1.delete("/jobs/{job_id}")
    def delete_job(job_id: str):
        """Cancel a queued or running job (no video is left), or remove a finished one and its files."""
        job_or_404(job_id)
        return manager.cancel(job_id)

    @v1.get("/info")
    def get_info():
        """The server: version, models folder, preset, device, limits, and every generation control (type, default,
        range or choices, help) accepted in ``controls``."""
        return {"version": _version(), **(info or {}),
                "limits": {"max_upload_mb": max_upload_mb, "max_seconds": manager.max_seconds,
                           "queue": manager.queue_size, "workers": manager.workers,
                           "expire_minutes": manager.expire_seconds / 60},
                "uploads": {k: sorted(v) for k, v in FILE_FIELDS.items()},
                "controls": controls_schema(manager.max_seconds)}

    app.include_router(v1)

    @app.get("/healthz")
    def healthz():
        """Liveness and load (no token needed)."""
        return {"status": "ok", **manager.stats()}

    return app
