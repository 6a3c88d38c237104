"""Tests for rhythmhead.geometry.raster: coverage, z-buffer order, barycentrics, against a brute-force reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rhythmhead.geometry.raster import interpolate, rasterize


def _brute_force(vertices: np.ndarray, triangles: np.ndarray, size: int):
    """Per pixel, per triangle: the nearest (smallest z) triangle whose closed area holds the pixel centre."""
    face = -np.ones((size, size), int)
    best = np.full((size, size), np.inf)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    for f, (a, b, c) in enumerate(triangles):
        (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = vertices[a], vertices[b], vertices[c]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if abs(area) < 1e-9:
            continue
        b1 = ((xs - x0) * (y2 - y0) - (x2 - x0) * (ys - y0)) / area
        b2 = ((x1 - x0) * (ys - y0) - (xs - x0) * (y1 - y0)) / area
        b0 = 1 - b1 - b2
        inside = (b0 >= -1e-5) & (b1 >= -1e-5) & (b2 >= -1e-5)
        z = b0 * z0 + b1 * z1 + b2 * z2
        win = inside & (z < best - 1e-9)
        face[win], best[win] = f, z[win]
    return face, best


def test_matches_brute_force_on_random_overlapping_mesh():
    rng = np.random.default_rng(0)
    size = 24
    verts = np.concatenate([rng.uniform(-4, size + 4, (30, 2)), rng.uniform(-10, 10, (30, 1))], 1)
    tris = np.stack([rng.choice(30, 3, replace=False) for _ in range(25)])
    face, bary, mask = rasterize(torch.tensor(verts), torch.tensor(tris), size)
    ref_face, ref_depth = _brute_force(verts, tris, size)
    assert torch.equal(mask, torch.from_numpy(ref_face >= 0))
    # the depth of the chosen surface equals the reference's minimum (ties may pick another triangle)
    z = interpolate(torch.tensor(verts[:, 2:]), torch.tensor(tris), face, bary)[..., 0].numpy()
    np.testing.assert_allclose(z[ref_face >= 0], ref_depth[ref_face >= 0], atol=1e-6)


def test_batched_poses_rasterise_as_separate_calls():
    """(T, V, 3) vertices: each pose's pixels land in its own H×W slice, exactly as T separate calls (triangles
    reaching past the image edges must not spill into the neighbouring pose's slice)."""
    from rhythmhead.geometry.raster import rasterize_sparse

    rng = np.random.default_rng(1)
    size, t_count = 20, 3
    base = np.concatenate([rng.uniform(-6, size + 6, (30, 2)), rng.uniform(-10, 10, (30, 1))], 1)
    tris = torch.tensor(np.stack([rng.choice(30, 3, replace=False) for _ in range(25)]))
    verts = torch.tensor(np.stack([base + rng.normal(0, 2, base.shape) for _ in range(t_count)]))
    pixel, face, bary = rasterize_sparse(verts, tris, size)
    assert pixel.max() < t_count * size * size
    for t in range(t_count):
        p1, f1, b1 = rasterize_sparse(verts[t], tris, size)
        sel = (pixel >= t * size * size) & (pixel < (t + 1) * size * size)
        assert torch.equal(pixel[sel] - t * size * size, p1) and torch.equal(face[sel], f1)
        torch.testing.assert_close(bary[sel], b1)


def test_single_triangle_barycentrics_reconstruct_pixel_centres():
    verts = torch.tensor([[2.0, 3.0, 0.0], [28.0, 6.0, 0.0], [9.0, 29.0, 0.0]], dtype=torch.float64)
    tris = torch.tensor([[0, 1, 2]])
    face, bary, mask = rasterize(verts, tris, 32)
    assert bary.dtype == torch.float64 and face.dtype == torch.int64
    assert 200 < int(mask.sum()) < 32 * 32
    pos = interpolate(verts[:, :2], tris, face, bary)
    iy, ix = torch.nonzero(mask, as_tuple=True)
    np.testing.assert_allclose(pos[iy, ix, 0], ix + 0.5, atol=1e-9)
    np.testing.assert_allclose(pos[iy, ix, 1], iy + 0.5, atol=1e-9)
    assert torch.all(bary[~mask] == 0) and torch.all(face[~mask] == -1)
    # the covered area approximates the triangle's area (2-D shoelace / 2)
    assert abs(int(mask.sum()) - 0.5 * abs(26 * 26 - 7 * 3)) < 30


@pytest.mark.parametrize("near_first", [True, False])
def test_smaller_z_is_nearer(near_first):
    near = [[0.0, 0.0, -5.0], [20.0, 0.0, -5.0], [0.0, 20.0, -5.0]]
    far = [[0.0, 0.0, 5.0], [20.0, 0.0, 5.0], [0.0, 20.0, 5.0]]
    verts = torch.tensor(near + far if near_first else far + near)
    tris = torch.tensor([[0, 1, 2], [3, 4, 5]])
    face, _, mask = rasterize(verts, tris, 16)
    near_index = 0 if near_first else 1
    assert mask.any() and torch.all(face[mask] == near_index)


def test_shared_edge_leaves_no_crack_and_degenerate_is_skipped():
    verts = torch.tensor([[0.0, 0.0, 0.0], [16.0, 0.0, 0.0], [16.0, 16.0, 0.0], [0.0, 16.0, 0.0], [5.0, 5.0, 0.0]])
    tris = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 4, 1]])
    face, _, mask = rasterize(verts, tris, 16)
    assert bool(mask.all())
    assert not torch.any(face == 2)


def test_outside_image_and_empty_input():
    verts = torch.tensor([[-30.0, -30.0, 0.0], [-10.0, -30.0, 0.0], [-20.0, -5.0, 0.0]])
    face, bary, mask = rasterize(verts, torch.tensor([[0, 1, 2]]), (8, 12))
    assert face.shape == (8, 12) and bary.shape == (8, 12, 3) and not mask.any()
    face, _, mask = rasterize(verts, torch.zeros(0, 3, dtype=torch.long), 8)
    assert not mask.any()


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        rasterize(torch.zeros(4, 2), torch.zeros(1, 3, dtype=torch.long), 8)
