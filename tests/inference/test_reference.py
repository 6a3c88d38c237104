"""Per-reference preparation helpers (rhythmhead.inference.reference): shot choice, slicing, network inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rhythmhead.geometry.pose import key_frame
from rhythmhead.inference.reference import choose_shots, label_maps, slice_reference, to_network_images


def test_choose_shots_spreads_over_rotation():
    pose = np.zeros((50, 6), np.float32)
    pose[:, 1] = np.linspace(-0.5, 0.5, 50)  # a slow turn from one side to the other
    shots = choose_shots(pose, 3, start=25)
    assert len(shots) == 3 and 25 in shots
    assert {0, 49} <= set(shots.tolist())  # both extremes of the turn
    assert choose_shots(pose[:2], 8, start=0).tolist() == [0, 1]


def test_choose_shots_with_a_frozen_head_spreads_over_time():
    shots = choose_shots(np.zeros((20, 6), np.float32), 4, start=0)
    assert len(shots) == 4 and len(set(shots.tolist())) == 4


def test_slice_reference_recomputes_the_key_frame(video_ref):
    n = 20
    part = slice_reference(video_ref, n)
    assert len(part.frames) == len(part.pose) == len(part.boxes) == n
    assert part.key_frame == key_frame(torch.from_numpy(video_ref.pose[:n]), video_ref.frontal[:n])
    with pytest.raises(ValueError):
        slice_reference(video_ref, 0)


def test_network_inputs_at_generator_size():
    frames = np.zeros((2, 256, 256, 3), np.uint8)
    frames[:, 100:150, 100:150] = 255
    x = to_network_images(frames, 64)
    assert x.shape == (2, 3, 64, 64) and x.min() == -1 and x.max() == 1
    pts = np.stack([np.linspace(40, 200, 68), np.linspace(60, 220, 68)], 1)[None]
    maps = label_maps(pts, 64)
    assert maps.shape == (1, 1, 64, 64) and (maps > 0).any()
    ys, xs = np.nonzero(maps[0, 0].numpy() > 0)
    assert xs.max() < 56 and ys.min() > 10  # drawn at 64/256 of the crop coordinates
