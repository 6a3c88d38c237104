"""`rhythmhead serve`'s API over the tiny random bundle: the job lifecycle, every refusal (JSON naming the field,
never a traceback), token, a full queue, cancel, expiry, MJPEG streaming, a shared pipeline under threads, SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rhythmhead.errors import InputError
from rhythmhead.serve.api import create_app
from rhythmhead.serve.jobs import FINISHED, JobManager, QueueFull

PHOTO = Path(str(resources.files("rhythmhead") / "assets" / "demo_photo.png"))


def _part(x):
    return x if isinstance(x, tuple) else (Path(x).name, Path(x).read_bytes())


def submit(client, speech, reference=PHOTO, controls=None, **files):
    """POST /v1/jobs with the photo and ``speech``; ``files`` add or replace uploads (a path, (name, bytes), None)."""
    uploads = {"reference": _part(reference), "audio": _part(speech)}
    for key, value in files.items():
        if value is None:
            uploads.pop(key, None)
        else:
            uploads[key] = _part(value)
    data = {"controls": controls if isinstance(controls, str) else json.dumps(controls or {})}
    return client.post("/v1/jobs", files=uploads, data=data)


def wait(get, job_id, states=FINISHED, timeout=120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get(job_id)
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s")


def uploads(m: JobManager, speech: Path) -> dict[str, Path]:
    """The photo and ``speech`` saved into a new upload folder of ``m``, as the web page does."""
    folder = m.new_upload_dir()
    (folder / "reference.png").write_bytes(PHOTO.read_bytes())
    (folder / "audio.wav").write_bytes(speech.read_bytes())
    return {"reference": folder / "reference.png", "audio": folder / "audio.wav"}


def job_folders(work: Path) -> list[str]:
    return sorted(p.name for p in work.iterdir() if p.is_dir())


@pytest.fixture
def slow_jobs(monkeypatch):
    """Every chunk of frames takes 1 s more (a 1.2 s job: 3 chunks of 10 frames)."""
    from rhythmhead.inference.pipeline import Result

    original = Result._chunks

    def slow(self, on_renders=None):
        for chunk in original(self, on_renders):
            yield chunk
            time.sleep(1.0)

    monkeypatch.setattr(Result, "_chunks", slow)


@pytest.fixture
def own_manager(tiny_pipe, tmp_path):
    """A fresh manager factory (its own work folder), closed after the test."""
    made = []

    def make(**kw):
        m = JobManager(tiny_pipe, tmp_path / f"work{len(made)}", **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        for job_id in list(m._jobs):  # noqa: SLF001
            if m.get(job_id)["state"] in ("queued", "running"):
                m.cancel(job_id)
        m.close(grace=10)


def test_job_lifecycle_video_poses_info(client, speech_1s, manager):
    from rhythmhead.media.io import probe

    r = submit(client, speech_1s, controls={"seed": 3, "motion-scale": 1.2})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert client.get(f"/v1/jobs/{job_id}").json()["state"] in ("queued", "running", "done")
    job = wait(lambda i: client.get(f"/v1/jobs/{i}").json(), job_id)
    assert job["state"] == "done", job
    assert job["progress"] == {"done": 30, "total": 30} and job["error"] is None
    assert {"reference", "generator", "encode"} <= set(job["timings"])
    video = client.get(f"/v1/jobs/{job_id}/video")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    out = manager.work_dir / "check.mp4"
    out.write_bytes(video.content)
    info = probe(out)
    out.unlink()
    assert info.has_video and info.has_audio
    poses = client.get(f"/v1/jobs/{job_id}/poses").json()
    assert poses["frames"] == 30 and np.shape(poses["poses"]) == (30, 6)
    assert np.shape(poses["landmarks"]) == (30, 68, 2) and np.isfinite(poses["poses"]).all()
    assert sorted(p.name for p in (manager.work_dir / job_id).iterdir()) == ["audio.wav", "plan.npz",
                                                                             "reference.png", "video.mp4"]
    # the info lists every control with its range
    about = client.get("/v1/info").json()
    assert about["preset"] == "fast" and about["limits"]["max_upload_mb"] == 200
    assert about["controls"]["motion_scale"] == {"type": "float", "default": 1.0, "min": 0, "max": 5,
                                                 "choices": None, "help": about["controls"]["motion_scale"]["help"]}
    assert about["controls"]["size"]["choices"] == [256, 512]
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]["requestBody"]
    # removing a finished job deletes its files
    assert client.delete(f"/v1/jobs/{job_id}").json()["state"] == "removed"
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert not (manager.work_dir / job_id).exists()


def _multipart(fields: dict[str, tuple[str, bytes]], boundary="XyZ") -> bytes:
    head = '--{}\r\nContent-Disposition: form-data; name="{}"; filename="{}"\r\n\r\n'
    parts = [head.format(boundary, k, n).encode() + b + b"\r\n" for k, (n, b) in fields.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize("case, status, field", [
    ("not_media", 422, "reference"),
    ("text_as_audio", 422, "audio"),
    ("bad_suffix", 422, "reference"),
    ("no_face", 422, "reference"),
    ("missing_audio", 422, "audio"),
    ("missing_everything", 422, "reference"),
    ("bad_control", 422, "controls.motion_scale"),
    ("nan_control", 422, "controls.seed"),
    ("unknown_control", 422, "controls.loudness"),
    ("preset_control", 422, "controls.preset"),
    ("bad_json", 400, "controls"),
    ("too_long", 422, "audio"),
    ("unknown_field", 422, "extra"),
    ("still_and_pose_from", 422, "pose_from"),
])
def test_bad_requests_are_json_naming_the_field(client, speech_1s, grey_png, tmp_path, manager, case, status, field):
    before = job_folders(manager.work_dir)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image at all" * 10)
    if case == "not_media":
        r = submit(client, speech_1s, reference=junk)
    elif case == "text_as_audio":
        r = submit(client, speech_1s, audio=("speech.wav", b"RIFF but not really"))
    elif case == "bad_suffix":
        r = submit(client, speech_1s, reference=("face.exe", PHOTO.read_bytes()))
    elif case == "no_face":
        r = submit(client, speech_1s, reference=grey_png)
    elif case == "missing_audio":
        r = submit(client, speech_1s, audio=None)
    elif case == "missing_everything":
        r = client.post("/v1/jobs", files={"controls": (None, "{}")})
    elif case == "bad_control":
        r = submit(client, speech_1s, controls={"motion_scale": 99})
    elif case == "nan_control":
        r = submit(client, speech_1s, controls='{"seed": NaN}')
    elif case == "unknown_control":
        r = submit(client, speech_1s, controls={"loudness": 3})
    elif case == "preset_control":
        r = submit(client, speech_1s, controls={"preset": "paper"})
    elif case == "bad_json":
        r = submit(client, speech_1s, controls="{motion_scale: 1")
    elif case == "too_long":
        r = submit(client, speech_1s, controls={"max_seconds": 1})
    elif case == "unknown_field":
        r = submit(client, speech_1s, extra=("x.png", b"123"))
    elif case == "still_and_pose_from":
        np.save(tmp_path / "p.npy", np.zeros((10, 6), np.float32))
        r = submit(client, speech_1s, controls={"still": True}, pose_from=("p.npy", (tmp_path / "p.npy").read_bytes()))
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["field"] == field and error["message"], error
    if case == "bad_control":  # named as the request names it
        assert error["message"] == "motion_scale must be from 0 to 5, got 99", error
    assert "Traceback" not in r.text and str(manager.work_dir) not in r.text
    assert job_folders(manager.work_dir) == before  # a refused upload leaves nothing behind


def test_upload_limits_are_enforced_while_reading(manager, speech_1s):
    app = create_app(manager, max_upload_mb=1)
    before = job_folders(manager.work_dir)
    with TestClient(app, raise_server_exceptions=False) as client:
        big = ("big.png", PHOTO.read_bytes() + b"\0" * (2 << 20))
        r = submit(client, speech_1s, reference=big)  # declared length over the limit: refused up front
        assert r.status_code == 413 and "1 MB" in r.json()["error"]["message"]
        body = _multipart({"reference": big, "audio": ("a.wav", speech_1s.read_bytes())})
        chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))  # chunked: no length to trust
        r = client.post("/v1/jobs", content=chunks, headers={"content-type": "multipart/form-data; boundary=XyZ"})
        assert r.status_code == 413 and r.json()["error"]["field"] == "reference"
        r = client.post("/v1/jobs", content=b"{}", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "multipart" in r.json()["error"]["message"]
    assert job_folders(manager.work_dir) == before


def test_server_speech_limit_caps_the_control(own_manager, speech_1s):
    m = own_manager(max_seconds=1)
    with TestClient(create_app(m)) as client:
        r = submit(client, speech_1s, controls={"max_seconds": 0})  # "no limit" cannot lift the server's
        assert r.status_code == 422 and r.json()["error"]["field"] == "audio"
        assert "over the limit" in r.json()["error"]["message"]
        assert client.get("/v1/info").json()["controls"]["max_seconds"]["max"] == 1


def test_token(manager):
    with TestClient(create_app(manager, token="s3cret")) as client:
        assert client.get("/v1/info").status_code == 401
        r = client.get("/v1/info", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["field"] == "authorization"
        assert r.headers["www-authenticate"] == "Bearer"
        assert client.post("/v1/jobs").status_code == 401
        assert client.get("/v1/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/healthz").status_code == 200


def test_unexpected_errors_are_500_json_without_traceback(manager, monkeypatch, caplog):
    def broken(job_id):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(manager, "get", broken)
    with TestClient(create_app(manager), raise_server_exceptions=False) as client:
        r = client.get("/v1/jobs/abc")
    assert r.status_code == 500 and r.json() == {"error": {"field": None,
                                                          "message": "internal server error (logged on the server)"}}
    assert "secret" not in r.text and "Traceback" not in r.text
    assert "secret internal detail" in caplog.text  # logged on the server


def test_queue_full_is_429_with_retry_after(own_manager, speech_1s, slow_jobs):
    m = own_manager(workers=1, queue=1)
    with TestClient(create_app(m)) as client:
        first = submit(client, speech_1s).json()["id"]
        wait(m.get, first, ("running",))
        second = submit(client, speech_1s)
        assert second.status_code == 202
        assert m.get(second.json()["id"])["queue_position"] == 1
        third = submit(client, speech_1s)
        assert third.status_code == 429, third.text
        assert int(third.headers["retry-after"]) >= 1 and third.json()["error"]["message"]
        assert len(job_folders(m.work_dir)) == 2
        with pytest.raises(QueueFull):
            m.submit(uploads(m, speech_1s), {})
        assert len(job_folders(m.work_dir)) == 2  # the refused upload folder is gone
        files = uploads(m, speech_1s)
        with pytest.raises(InputError, match="is required"):
            m.submit({"audio": files["audio"]}, {})
        assert len(job_folders(m.work_dir)) == 2


def test_cancel_running_and_queued(own_manager, speech_1s, slow_jobs):
    m = own_manager(workers=1, queue=4)
    with TestClient(create_app(m)) as client:
        running = submit(client, speech_1s).json()["id"]
        queued = submit(client, speech_1s).json()["id"]
        wait(m.get, running, ("running",))
        assert client.delete(f"/v1/jobs/{queued}").json()["state"] == "cancelled"
        client.delete(f"/v1/jobs/{running}")
        job = wait(m.get, running)
        assert job["state"] == "cancelled" and job["progress"]["done"] < 30
        assert client.get(f"/v1/jobs/{running}/video").status_code == 409
        assert job_folders(m.work_dir) == []  # a cancelled job leaves no files (no partial video)
        assert client.delete(f"/v1/jobs/{running}").json()["state"] == "removed"
        assert client.get(f"/v1/jobs/{running}").status_code == 404


def test_two_workers_share_the_pipeline(own_manager, speech_1s):
    m = own_manager(workers=2)
    ids = [m.submit(uploads(m, speech_1s), {"seed": i}) for i in range(2)]
    for job_id in ids:
        assert wait(m.get, job_id)["state"] == "done" and m.video_path(job_id).stat().st_size > 1000


def test_expiry_deletes_jobs_and_orphan_uploads(own_manager, speech_1s):
    m = own_manager(expire_minutes=0.01)  # 0.6 s; the sweeper runs every 0.15 s
    orphan = m.new_upload_dir()
    (orphan / "reference.png").write_bytes(b"half an upload")
    job_id = m.submit(uploads(m, speech_1s), {})
    assert wait(m.get, job_id)["state"] == "done" and m.video_path(job_id).is_file()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and job_folders(m.work_dir):
        time.sleep(0.1)
    assert job_folders(m.work_dir) == []
    with pytest.raises(KeyError):
        m.get(job_id)


def test_stream_sends_jpeg_frames_before_the_job_is_done(own_manager, speech_1s, slow_jobs):
    import httpx

    from rhythmhead.serve.local import LocalServer

    m = own_manager()
    with LocalServer(create_app(m)) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        job_id = submit(client, speech_1s).json()["id"]
        with client.stream("GET", f"/v1/jobs/{job_id}/stream") as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
            data = b""
            for chunk in r.iter_bytes():
                data += chunk
                if b"\xff\xd9" in data:  # the end of the first JPEG
                    break
            state = client.get(f"/v1/jobs/{job_id}").json()["state"]
        assert state == "running"
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: ")
        assert rest[:2] == b"\xff\xd8"
        length = int(head.rsplit(b" ", 1)[1])
        import cv2

        frame = cv2.imdecode(np.frombuffer(rest[:length], np.uint8), cv2.IMREAD_COLOR)
        assert frame.shape == (256, 256, 3)
        assert wait(lambda i: client.get(f"/v1/jobs/{i}").json(), job_id)["state"] == "done"
        assert client.get(f"/v1/jobs/{job_id}/stream").status_code == 409


def test_pipeline_is_thread_safe(tiny_pipe, speech_1s):
    """Two generations at once on the shared pipeline give the frames they give one after the other."""
    def frames():
        return np.stack(list(tiny_pipe(PHOTO, speech_1s, seed=1).frames()))

    alone = frames()
    together = [None, None]

    def run(i):
        together[i] = frames()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in together:
        assert got.shape == alone.shape and np.abs(got.astype(int) - alone).max() <= 1


def test_serve_command_starts_and_stops_on_sigterm(tiny_bundle, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = tmp_path / "work"
    proc = subprocess.Popen([sys.executable, "-m", "rhythmhead", "serve", "--models", str(tiny_bundle), "--port",
                             str(port), "--work", str(work)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    import httpx

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.2)
        about = httpx.get(f"http://127.0.0.1:{port}/v1/info").json()
        assert about["models"] == str(tiny_bundle) and about["limits"]["queue"] == 8
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert f"http://127.0.0.1:{port}/" in out
    assert proc.returncode in (0, 143), err
    assert "Traceback" not in err
    assert list(work.iterdir()) == []
