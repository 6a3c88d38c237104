"""Reliability of ``rhythmhead generate`` and the pipeline API (commit 24c2499): every bad control value is one line and
exit status 2 wherever it comes from (command line, jobs file, Python), NaN/inf and truncated audio are refused, a short
--pose-from is said, a full disk is one line, and SIGTERM / SIGKILL leave no partial output behind (or a stale temp
file that the next run sweeps)."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import soundfile

from rhythmhead.errors import InputError
from rhythmhead.inference.options import GenerationControls
from rhythmhead.media.io import load_audio, write_video, write_wav


PHOTO = Path(str(resources.files("rhythmhead") / "assets" / "demo_photo.png"))
SPEECH = PHOTO.parent / "demo_speech.wav"
RATE = 16000


def base(tmp_path, bundle, reference=PHOTO, audio=None, **extra):
    argv = ["generate", "--reference", str(reference), "--audio", str(audio), "--out", str(tmp_path / "out.mp4"),
            "--models", str(bundle), "-q"]
    for key, value in extra.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def assert_failed_cleanly(code, err, tmp_path, *phrases):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert not (tmp_path / "out.mp4").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def _speech(seconds: float) -> np.ndarray:
    """``seconds`` of the packaged speech (tiled if longer than it), float32 at 16 kHz."""
    wave = load_audio(SPEECH, RATE)
    n = int(seconds * RATE)
    return np.tile(wave, n // len(wave) + 1)[:n].astype(np.float32)


def _temps(folder: Path, name: str = "out.mp4") -> list[Path]:
    return sorted(folder.glob(f".{name}.*.tmp*"))


# -- 1. command-line values ------------------------------------------------------------------------------------------
CLI_BAD = [
    (["--motion-scale", "nan"], "--motion-scale"),
    (["--expression-scale", "inf"], "--expression-scale"),
    (["--max-seconds", "nan"], "--max-seconds"),
    (["--seed", "-5"], "--seed"),
    (["--seed", "1.5"], "--seed"),
    (["--finetune-steps", "100000000"], "--finetune-steps"),
    (["--size", "300"], "--size"),
    (["--max-size", "10"], "--max-size"),
    (["--device", "bogus"], "--device"),
    (["--device", "cuda:7"], "--device"),
    (["--colour", "red"], "--colour"),
]


@pytest.mark.parametrize("extra,option", CLI_BAD, ids=[" ".join(a) for a, _ in CLI_BAD])
def test_bad_cli_value_is_one_line(tmp_path, tiny_bundle, speech_1s, cli, extra, option):
    if extra[:2] == ["--device", "cuda:7"]:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 7:
            pytest.skip("this machine has a cuda:7")
    before = _listing(tmp_path)
    code, _, err = cli(base(tmp_path, tiny_bundle, audio=speech_1s) + extra)
    assert_failed_cleanly(code, err, tmp_path, option)
    assert _listing(tmp_path) == before, "the failed run left files behind"


# -- 2. jobs files ---------------------------------------------------------------------------------------------------
def _forbid_model_loading(monkeypatch) -> None:
    """Loading the models fails the test at once (a value let through, e.g. 1e8 fine-tuning steps, would run long)."""
    from rhythmhead.inference import pipeline

    def load(cls, *args, **kwargs):
        raise AssertionError("the models were loaded before the jobs file was validated")

    monkeypatch.setattr(pipeline.TalkingHeadPipeline, "load", classmethod(load))


JOB_BAD = [
    ({"motion_scale": "big"}, "--motion-scale"),
    ({"motion_scale": 1e9}, "--motion-scale"),
    ({"seed": -5}, "--seed"),
    ({"finetune_steps": 1e8}, "--finetune-steps"),
    ({"blink": "yes"}, "--blink"),
    ({"reference": 5}, "--reference"),
]


@pytest.mark.parametrize("bad,option", JOB_BAD, ids=[json.dumps(b) for b, _ in JOB_BAD])
def test_bad_jobs_value_stops_the_batch_before_models_load(tmp_path, tiny_bundle, speech_1s, cli, monkeypatch,
                                                           bad, option):
    _forbid_model_loading(monkeypatch)
    good = {"reference": str(PHOTO), "audio": str(speech_1s), "out": str(tmp_path / "a.mp4")}
    wrong = {"reference": str(PHOTO), "audio": str(speech_1s), "out": str(tmp_path / "b.mp4"), **bad}
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps(good) + "\n" + json.dumps(wrong) + "\n")
    before = _listing(tmp_path)
    code, out, err = cli(["generate", "--models", str(tiny_bundle), "--jobs", str(jobs), "-q"])
    assert code == 2, err
    lines = _error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "line 2" in lines[0] and option in lines[0], lines[0]
    assert _listing(tmp_path) == before and "wrote" not in out, "a job was generated"


def test_batch_job_failing_at_run_time_does_not_stop_the_others(tmp_path, tiny_bundle, speech_1s, cli):
    from PIL import Image

    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(tmp_path / "wall.png")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(j) for j in [
        {"reference": str(tmp_path / "wall.png"), "audio": str(speech_1s), "out": str(tmp_path / "a.mp4")},
        {"reference": str(PHOTO), "audio": str(speech_1s), "out": str(tmp_path / "b.mp4")},
    ]) + "\n")
    code, out, err = cli(["generate", "--models", str(tiny_bundle), "--jobs", str(jobs), "-q"])
    assert code == 2, err
    lines = _error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: job 1:") and "Traceback" not in err, err
    assert "wall.png" in lines[0] and "no face" in lines[0], lines[0]
    assert not (tmp_path / "a.mp4").exists() and (tmp_path / "b.mp4").is_file()
    assert out.count("wrote") == 1
    assert not _temps(tmp_path, "a.mp4") and not _temps(tmp_path, "b.mp4")


def test_batch_job_failing_with_any_exception_is_reported(tmp_path, tiny_bundle, speech_1s, cli, monkeypatch):
    from rhythmhead.inference import generate_cli

    real = generate_cli.run_job

    def flaky(pipe, job, echo, progress=True):
        if job.line == 1:
            raise RuntimeError("boom")
        return real(pipe, job, echo, progress)

    monkeypatch.setattr(generate_cli, "run_job", flaky)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps({"reference": str(PHOTO), "audio": str(speech_1s),
                                          "out": str(tmp_path / f"{n}.mp4")}) for n in "ab") + "\n")
    code, out, err = cli(["generate", "--models", str(tiny_bundle), "--jobs", str(jobs), "-q"])
    assert code == 2, err
    lines = _error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: job 1:") and "boom" in lines[0], err
    assert "Traceback" not in err
    assert (tmp_path / "b.mp4").is_file() and not (tmp_path / "a.mp4").exists()


# -- 3. Python API ---------------------------------------------------------------------------------------------------
def test_api_refuses_nan_and_unknown_controls(tiny_pipe, photo_ref, speech_1s):
    with pytest.raises(InputError, match="--motion-scale"):
        tiny_pipe(photo_ref, str(speech_1s), motion_scale=float("nan"))
    with pytest.raises(InputError, match="motion_scal"):
        tiny_pipe(photo_ref, str(speech_1s), motion_scal=1)


def test_generation_controls_check_and_coerce():
    with pytest.raises(InputError, match="--seed"):
        GenerationControls(seed=-1)
    with pytest.raises(InputError, match="--motion-scale"):
        GenerationControls(motion_scale=math.inf)
    c = GenerationControls.from_values({"size": "512", "seed": 3.0})
    assert c.size == 512 and type(c.size) is int
    assert c.seed == 3 and type(c.seed) is int


def test_plan_refuses_out_of_range_motion_scale(tiny_pipe, photo_ref, speech_1s):
    from rhythmhead.inference.inputs import load_driving_audio

    prepared = tiny_pipe.prepare(photo_ref)
    audio = load_driving_audio(speech_1s)
    with pytest.raises(InputError, match="--motion-scale"):
        tiny_pipe.plan(prepared, audio, motion_scale=1e9)
    assert tiny_pipe.plan(prepared, audio, motion_scale=2.0).poses.shape[1] == 6  # an allowed one still plans


# -- 4. audio --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_float_wav_with_non_finite_samples(tmp_path, tiny_bundle, cli, bad):
    wave = _speech(1.5)
    soundfile.write(tmp_path / "good.wav", wave, RATE, subtype="FLOAT")
    assert np.isfinite(load_audio(tmp_path / "good.wav")).all()  # the same file without them loads
    wave[RATE // 2: RATE // 2 + 10] = bad
    soundfile.write(tmp_path / "float.wav", wave, RATE, subtype="FLOAT")
    assert soundfile.info(str(tmp_path / "float.wav")).subtype == "FLOAT"
    code, _, err = cli(base(tmp_path, tiny_bundle, audio=tmp_path / "float.wav"))
    assert_failed_cleanly(code, err, tmp_path, "float.wav")
    line = _error_lines(err)[0]
    assert "NaN" in line or "infinite" in line, line


def test_truncated_pcm_wav(tmp_path, tiny_bundle, cli):
    soundfile.write(tmp_path / "cut.wav", _speech(2.0), RATE, subtype="PCM_16")
    assert len(load_audio(tmp_path / "cut.wav")) == 2 * RATE  # complete: loads
    data = (tmp_path / "cut.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        load_audio(tmp_path / "cut.wav")
    code, _, err = cli(base(tmp_path, tiny_bundle, audio=tmp_path / "cut.wav"))
    assert_failed_cleanly(code, err, tmp_path, "cut.wav", "truncated")


def test_truncated_mp4_audio(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (50, 64, 64, 3), dtype=np.uint8)
    write_video(tmp_path / "clip.mp4", frames, 25, audio=_speech(2.0), sample_rate=RATE)
    full = load_audio(tmp_path / "clip.mp4")
    assert abs(len(full) - 2 * RATE) < 0.1 * RATE  # complete: loads, about 2 s
    data = (tmp_path / "clip.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(0.3 * len(data))])
    with pytest.raises(InputError, match="truncated"):
        load_audio(tmp_path / "cut.mp4")


@pytest.mark.parametrize("fmt,codec", [("mp3", "libmp3lame"), ("m4a", "aac")])
def test_complete_compressed_audio_still_loads(tmp_path, fmt, codec):
    """No false 'truncated' on a complete mp3/m4a (whose decoded length differs a little from the declared one)."""
    import av

    if codec not in av.codecs_available:
        pytest.skip(f"PyAV has no {codec} encoder")
    wave = _speech(2.0)
    path = tmp_path / f"speech.{fmt}"
    with av.open(str(path), "w", format="mp4" if fmt == "m4a" else fmt) as container:
        stream = container.add_stream(codec, rate=RATE if fmt == "m4a" else 22050)
        stream.layout = "mono"
        src = wave if fmt == "m4a" else load_audio(SPEECH, 22050)[: 2 * 22050]
        frame = av.AudioFrame.from_ndarray(src[None].astype(np.float32), format="flt", layout="mono")
        frame.rate = stream.rate
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=stream.rate)
        for f in resampler.resample(frame):
            for packet in stream.encode(f):
                container.mux(packet)
        for f in resampler.resample(None):
            for packet in stream.encode(f):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    loaded = load_audio(path)
    assert abs(len(loaded) - 2 * RATE) < 0.2 * RATE and np.isfinite(loaded).all()


# -- 5. short --pose-from ----------------------------------------------------------------------------------------------
def test_short_pose_track_is_said(tmp_path, tiny_bundle, speech_1s, cli):
    np.save(tmp_path / "p.npy", np.zeros((5, 6), np.float32))
    code, _, err = cli(base(tmp_path, tiny_bundle, audio=speech_1s, pose_from=tmp_path / "p.npy"))
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert any("--pose-from" in w and "forth and back" in w for w in warnings), err
    assert (tmp_path / "out.mp4").is_file()


# -- 6./7. subprocesses: disk full, SIGTERM, SIGKILL -----------------------------------------------------------------
def _cli(tmp_path, bundle, audio, preexec_fn=None, **popen):
    argv = [sys.executable, "-m", "rhythmhead", *base(tmp_path, bundle, audio=audio)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=preexec_fn, **popen)


def test_disk_full_is_one_line(tmp_path, tiny_bundle, speech_1s):
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    proc = _cli(tmp_path, tiny_bundle, speech_1s, preexec_fn=limit)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, (proc.returncode, err)
    lines = _error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "out.mp4" in lines[0] and "File too large" in lines[0], lines[0]
    assert not (tmp_path / "out.mp4").exists() and not _temps(tmp_path), _listing(tmp_path)


def _start_and_wait_for_temp(tmp_path, bundle, audio):
    proc = _cli(tmp_path, bundle, audio)
    deadline = time.monotonic() + 90
    while not _temps(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if not _temps(tmp_path):
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the temporary output never appeared (exit {proc.returncode}): {err}")
    assert re.fullmatch(rf"\.out\.mp4\.{proc.pid}\..+\.tmp\.mp4", _temps(tmp_path)[0].name), _temps(tmp_path)
    return proc


@pytest.fixture(scope="module")
def speech_long(tmp_path_factory) -> Path:
    """20 s of speech: long enough that the tiny bundle is still writing when a signal comes."""
    path = tmp_path_factory.mktemp("long") / "speech_20s.wav"
    write_wav(path, _speech(20.0), RATE)
    return path


def test_sigterm_leaves_nothing(tmp_path, tiny_bundle, speech_long):
    proc = _start_and_wait_for_temp(tmp_path, tiny_bundle, speech_long)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, (proc.returncode, err)
    assert "Traceback" not in err, err
    assert not (tmp_path / "out.mp4").exists() and not _temps(tmp_path), _listing(tmp_path)


def test_sigkill_temp_is_swept_by_the_next_run(tmp_path, tiny_bundle, speech_long, speech_1s, cli):
    proc = _start_and_wait_for_temp(tmp_path, tiny_bundle, speech_long)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    stale = _temps(tmp_path)
    assert stale and not (tmp_path / "out.mp4").exists()
    code, _, err = cli(base(tmp_path, tiny_bundle, audio=speech_1s))
    assert code == 0, err
    assert (tmp_path / "out.mp4").is_file()
    assert not _temps(tmp_path), f"stale temp files left: {_temps(tmp_path)}"


# -- 8. help ---------------------------------------------------------------------------------------------------------
def test_help_says_an_existing_output_is_replaced(cli):
    code, out, _ = cli(["generate", "--help"])
    assert code == 0
    assert "existing output file is replaced" in " ".join(out.split())
