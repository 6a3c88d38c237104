"""Tests for rhythmhead.face.landmarks without real media: the map, the canonical assets, FaceMesher on a synthetic face."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rhythmhead.face.landmarks import MESH_TO_68, N_MESH, canonical_68, canonical_mesh_478, mesh_to_68


def test_map_is_valid():
    assert len(MESH_TO_68) == 68 and len(set(MESH_TO_68)) == 68
    assert all(0 <= i < 468 for i in MESH_TO_68)  # no iris points


def test_mesh_to_68_numpy_and_torch():
    mesh = np.random.default_rng(0).normal(size=(2, 3, N_MESH, 3)).astype(np.float32)
    lm = mesh_to_68(mesh)
    assert lm.shape == (2, 3, 68, 3) and np.array_equal(lm[1, 2, 5], mesh[1, 2, MESH_TO_68[5]])
    lt = mesh_to_68(torch.from_numpy(mesh))
    assert isinstance(lt, torch.Tensor) and np.array_equal(lt.numpy(), lm)


def test_canonical_assets():
    c68, mesh = canonical_68(), canonical_mesh_478()
    assert c68.shape == (68, 3) and mesh.shape == (478, 3) and c68.dtype == np.float32
    assert np.allclose(mesh_to_68(mesh), c68)
    c68[0] = 0  # a copy: the asset is not modified
    assert canonical_68()[0, 0] != 0
    lm = canonical_68()
    # placed in the paper crop: face size 256*90/205, eye centre at (256*100/205, 256*80/205)
    assert max(np.ptp(lm[:, 0]), np.ptp(lm[:, 1])) == pytest.approx(256 * 90 / 205, abs=0.1)
    eye = (lm[36:42].mean(0) + lm[42:48].mean(0)) / 2
    assert np.allclose(eye[:2], [256 * 100 / 205, 256 * 80 / 205], atol=0.1)
    # frontal and upright: level, symmetric eyes; chin below nose below eyes; nose tip nearer the camera than the eyes
    assert abs(lm[36, 1] - lm[45, 1]) < 1.5 and abs(lm[36, 2] - lm[45, 2]) < 3
    assert lm[8, 1] > lm[33, 1] > lm[39, 1]
    assert lm[30, 2] < lm[36, 2] - 10
    assert abs(lm[30, 0] - eye[0]) < 2


def test_face_mesher_rejects_bad_input():
    from rhythmhead.face.landmarks import FaceMesher

    with FaceMesher(static_image_mode=True) as fm:
        with pytest.raises(ValueError):
            fm(np.zeros((10, 10), np.uint8))
        assert fm(np.zeros((64, 64, 3), np.uint8)) is None  # no face in a black image
