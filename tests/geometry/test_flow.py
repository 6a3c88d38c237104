"""Tests for rhythmhead.geometry.flow: warp conventions, mesh flow exactness, and a real-face warp check."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rhythmhead.geometry.flow import mesh_flow, pixel_grid, warp
from rhythmhead.geometry.mesh import face_triangles_tensor


def test_zero_flow_is_identity_and_integer_flow_shifts():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 16, 20, generator=g, dtype=torch.float64)
    assert torch.allclose(warp(img, torch.zeros(2, 2, 16, 20, dtype=torch.float64)), img, atol=1e-12)
    flow = torch.zeros(2, 2, 16, 20, dtype=torch.float64)
    flow[:, 0] = 3.0  # out(x) = in(x + 3)
    flow[:, 1] = -2.0  # out(y) = in(y - 2)
    out = warp(img, flow)
    assert out.dtype == torch.float64
    assert torch.allclose(out[:, :, 2:, :-3], img[:, :, :-2, 3:], atol=1e-12)
    assert torch.all(out[:, :, :, -3:] == 0)  # sampled outside the source: zero padding


def test_half_pixel_flow_averages_neighbours_and_gradients_flow():
    img = torch.arange(8.0).reshape(1, 1, 1, 8).repeat(1, 1, 4, 1).requires_grad_(True)
    flow = torch.zeros(1, 2, 4, 8)
    flow[:, 0] = 0.5
    flow.requires_grad_(True)
    out = warp(img, flow)
    assert torch.allclose(out[0, 0, :, :-1], torch.arange(7.0) + 0.5)
    out.sum().backward()
    assert img.grad.abs().sum() > 0 and flow.grad.abs().sum() > 0


def test_mesh_flow_of_a_translation_is_constant():
    verts = torch.tensor([[4.0, 4.0, 0.0], [40.0, 6.0, 1.0], [10.0, 40.0, 2.0], [44.0, 44.0, 0.0]])
    tris = torch.tensor([[0, 1, 2], [1, 3, 2]])
    shift = torch.tensor([5.0, -3.0, 0.0])
    flow, mask = mesh_flow(verts, verts + shift, tris, 48)
    assert flow.shape == (48, 48, 2) and mask.sum() > 500
    assert torch.allclose(flow[mask], -shift[:2].expand(int(mask.sum()), 2), atol=1e-4)
    assert torch.all(flow[~mask] == 0)
    # batched: leading dims are kept
    fb, mb = mesh_flow(torch.stack([verts, verts]), torch.stack([verts + shift, verts]), tris, 48)
    assert fb.shape == (2, 48, 48, 2) and torch.equal(mb[0], mask)
    assert torch.allclose(fb[1], torch.zeros_like(fb[1]), atol=1e-4)


def test_mesh_flow_maps_target_surface_points_to_source_points():
    # an affine source→target map: the flow must invert it exactly at every covered pixel
    g = torch.Generator().manual_seed(1)
    src = torch.cat([torch.rand(30, 2, generator=g) * 40 + 10, torch.rand(30, 1, generator=g)], 1).double()
    a = torch.tensor([[0.9, 0.2], [-0.1, 1.1]], dtype=torch.float64)
    dst = torch.cat([src[:, :2] @ a.T + 3.0, src[:, 2:]], 1)
    from scipy.spatial import Delaunay

    tris = torch.from_numpy(Delaunay(src[:, :2].numpy()).simplices)
    flow, mask = mesh_flow(src, dst, tris, 64)
    p = pixel_grid(64, like=flow)[mask]
    back = (p - 3.0) @ torch.linalg.inv(a).T
    assert torch.allclose(p + flow[mask], back, atol=1e-8)


@pytest.fixture(scope="module")
def real_face(media_dir):
    from PIL import Image

    from rhythmhead.face.landmarks import FaceMesher, canonical_68, mesh_to_68
    from rhythmhead.geometry.pose import estimate_pose

    img = np.array(Image.open(media_dir / "face_photo" / "vx_aoc_ref.jpg").convert("RGB").resize((256, 256)))
    with FaceMesher(static_image_mode=True) as fm:
        mesh = fm(img)
    assert mesh is not None
    pose = estimate_pose(torch.from_numpy(mesh_to_68(mesh)), torch.from_numpy(canonical_68()))
    return img, torch.from_numpy(mesh[:468]), pose


@pytest.mark.media
def test_warp_of_real_face_lands_landmarks_on_target(real_face):
    from rhythmhead.face.landmarks import FaceMesher, mesh_to_68
    from rhythmhead.geometry.pose import apply_pose, frontalize

    img, mesh, pose = real_face
    target_pose = pose + torch.tensor([-0.06, 0.15, 0.04, 3.0, -2.0, 0.0])
    dst = apply_pose(frontalize(mesh, pose), target_pose)
    flow, mask = mesh_flow(mesh, dst, face_triangles_tensor(), 256)
    warped = warp(torch.from_numpy(img).permute(2, 0, 1)[None].float(), flow.permute(2, 0, 1)[None])
    warped = warped[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    with FaceMesher(static_image_mode=True) as fm:
        found = fm(warped)
    assert found is not None
    err = np.linalg.norm(mesh_to_68(found)[:, :2] - mesh_to_68(dst.numpy())[:, :2], axis=1).mean()
    unwarped = np.linalg.norm(mesh_to_68(mesh.numpy())[:, :2] - mesh_to_68(dst.numpy())[:, :2], axis=1).mean()
    assert err < 1.5, err
    assert err < 0.5 * unwarped, (err, unwarped)


def test_source_visibility_drops_points_hidden_in_the_source():
    # two parallel squares; in the source the near one hides the left half of the far one, in the target they are
    # side by side: target pixels of the far square's left half are not visible in the source
    far = [[0.0, 0.0, 10.0], [20.0, 0.0, 10.0], [20.0, 20.0, 10.0], [0.0, 20.0, 10.0]]
    near = [[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [10.0, 20.0, 0.0], [0.0, 20.0, 0.0]]
    src = torch.tensor(far + near)
    dst = src.clone()
    dst[4:, 0] += 24.0  # the near square moves right, uncovering the far one
    tris = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    _, mask_all = mesh_flow(src, dst, tris, 40)
    flow, mask_vis = mesh_flow(src, dst, tris, 40, source_visible=True)
    hidden = mask_all & ~mask_vis
    assert hidden[:20, :10].all() and not hidden[:, 10:].any()
    assert mask_vis[:20, 10:20].all() and mask_vis[:20, 24:34].all()
