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
