"""Paste-back (rhythmhead.inference.paste): the face and neck go back into the source frame through a feathered mask,
at the output scale; everything away from the face stays the source's pixels."""
from __future__ import annotations

import numpy as np

from rhythmhead.face.landmarks import canonical_68
from rhythmhead.inference.paste import PasteBack, face_neck_mask, feather_mask, output_scale, paste


def test_feather_mask_shape_and_ramp():
    m = feather_mask(100, 0.1)
    assert m.shape == (100, 100) and m.dtype == np.float32
    assert m[50, 50] == 1 and m[0, 0] < 0.01 and m[0, 50] < 0.05
    assert np.all(np.diff(m[50, :50]) >= 0)  # rising towards the middle


def test_face_neck_mask_covers_face_and_neck_only():
    lm = canonical_68()  # the canonical face sits where the 256² crop puts a face
    m = face_neck_mask(lm, 256)
    assert m.shape == (256, 256) and m.max() <= 1.0
    nose, chin = lm[30, :2].astype(int), lm[8, :2].astype(int)
    assert m[nose[1], nose[0]] > 0.99 and m[min(255, chin[1] + 30), chin[0]] > 0.9  # face, and the neck below it
    assert m[5, 5] < 0.01 and m[5, 250] < 0.01  # the top corners: background
    # scales with the crop side
    big = face_neck_mask(lm, 512)
    assert abs(big.mean() - m.mean()) < 0.02


def test_paste_back_keeps_the_source_away_from_the_face_and_feathers_the_seam():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    box = (100, 20, 256)
    paster = PasteBack(source, box, max_size=1280)
    assert paster.scale == 1 and paster.side == 256
    crop = np.full((256, 256, 3), 200, np.uint8)
    out = paster(crop, canonical_68())
    assert out.shape == source.shape
    weight = paster.edge * face_neck_mask(canonical_68(), 256)
    far = np.ones(source.shape[:2], bool)
    far[20:276, 100:356] = weight < 1e-3
    np.testing.assert_array_equal(out[far], source[far])  # away from the face: the source's pixels exactly
    nose = canonical_68()[30, :2].astype(int) + [100, 20]
    assert np.abs(out[nose[1], nose[0]].astype(int) - 200).max() <= 1  # the face: the generated crop
    # feathered: along a row through the cheek the blend weight changes by small steps, no hard edge
    row = weight[int(canonical_68()[30, 1])]
    assert np.abs(np.diff(row)).max() < 0.1


def test_max_size_caps_the_output():
    source = np.zeros((2000, 3000, 3), np.uint8)
    assert output_scale(2000, 3000, 1280) == 1280 / 3000
    paster = PasteBack(source, (1000, 500, 900), max_size=1280)
    assert paster.background.shape == (854, 1280, 3)  # even sides for H.264
    assert paster.side == round(900 * 1280 / 3000)
    out = paster(np.full((paster.side, paster.side, 3), 255, np.uint8))
    assert out.shape == (854, 1280, 3) and out.max() == 255


def test_paste_inverts_the_crop_in_the_middle():
    from rhythmhead.face.track import crop_frame

    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    box = (30, 10, 100)
    out = paste(background, np.full((100, 100, 3), 200, np.uint8), box, feather_mask(100, 0.1))
    assert out.shape == background.shape
    np.testing.assert_array_equal(out[:, :30], background[:, :30])  # left of the box: untouched
    assert np.abs(out[40:80, 60:100].astype(int) - 200).max() <= 1  # inside: the crop
    back = crop_frame(out, box, 256)
    assert np.abs(back[100:156, 100:156].astype(int) - 200).max() <= 1


def test_box_partly_outside_the_frame():
    background = np.zeros((50, 50, 3), np.uint8)
    mask = feather_mask(60, 0.05)
    out = paste(background, np.full((60, 60, 3), 255, np.uint8), (-20, 30, 60), mask)
    assert out.shape == (50, 50, 3)
    assert out[45, 10].min() > 200 and out[10, 10].max() == 0
    assert background.max() == 0  # the background itself is not modified
