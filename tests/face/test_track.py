"""Tests for rhythmhead.face.track and face.detect: crop geometry, resampling, gap filling, face choice, tracking."""
from __future__ import annotations

import numpy as np
import pytest

from rhythmhead.face.detect import choose_face, suppress_overlaps
from rhythmhead.face.landmarks import canonical_68
from rhythmhead.face.track import (FaceTracker, crop_boxes, crop_frame, eye_centre, face_size, fill_missing,
                                   integer_box, output_frame_count, resample_indices, resampled, to_crop)


def _landmarks(n=30, shift=(0.0, 0.0), scale=1.0, jitter=0.0, seed=0):
    rng = np.random.default_rng(seed)
    base = canonical_68()[:, :2] * scale
    lm = np.repeat(base[None], n, 0) + np.asarray(shift)
    lm += rng.normal(size=(n, 1, 2)) * jitter
    return lm


def test_canonical_face_gives_identity_crop():
    # the canonical face is placed where the paper's crop puts a face: its crop box is the 256² frame itself
    boxes = crop_boxes(_landmarks(5))
    assert np.allclose(boxes, [[0, 0, 256]] * 5, atol=0.05)


def test_crop_box_scales_and_moves_with_the_face():
    boxes = crop_boxes(_landmarks(5, shift=(300, 100), scale=2.0), mode="fixed")
    d = 2.0 * face_size(canonical_68())
    assert np.allclose(boxes[:, 2], 205 * d / 90)
    eye = eye_centre(canonical_68() * 2.0) + [300, 100]
    assert np.allclose(boxes[:, 0], eye[0] - 100 * d / 90) and np.allclose(boxes[:, 1], eye[1] - 80 * d / 90)


def test_smoothing_reduces_jitter_and_fixed_is_constant():
    lm = _landmarks(60, jitter=3.0)
    raw = eye_centre(lm)[:, 0]
    smooth = crop_boxes(lm, mode="smooth")[:, 0]
    fixed = crop_boxes(lm, mode="fixed")[:, 0]
    assert np.diff(smooth).std() < 0.3 * np.diff(raw).std()
    assert np.ptp(fixed) == 0
    with pytest.raises(ValueError):
        crop_boxes(lm, mode="wobbly")


def test_crop_and_points_agree():
    # a bright dot at a known source pixel lands where to_crop says, also when the box leaves the frame
    frame = np.zeros((300, 400, 3), np.uint8)
    frame[118:123, 48:53] = 255  # centre (50.5, 120.5) in continuous pixel coordinates
    for box in [(10.0, 60.0, 128.0), (-40.3, 30.2, 300.0)]:
        crop, ibox = crop_frame(frame, box, return_box=True)
        assert crop.shape == (256, 256, 3) and ibox == integer_box(box)
        p = to_crop(np.array([[50.5, 120.5, 10.0]]), box)[0]
        ys, xs = np.nonzero(crop[..., 0] > 60)
        assert abs(xs.mean() + 0.5 - p[0]) < 1.5 and abs(ys.mean() + 0.5 - p[1]) < 1.5
        assert p[2] == pytest.approx(10.0 * 256 / ibox[2])
    crop = crop_frame(frame, (-40.3, 30.2, 300.0))
    assert crop[:, :20].max() == 0  # zero padding left of the frame


def test_resample_indices():
    src = np.arange(90) / 30.0  # 3 s at 30 fps
    idx = resample_indices(src, output_frame_count(3.0))
    assert len(idx) == 75 and idx[0] == 0
    assert np.all(np.abs(src[idx] - np.arange(75) / 25) <= 1 / 60 + 1e-9)
    up = resample_indices(np.arange(10) / 10.0, 25)  # 10 fps -> 25 fps repeats frames
    assert np.all(np.diff(up) >= 0) and len(set(up)) == 10
    assert list(resample_indices([0.0], 3)) == [0, 0, 0]


def test_resampled_stream_matches_indices():
    times = np.cumsum(np.r_[0, np.random.default_rng(0).uniform(0.02, 0.05, 99)])  # variable rate
    frames = [(np.full((2, 2, 3), i, np.uint8), t) for i, t in enumerate(times)]
    n = output_frame_count(times[-1] + 0.03)
    got = list(resampled(iter(frames), n))
    assert [k for k, _, _ in got] == list(range(n))
    assert [i for _, i, _ in got] == list(resample_indices(times, n))
    assert all(f[0, 0, 0] == i for _, i, f in got)


def test_fill_missing():
    pts = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 2, 3), np.float32)
    pts[[0, 2]] = np.nan
    filled, found = fill_missing(pts)
    assert list(found) == [False, True, False, True, True]
    assert np.allclose(filled[:, 0, 0], [1, 1, 2, 3, 4])
    with pytest.raises(ValueError):
        fill_missing(np.full((3, 2, 3), np.nan))


def test_choose_face():
    faces = [(0, 0, 100, 100, 0.9), (300, 200, 380, 280, 0.9), (500, 500, 520, 520, 0.9)]
    assert choose_face(faces, (480, 640)) == faces[1]  # big face at the corner loses to a central one
    assert choose_face([faces[0], faces[2]], (480, 640)) == faces[0]  # larger wins
    assert choose_face(faces, (480, 640), near=(505, 505)) == faces[2]


def test_tracker_follows_a_real_face_and_reports_none():
    from skimage import data

    img = data.astronaut()  # public-domain NASA portrait shipped with scikit-image
    with FaceTracker() as tracker:
        mesh = tracker(img)
        assert mesh.shape == (478, 3) and mesh.dtype == np.float32
        lo, hi = mesh[:, :2].min(0), mesh[:, :2].max(0)
        assert 150 < lo[0] < hi[0] < 330 and 40 < lo[1] < hi[1] < 260  # the face, not the whole image
        shifted = np.zeros_like(img)
        shifted[:, 20:] = img[:, :-20]
        mesh2 = tracker(shifted)
        assert np.allclose((mesh2 - mesh)[:, 0].mean(), 20, atol=3)
        assert tracker(np.zeros((200, 200, 3), np.uint8)) is None


def test_suppress_overlaps():
    big = (50.0, 50.0, 220.0, 220.0, 0.8)
    inner = (65.0, 85.0, 130.0, 150.0, 0.56)  # a weak box on part of the big face
    other = (300.0, 40.0, 380.0, 120.0, 0.7)
    assert suppress_overlaps([inner, big, other]) == [big, other]
    assert suppress_overlaps([]) == []


def test_crop_stays_inside_the_frame():
    # a face near the right and bottom edges: the paper's square would leave the frame; with the frame size it slides in
    lm = _landmarks(5, shift=(260, 230))
    free = crop_boxes(lm, mode="fixed")
    assert free[0, 0] + free[0, 2] > 400 or free[0, 1] + free[0, 2] > 360
    boxes = crop_boxes(lm, mode="fixed", frame_size=(360, 400))
    x0, y0, side = boxes[0]
    assert x0 >= 0 and y0 >= 0 and x0 + side <= 400 and y0 + side <= 360 and side == round(free[0, 2])
    frame = np.full((360, 400, 3), 200, np.uint8)
    assert crop_frame(frame, boxes[0]).min() == 200  # no padding in the crop
    # a face too large for the frame: the square shrinks to the frame's short side
    big = crop_boxes(_landmarks(3, shift=(20, 10), scale=1.5), frame_size=(300, 320))
    assert np.all(big[:, 2] == 300) and np.all(big[:, :2] >= 0) and np.all(big[:, 0] + 300 <= 320)
