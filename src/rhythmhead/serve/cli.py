"""``rhythmhead serve``: one ASGI app (FastAPI on uvicorn) — the HTTP API at ``/v1`` and the web page at ``/``.

Everything is checked before the models load (device, models folder, work folder, the port being free); the models
load once; jobs run in ``--workers`` threads sharing them (:mod:`rhythmhead.serve.jobs`). Ctrl-C or SIGTERM stops
taking requests, cancels the queued jobs, gives the running ones :data:`GRACE_S` seconds to finish (then marks them
failed; videos are written atomically, so none is left half-written) and deletes the work folder's job folders.
"""
from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import click

from ..errors import InputError

GRACE_S = 30.0


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (as ``MALLOC_ARENA_MAX`` does), unless that variable is set: each request and worker
    thread otherwise gets its own arena, and RSS grew by ~100 MB per burst of 12 jobs (1.02 → 1.24 GB over 4 bursts;
    capped: 0.79–0.85 GB over 5, not growing). Returns whether it was applied (False off glibc)."""
    import ctypes
    import ctypes.util
    import os

    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-8, arenas))  # -8 = M_ARENA_MAX
    except (OSError, AttributeError):
        return False


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port "
                             "or --host") from None


def _work_dir(work: str | None) -> tuple[Path, bool]:
    if work is None:
        return Path(tempfile.mkdtemp(prefix="rhythmhead-serve-")), True
    path = Path(work)
    if path.exists() and not path.is_dir():
        raise InputError("--work must be a folder, this is a file", path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the work folder ({exc.strerror or exc})", path) from None
    return path, False


def mount_web(app, manager, echo, token: str | None = None):
    """The app with the web page (:func:`rhythmhead.serve.web.mount`) at ``/``; where that module cannot be imported,
    a warning says why and ``/`` leads to the API docs."""
    try:
        from .web import mount
    except ImportError as exc:
        echo(f"warning: no web page ({exc}); serving the API only (/v1, docs at /docs)")
        from fastapi.responses import RedirectResponse

        app.add_api_route("/", lambda: RedirectResponse("/docs"), include_in_schema=False)
        return app
    return mount(app, manager, token=token)


@click.command("serve", context_settings={"max_content_width": 110})
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; then set --token).")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True)
@click.option("--models", type=click.Path(file_okay=False), metavar="DIR",
              help="Models folder (tools/make_bundle.py); default: the bundled models.")
@click.option("--preset", type=click.Choice(["fast", "paper"]), default="fast", show_default=True,
              help="Run settings of every job (K reference frames, chunk, batch).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Jobs generated at once (threads sharing the models; the CPU's threads are split among them).")
@click.option("--token", envvar="RHYTHMHEAD_TOKEN", metavar="TOKEN",
              help="Require 'Authorization: Bearer TOKEN' on every /v1 call (or set RHYTHMHEAD_TOKEN).")
@click.option("--work", type=click.Path(file_okay=False), metavar="DIR",
              help="The only folder the server writes to (uploads, videos); default: a new temporary folder.")
@click.option("--max-upload-mb", type=click.IntRange(1, 1_000_000), default=200, show_default=True,
              help="Largest request (all uploads together).")
@click.option("--max-seconds", type=click.FloatRange(0), default=600.0, show_default=True,
              help="Longest speech accepted, in seconds (0 = no limit).")
@click.option("--queue", type=click.IntRange(0, 100_000), default=8, show_default=True,
              help="Jobs that may wait; more get 429 with Retry-After.")
@click.option("--expire-minutes", type=click.FloatRange(0, min_open=True), default=60.0, show_default=True,
              help="Finished jobs and their files are deleted this long after.")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cpu, cuda, cuda:1.")
def serve(host, port, models, preset, workers, token, work, max_upload_mb, max_seconds, queue, expire_minutes, device):
    """Serve the web page (/) and the HTTP API (/v1, docs at /docs) with the models loaded once.

    \b
    Examples:
      rhythmhead serve                                   # http://127.0.0.1:7860/
      rhythmhead serve --host 0.0.0.0 --token SECRET --workers 2 --work /srv/rhythmhead
      curl -F reference=@photo.jpg -F audio=@speech.wav -F 'controls={"seed": 3}' http://127.0.0.1:7860/v1/jobs
    """
    import time

    import torch
    import uvicorn

    from ..inference.bundle import check_bundle, resolve_models_dir
    from ..inference.options import check_device
    from ..inference.pipeline import TalkingHeadPipeline
    from .api import create_app
    from .jobs import JobManager

    echo = lambda msg: click.echo(msg, err=True)  # noqa: E731
    limit_malloc_arenas()
    device = check_device(device)
    root = resolve_models_dir(models, preset)
    check_bundle(root)
    _check_port(host, port)
    work_dir, temporary = _work_dir(work)
    manager = None
    try:
        if workers > 1:
            torch.set_num_threads(max(1, torch.get_num_threads() // workers))
        start = time.perf_counter()
        pipe = TalkingHeadPipeline.load(root, device=device, preset=preset)
        echo(f"loaded models from {root} in {time.perf_counter() - start:.1f} s ({preset} preset, {device})")
        manager = JobManager(pipe, work_dir, workers=workers, queue=queue, expire_minutes=expire_minutes,
                             max_seconds=max_seconds)
        app = create_app(manager, token=token, max_upload_mb=max_upload_mb,
                         info={"models": str(root), "preset": preset, "device": device})
        app = mount_web(app, manager, echo, token)
        shown = f"[{host}]" if ":" in host else host
        click.echo(f"serving on http://{shown}:{port}/  (API /v1, docs /docs; work folder {work_dir}); "
                   "Ctrl-C stops")
        if host not in ("127.0.0.1", "localhost", "::1") and not token:
            echo("warning: listening beyond this machine without --token: anyone who reaches it can use it")
        try:
            uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down for
            pass
    finally:
        if manager is not None:
            echo("stopping: queued jobs cancelled, running ones get "
                 f"{GRACE_S:.0f} s to finish")
            manager.close(grace=GRACE_S)
        if temporary:
            shutil.rmtree(work_dir, ignore_errors=True)
    echo("stopped")
