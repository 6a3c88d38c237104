"""Fixtures of the server tests: a tiny random bundle (a job takes about a second), one pipeline for the session, a
job manager + app over it, the packaged photo, 1.2 s of the packaged speech and a faceless grey photo."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

ASSETS = Path(str(resources.files("rhythmhead") / "assets"))
PHOTO = ASSETS / "demo_photo.png"
SPEECH = ASSETS / "demo_speech.wav"


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    from rhythmhead.inference.random_bundle import write_random_bundle

    return write_random_bundle(tmp_path_factory.mktemp("bundle"), "tiny")


@pytest.fixture(scope="session")
def tiny_pipe(tiny_bundle):
    from rhythmhead.inference.pipeline import TalkingHeadPipeline

    return TalkingHeadPipeline.load(tiny_bundle, preset="fast", chunk=10)


@pytest.fixture(scope="session")
def speech_1s(tmp_path_factory) -> Path:
    """1.2 s of the packaged speech (a voiced part), 16 kHz wav."""
    from rhythmhead.media.io import load_audio, write_wav

    wave = load_audio(SPEECH, 16000)
    path = tmp_path_factory.mktemp("speech") / "speech_1s.wav"
    write_wav(path, wave[int(0.9 * 16000): int(2.1 * 16000)], 16000)
    return path


@pytest.fixture(scope="session")
def grey_png(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("grey") / "grey.png"
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(path)
    return path


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="session")
def manager(tiny_pipe, work_dir):
    from rhythmhead.serve.jobs import JobManager

    m = JobManager(tiny_pipe, work_dir, workers=1, queue=8, expire_minutes=60)
    yield m
    m.close(grace=5)


@pytest.fixture(scope="session")
def app(manager):
    from rhythmhead.serve.api import create_app

    return create_app(manager, info={"models": "tiny", "preset": "fast", "device": "cpu"})


@pytest.fixture()
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
