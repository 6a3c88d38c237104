"""The models shipped in the package (rhythmhead/models_bundled, see MODEL_CARD.md) load and make a talking head."""
from __future__ import annotations

import numpy as np
import pytest

from rhythmhead.evaluation.metrics import ssim
from rhythmhead.inference.bundle import check_bundle, default_models_dir


@pytest.fixture(scope="module")
def bundled_pipe():
    from rhythmhead.inference.pipeline import TalkingHeadPipeline

    return TalkingHeadPipeline.load(None, preset="fast")


def test_bundle_is_complete_and_small():
    root = default_models_dir()
    check_bundle(root)
    total = sum(p.stat().st_size for p in root.iterdir())
    assert total <= 40 * 2**20
    assert (root / "motion_style.npz").is_file()


def test_bundled_models_animate_the_photo(bundled_pipe, photo_ref, speech_1s):
    result = bundled_pipe(photo_ref, speech_1s, seed=0)
    frames = np.stack(list(result.frames()))
    n = result.n_frames
    assert frames.shape == (n, 256, 256, 3) and n >= 25
    # the head moves (Φ with the default style) and the mouth opens and closes with the speech (Ψ)
    assert result.poses[:, :3].std(0).max() > 1e-3
    mouth = result.landmarks[:, 66, 1] - result.landmarks[:, 62, 1]
    assert mouth.max() - mouth.min() > 1.0
    # the frames change over time and still look like the reference person
    assert np.abs(np.diff(frames.astype(np.int16), axis=0)).mean() > 0.5
    crop = photo_ref.frames[photo_ref.key_frame]
    assert np.mean([ssim(f, crop) for f in frames[::5]]) > 0.4
