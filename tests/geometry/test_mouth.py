"""The mouth crop (rhythmhead.geometry.mouth): what the mouth network reads in training and at inference."""
from __future__ import annotations

import numpy as np

from rhythmhead.face.landmarks import canonical_68
from rhythmhead.geometry.mouth import (crop_to_image, fit_affine, mouth_inputs, paste_mouth, soft_polygon_mask,
                                       to_opencv)


def _frame(seed=0):
    rng = np.random.default_rng(seed)
    import cv2

    return cv2.GaussianBlur(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), (5, 5), 1.0)


def test_the_crop_frames_the_mouth():
    lm = canonical_68().astype(np.float64)
    a = crop_to_image(lm, 128)
    width = np.linalg.norm(lm[54, :2] - lm[48, :2])
    assert np.isclose(a[0, 0] * 128, 2.2 * width)  # side = 2.2 mouth widths
    centre = a[:, :2] @ [64, 64] + a[:, 2]
    assert np.allclose(centre, lm[48:68, :2].mean(0))


def test_inputs_of_the_frame_itself_are_its_mouth_and_paste_back_is_exact_outside_the_mask():
    frame, lm = _frame(), canonical_68().astype(np.float64)
    inp = mouth_inputs(frame, lm, lm, 128)
    assert inp["reference"].shape == (128, 128, 3) and inp["label"].shape == (128, 128)
    assert inp["label"].min() == -1 and inp["label"].max() > 0.5  # lip contours drawn
    assert 0.05 < inp["mask"].mean() < 0.6 and inp["mask"][64, 64] > 0.99 and inp["mask"][0, 0] == 0
    # reference == target: the crop is the frame resampled (2.2 widths → 128 px), so pasting it back changes little
    back = paste_mouth(frame, inp["reference"], inp["mask"], inp["affine"])
    inside = soft_polygon_mask(lm[48:60, :2], (256, 256), blur=0) > 0.5
    assert np.abs(back[inside].astype(int) - frame[inside]).mean() < 12
    # a white mouth goes in through the mask only: pixels away from the mouth are the frame's exactly
    white = paste_mouth(frame, np.full((128, 128, 3), 255, np.uint8), inp["mask"], inp["affine"])
    lo, hi = lm[48:68, :2].min(0), lm[48:68, :2].max(0)
    far = np.ones((256, 256), bool)
    far[int(lo[1] - 40):int(hi[1] + 40), int(lo[0] - 40):int(hi[0] + 40)] = False
    np.testing.assert_array_equal(white[far], frame[far])
    c = lm[48:68, :2].mean(0).astype(int)
    assert white[c[1], c[0]].min() > 250


def test_reference_mouth_is_brought_onto_the_target_lips():
    lm = canonical_68().astype(np.float64)
    target = lm.copy()
    target[:, :2] = (lm[:, :2] - 128) * 1.2 + 128 + [6, -4]  # a larger face, elsewhere
    frame = _frame(1)
    inp = mouth_inputs(frame, lm, target, 128)
    # the same crop of the target-aligned image: warp the frame by the similarity target → lm, then take the crop
    m = fit_affine(target[:, :2], lm[:, :2])
    import cv2

    aligned = cv2.warpAffine(frame, to_opencv(m), (256, 256), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REPLICATE)
    expect = mouth_inputs(aligned, target, target, 128)["reference"]
    assert np.abs(inp["reference"].astype(int) - expect).mean() < 4
