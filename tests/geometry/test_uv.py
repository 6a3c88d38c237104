"""Tests for rhythmhead.geometry.uv: a fold-free parametrisation and position-map round trips."""
from __future__ import annotations

import numpy as np
import torch

from rhythmhead.face.landmarks import MESH_TO_68, canonical_mesh_478
from rhythmhead.geometry.mesh import face_triangles_tensor
from rhythmhead.geometry.pose import apply_pose
from rhythmhead.geometry.uv import (
    denormalize_positions,
    face_uv,
    normalize_positions,
    position_map,
    region_weights,
    sample_vertices,
    uv_raster,
)


def test_face_uv_is_inside_unit_square_and_fold_free():
    uv = face_uv()
    assert uv.shape == (468, 2) and uv.dtype == torch.float32
    assert uv.min() >= 0.04 and uv.max() <= 0.96
    p = uv[face_triangles_tensor()].double()
    cross = (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 1, 1] - p[:, 0, 1]) * (p[:, 2, 0] - p[:, 0, 0])
    assert bool((cross > 0).all())  # same orientation everywhere: no triangle overlaps another in UV space


def test_position_map_round_trip_on_posed_face():
    canonical = torch.from_numpy(canonical_mesh_478()[:468].astype(np.float32))
    verts = apply_pose(canonical, torch.tensor([[0.1, -0.3, 0.05, 5.0, -4.0, 2.0], [0.0, 0.2, 0.0, 0.0, 0.0, 0.0]]))
    tris, uv = face_triangles_tensor(), face_uv()
    pm = position_map(verts, tris, uv, 256)
    assert pm.shape == (2, 256, 256, 3)
    back = sample_vertices(pm, uv)
    err = (back - verts).norm(dim=-1)
    assert err.mean() < 0.2 and err.max() < 1.5, (err.mean(), err.max())
    # without the border fill, border vertices are pulled towards 0
    raw = sample_vertices(position_map(verts, tris, uv, 256, fill_px=0), uv)
    assert (raw - verts).norm(dim=-1).max() > 5 * err.max()


def test_uv_mask_and_normalisation():
    _, _, mask = uv_raster(face_triangles_tensor(), face_uv(), 128)
    assert 0.3 < mask.float().mean() < 0.9
    p = torch.tensor([[10.0, 200.0, -30.0]])
    n = normalize_positions(p)
    assert torch.allclose(n, torch.tensor([[10 / 256, 200 / 256, 0.5 - 30 / 256]]))
    assert torch.allclose(denormalize_positions(n), p)


def test_region_weights_emphasise_landmarks():
    tris, uv = face_triangles_tensor(), face_uv()
    w = region_weights(tris, uv, 128, landmark_vertices=MESH_TO_68, feature_vertices=range(0, 0))
    _, _, mask = uv_raster(tris, uv, 128)
    assert torch.all(w[~mask] == 0) and abs(float(w[mask].mean()) - 1) < 1e-5
    lm = sample_vertices(w[..., None], uv[list(MESH_TO_68)])
    assert float(lm.mean()) > 1.5 * float(w[mask].mean())
