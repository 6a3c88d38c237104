"""Fixtures of the pipeline tests: the packaged photo and a synthetic talking video (the tiny random bundle, its
pipeline and 1.2 s of speech are in tests/conftest.py, shared with the server tests).

Everything is made on the fly from package assets (no ../shared needed): the NASA astronaut portrait, the project's own
synthesised speech, and a 2 s video of the portrait moving slightly with that speech as its audio track.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

ASSETS = Path(str(resources.files("rhythmhead") / "assets"))
PHOTO = ASSETS / "demo_photo.png"
SPEECH = ASSETS / "demo_speech.wav"


@pytest.fixture(scope="session")
def photo_ref():
    from rhythmhead.inference.inputs import load_reference

    return load_reference(PHOTO)[0]


@pytest.fixture(scope="session")
def talking_video(tmp_path_factory) -> Path:
    """2 s, 25 fps, the portrait shifting and turning a little, with 2 s of speech as audio."""
    import cv2

    from rhythmhead.media.io import VideoWriter, load_audio, read_image

    img = read_image(PHOTO)
    wave = load_audio(SPEECH, 16000)[: 2 * 16000]
    path = tmp_path_factory.mktemp("video") / "talking.mp4"
    h, w = img.shape[:2]
    with VideoWriter(path, fps=25, audio=wave, sample_rate=16000, preset="ultrafast") as writer:
        for t in range(50):
            angle = 6 * np.sin(2 * np.pi * t / 25)
            m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
            m[0, 2] += 6 * np.sin(2 * np.pi * t / 50)
            writer.write(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT))
    return path


@pytest.fixture(scope="session")
def video_ref(talking_video):
    from rhythmhead.inference.inputs import load_reference

    return load_reference(talking_video)[0]
