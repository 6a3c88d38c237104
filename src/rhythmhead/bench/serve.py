"""``rhythmhead bench serve``: the server under concurrent clients on loopback.

A real uvicorn server (:class:`rhythmhead.serve.local.LocalServer`) runs the app of ``rhythmhead serve`` in a thread
on a free port, with the models loaded once (``models``: default the bundled ones) and a
:class:`~rhythmhead.serve.jobs.JobManager` of ``workers`` threads and a queue of ``queue``. ``clients`` httpx clients,
one thread each, start together; each submits one job — the packaged photo and ``seconds`` of the packaged speech —
once, polls it until it ends and downloads its video. A job refused with 429 (queue full) is not retried: every client
must end with its video or a 429, and ``accounted`` says whether they all did.

Result::

    {"serve": {"jobs_per_min", "p50_s", "p95_s", "peak_mb", "done", "rejected_429", "failed", "accounted",
               "clients", "seconds", "workers", "queue", "rss_before_mb", "rss_after_mb", "wall_s", ...}}

Latency is a finished job's time from its POST to its downloaded video; jobs/min counts finished jobs over the wall
time from the first POST to the last download; peak memory is the process's (server and clients) resident-set high
water mark over the run (:mod:`rhythmhead.bench.common`).
"""
from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import InputError


def _rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _client(url: str, photo: Path, speech: Path, start: threading.Event, out: dict) -> None:
    import httpx

    start.wait()
    t0 = time.perf_counter()
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            files = {"reference": ("photo.png", photo.read_bytes()), "audio": ("speech.wav", speech.read_bytes())}
            r = client.post("/v1/jobs", files=files, data={"controls": "{}"})
            if r.status_code == 429:
                out.update(outcome="rejected_429", retry_after=r.headers.get("retry-after"))
                return
            if r.status_code != 202:
                out.update(outcome="failed", error=r.text[:200])
                return
            job_id = r.json()["id"]
            while (job := client.get(f"/v1/jobs/{job_id}").json())["state"] in ("queued", "running"):
                time.sleep(0.2)
            if job["state"] != "done":
                out.update(outcome="failed", error=job.get("error"))
                return
            video = client.get(f"/v1/jobs/{job_id}/video")
            ok = video.status_code == 200 and len(video.content) > 1000
            out.update(outcome="done" if ok else "failed", latency=time.perf_counter() - t0, end=time.perf_counter(),
                       frames=job["progress"]["done"], bytes=len(video.content))
    except Exception as exc:  # noqa: BLE001 — a broken client is a result of the benchmark, not its crash
        out.update(outcome="failed", error=f"{type(exc).__name__}: {exc}")


def run(preset: str = "fast", clients: int = 20, seconds: float = 3.0, models: str | None = None,
        workers: int = 1, queue: int = 8) -> dict[str, dict]:
    """Benchmark the server (see the module docstring)."""
    from importlib import resources

    from ..inference.bundle import check_bundle, resolve_models_dir
    from ..inference.pipeline import TalkingHeadPipeline
    from ..serve.api import create_app
    from ..serve.cli import limit_malloc_arenas
    from ..serve.jobs import JobManager
    from ..serve.local import LocalServer
    from .common import _reset_peak_rss, _ru_maxrss_mb, _vm_hwm_mb
    from .end2end import _speech

    try:
        import httpx  # noqa: F401
    except ImportError:
        raise InputError("the serve benchmark needs httpx (pip install httpx)") from None
    limit_malloc_arenas()  # as rhythmhead serve does
    root = resolve_models_dir(models, preset)
    check_bundle(root)
    with tempfile.TemporaryDirectory() as tmp_name, \
            resources.as_file(resources.files("rhythmhead") / "assets" / "demo_photo.png") as photo:
        tmp = Path(tmp_name)
        pipe = TalkingHeadPipeline.load(root, preset=preset)
        pipe(photo, _speech(1.0, tmp / "warm.wav"), blink=False).save(tmp / "warm.mp4")  # imports, kernels, caches
        speech = _speech(seconds, tmp / "speech.wav")
        manager = JobManager(pipe, tmp / "work", workers=workers, queue=queue)
        results = [{} for _ in range(clients)]
        try:
            with LocalServer(create_app(manager)) as server:
                start = threading.Event()
                threads = [threading.Thread(target=_client, args=(server.url, photo, speech, start, r), daemon=True)
                           for r in results]
                for t in threads:
                    t.start()
                rss_before = _rss_mb()
                exact = _reset_peak_rss() and _vm_hwm_mb() is not None
                t0 = time.perf_counter()
                start.set()
                for t in threads:
                    t.join()
                peak = _vm_hwm_mb() if exact else _ru_maxrss_mb()
                rss_after = _rss_mb()
        finally:
            manager.close(grace=5)
    outcomes = [r.get("outcome", "failed") for r in results]
    done = [r for r in results if r.get("outcome") == "done"]
    latencies = np.array([r["latency"] for r in done]) if done else np.array([np.nan])
    wall = (max(r["end"] for r in done) - t0) if done else float("nan")
    errors = sorted({str(r.get("error")) for r in results if r.get("outcome") == "failed"})
    return {"serve": {
        "jobs_per_min": round(len(done) / wall * 60, 2) if done else 0.0,
        "p50_s": round(float(np.percentile(latencies, 50)), 2), "p95_s": round(float(np.percentile(latencies, 95)), 2),
        "peak_mb": round(peak, 1), "rss_before_mb": rss_before, "rss_after_mb": rss_after,
        "done": len(done), "rejected_429": outcomes.count("rejected_429"), "failed": outcomes.count("failed"),
        "accounted": outcomes.count("failed") == 0, "errors": errors[:5], "clients": clients, "seconds": seconds,
        "frames_per_job": done[0]["frames"] if done else None, "workers": workers, "queue": queue,
        "wall_s": round(wall, 2), "preset": preset, "models": str(root),
        "peak_source": "VmHWM (reset before the clients)" if exact else "ru_maxrss (process lifetime)"}}
