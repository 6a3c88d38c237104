"""Fixtures of the server tests: a job manager + app over the session's tiny pipeline (tests/conftest.py: a job takes
about a second), the packaged photo and a faceless grey photo."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

ASSETS = Path(str(resources.files("rhythmhead") / "assets"))
PHOTO = ASSETS / "demo_photo.png"


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
