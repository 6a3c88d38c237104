"""Paste-back (rhythmhead.inference.paste): the inverse of the crop, feathered, clipped at the frame's edges."""
from __future__ import annotations

import numpy as np

from rhythmhead.face.track import crop_frame
from rhythmhead.inference.paste import PasteBack, feather_mask, paste


def test_feather_mask_shape_and_ramp():
    m = feather_mask(100, 0.1)
    assert m.shape == (100, 100) and m.dtype == np.float32
    assert m[50, 50] == 1 and m[0, 0] < 0.01 and m[0, 50] < 0.05
    assert np.all(np.diff(m[50, :50]) >= 0)  # rising towards the middle


def test_paste_inverts_the_crop_in_the_middle():
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    box = (30, 10, 100)
    crop = np.full((256, 256, 3), 200, np.uint8)
    out = paste(background, crop, box, feather=0.1)
    assert out.shape == background.shape
    np.testing.assert_array_equal(out[:, :30], background[:, :30])  # left of the box: untouched
    assert np.abs(out[40:80, 60:100].astype(int) - 200).max() <= 1  # inside: the crop
    back = crop_frame(out, box, 256)
    assert np.abs(back[100:156, 100:156].astype(int) - 200).max() <= 1


def test_box_partly_outside_the_frame():
    background = np.zeros((50, 50, 3), np.uint8)
    paster = PasteBack(background, (-20, 30, 60), feather=0.05)
    out = paster(np.full((64, 64, 3), 255, np.uint8))
    assert out.shape == (50, 50, 3)
    assert out[45, 10].min() > 200 and out[10, 10].max() == 0
    assert background.max() == 0  # the background itself is not modified
