"""Label maps and mouth boxes (rhythmhead.geometry.labelmap)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rhythmhead.face.landmarks import canonical_68
from rhythmhead.geometry.labelmap import (FLIP_68, MOUTH_68, draw_label_map, forehead_points,
                                          mouth_box, mouth_mask)


def face(size=256, shift=(0.0, 0.0), scale=1.0):
    """The canonical 68 points fitted into a ``size``² crop (x, y in pixels)."""
    pts = np.asarray(canonical_68(), np.float64)[:, :2]
    pts = (pts - pts.mean(0)) / np.ptp(pts[:, 0]) * (0.45 * size * scale)
    return (pts + size / 2 + np.asarray(shift)).astype(np.float32)


def test_shape_range_and_lines_on_landmarks():
    lm = face()
    m = draw_label_map(lm, 256)
    assert m.shape == (1, 256, 256) and m.dtype == np.float32
    assert m.min() == -1.0 and m.max() <= 1.0
    # every landmark lies on a drawn line: the pixel containing it is lit
    ix = np.clip(lm[:, 0].astype(int), 0, 255)
    iy = np.clip(lm[:, 1].astype(int), 0, 255)
    lit = np.maximum.reduce([m[0, np.clip(iy + dy, 0, 255), np.clip(ix + dx, 0, 255)]
                             for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    assert (lit > 0).all()
    # thin lines: a small fraction of the image
    assert 0.005 < (m > -1).mean() < 0.1


def test_forehead_above_brows_and_mirrored_from_jaw():
    lm = face()
    fh = forehead_points(lm)
    assert fh.shape == (15, 2)
    assert fh[4:11, 1].max() < lm[17:27, 1].min()  # the middle of the forehead is above the brows (y down)
    # 2/3 of the jaw's depth below the line through the jaw ends
    line_y = (lm[0, 1] + lm[16, 1]) / 2
    np.testing.assert_allclose(line_y - fh[7, 1], (lm[8, 1] - line_y) * 2 / 3, rtol=0.05)


def test_batched_and_torch_in_torch_out():
    lm = np.stack([face(), face(shift=(10, -5)), face(scale=0.8)])
    maps = draw_label_map(lm.reshape(3, 1, 68, 2), 128 * 2)
    assert maps.shape == (3, 1, 1, 256, 256)
    for i in range(3):
        np.testing.assert_array_equal(maps[i, 0], draw_label_map(lm[i], 256))
    t = draw_label_map(torch.from_numpy(lm).double(), 256)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64 and t.shape == (3, 1, 256, 256)
    np.testing.assert_allclose(t.numpy(), maps[:, 0], atol=1e-6)
    with pytest.raises(ValueError):
        draw_label_map(np.zeros((5, 2)))


def test_shifted_landmarks_shift_the_map():
    a = draw_label_map(face(), 256)[0]
    b = draw_label_map(face(shift=(7, 3)), 256)[0]
    np.testing.assert_allclose(b[3 + 20:-20, 7 + 20:-20], a[20:-23, 20:-27], atol=1e-6)


def test_flip_permutation_and_mirrored_map():
    assert sorted(FLIP_68) == list(range(68)) and all(FLIP_68[FLIP_68[i]] == i for i in range(68))
    lm = face(shift=(9.3, 2.1))
    fl = lm[list(FLIP_68)].copy()  # mirrored in a 256-wide image, each index keeping its anatomical meaning
    fl[:, 0] = 256 - fl[:, 0]
    # index meaning kept: the right mouth corner of the mirror is the mirrored left one
    np.testing.assert_allclose(fl[54], [256 - lm[48, 0], lm[48, 1]])
    back = fl[list(FLIP_68)].copy()
    back[:, 0] = 256 - back[:, 0]
    np.testing.assert_allclose(back, lm, atol=1e-5)
    a = draw_label_map(lm, 256)[0]
    b = draw_label_map(fl, 256)[0]
    assert np.abs(b[:, ::-1] - a).mean() < 0.01


def test_mouth_box_and_mask_agree():
    lm = face()
    x0, y0, x1, y1 = mouth_box(lm, 256, margin=0.1)
    mouth = lm[list(MOUTH_68)]
    assert x0 <= mouth[:, 0].min() and mouth[:, 0].max() <= x1 and y0 <= mouth[:, 1].min() and mouth[:, 1].max() <= y1
    m = mouth_mask(lm, 256, margin=0.1)
    assert m.shape == (1, 256, 256)
    ys, xs = np.nonzero(m[0])
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
    # clipped at the border
    assert mouth_box(lm + 200, 256)[2:] == (256, 256)
    mt = mouth_mask(torch.from_numpy(np.stack([lm, lm + 5])), 256, 0.1)
    assert mt.shape == (2, 1, 256, 256) and torch.equal(mt[0], torch.from_numpy(m))
