"""Shared fixtures. Media tests read ../shared/media: they skip only where it is absent and CI is unset."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("RHYTHMHEAD_MEDIA", REPO.parent / "shared" / "media"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """../shared/media; skipped where absent unless CI is set, where its absence is a failure."""
    if not (MEDIA / "talking_video").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the shared media are missing at {MEDIA}")
        pytest.skip(f"no shared media at {MEDIA}")
    return MEDIA


@pytest.fixture
def cli(capsys):
    """Run the ``rhythmhead`` command line in-process: ``cli(argv) → (exit status, stdout, stderr)``."""
    from rhythmhead.cli import main

    def run(argv):
        code = 0
        try:
            main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A models folder of tiny random networks (generates in about a second), with one ablated G."""
    from rhythmhead.inference.random_bundle import write_random_bundle

    return write_random_bundle(tmp_path_factory.mktemp("bundle"), "tiny", ablations=("no_warp",))


@pytest.fixture(scope="session")
def tiny_pipe(tiny_bundle):
    from rhythmhead.inference.pipeline import TalkingHeadPipeline

    return TalkingHeadPipeline.load(tiny_bundle, preset="fast", chunk=10)


@pytest.fixture(scope="session")
def speech_1s(tmp_path_factory) -> Path:
    """1.2 s of the packaged speech (a voiced part), 16 kHz wav."""
    from importlib import resources

    from rhythmhead.media.io import load_audio, write_wav

    wave = load_audio(Path(str(resources.files("rhythmhead") / "assets" / "demo_speech.wav")), 16000)
    path = tmp_path_factory.mktemp("speech") / "speech_1s.wav"
    write_wav(path, wave[int(0.9 * 16000): int(2.1 * 16000)], 16000)
    return path
