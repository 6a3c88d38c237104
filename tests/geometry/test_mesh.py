"""Tests for the face tessellation, rhythmhead.geometry.mesh (textured mesh + render) on real and synthetic faces."""
from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from rhythmhead.face.tessellation import boundary_loops, build_triangles, face_triangles, surface_count
from rhythmhead.geometry.mesh import TexturedMesh, build_textured_mesh, render_textured
from rhythmhead.geometry.pose import apply_pose, frontalize


def test_tessellation_is_a_closed_oriented_disc():
    tris = face_triangles()
    assert tris.shape == (898, 3) and surface_count() == 852
    assert set(np.unique(tris)) == set(range(468))
    directed = collections.Counter((int(t[k]), int(t[(k + 1) % 3])) for t in tris for k in range(3))
    assert max(directed.values()) == 1  # consistent orientation: each edge traversed once per direction
    loops = boundary_loops(tris)
    assert [len(lp) for lp in loops] == [36]  # only the face oval is open (eyes and mouth closed)


def _synthetic_face():
    """The package's canonical frontal face (468 vertices, 256² crop pixels): runs without ../shared/media."""
    from rhythmhead.face.landmarks import canonical_mesh_478

    return torch.from_numpy(canonical_mesh_478()[:468].astype(np.float32))


def test_tessellation_asset_matches_rebuild_from_edges():
    mesh = _synthetic_face()  # a frontal face fixes the orientation sign
    assert np.array_equal(build_triangles(reference_mesh=mesh.numpy()), face_triangles())
    # frontal faces are seen from the front: positive signed area in image coordinates for most triangles
    p = mesh.numpy()[face_triangles()][:, :, :2]
    cross = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    assert (cross > 0).mean() > 0.95


def _coordinate_texture(size=256):
    """R = x pixel index, G = y pixel index: a render reveals where in the texture each pixel came from."""
    ys, xs = np.mgrid[0:size, 0:size]
    return np.stack([xs, ys, np.full_like(xs, 128)], -1).astype(np.uint8)


def test_render_at_rotated_pose_puts_landmarks_where_the_geometry_says():
    mesh = _synthetic_face()
    pose = torch.tensor([0.05, -0.1, 0.02, 4.0, -3.0, 1.0])
    image_pts = apply_pose(mesh, pose)  # the "key frame" geometry
    tm = build_textured_mesh(_coordinate_texture(), image_pts, pose, ring_scales=())
    target = torch.tensor([-0.1, 0.3, 0.05, -6.0, 5.0, 0.0])
    img, mask = render_textured(tm, target)
    assert img.shape == (256, 256, 3) and img.dtype == torch.uint8 and mask.dtype == torch.bool
    projected = apply_pose(frontalize(image_pts, pose), target)
    from rhythmhead.face.landmarks import MESH_TO_68

    inner = list(MESH_TO_68[17:])  # brows, nose, eyes, mouth: visible at this yaw
    px = projected[inner, :2].floor().long()
    got = img[px[:, 1], px[:, 0], :2].float()  # texture pixel index the render sampled
    want = image_pts[inner, :2].floor()
    assert bool(mask[px[:, 1], px[:, 0]].all())
    err = (got - want).norm(dim=1)
    assert err.mean() < 1.2 and err.max() < 3.0, err


def test_render_key_pose_is_identity_and_rings_extend_coverage():
    mesh = _synthetic_face()
    pose = torch.tensor([0.0, 0.1, 0.0, 0.0, 0.0, 0.0])
    image_pts = apply_pose(mesh, pose)
    tex = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    bare = build_textured_mesh(tex, image_pts, pose, ring_scales=())
    ringed = build_textured_mesh(tex, image_pts, pose, ring_scales=(1.2, 1.4))
    assert isinstance(ringed, TexturedMesh) and ringed.vertices.shape == (468 + 72, 3)
    assert ringed.triangles.shape == (898 + 144, 3) and int(ringed.triangles.max()) == 468 + 71
    img, mask = render_textured(bare, pose)
    assert torch.equal(img[mask], torch.from_numpy(tex)[mask])  # exact texture lookup at the key pose
    assert torch.all(img[~mask] == 0)
    _, mask_ring = render_textured(ringed, pose)
    assert mask_ring.sum() > 1.3 * mask.sum() and bool((mask_ring | ~mask).all())
    imgs, masks = render_textured(bare, torch.stack([pose, pose + 0.1]))
    assert imgs.shape == (2, 256, 256, 3) and masks.shape == (2, 256, 256) and torch.equal(imgs[0], img)


@pytest.mark.media
def test_render_reproduces_real_key_frame(media_dir):
    from PIL import Image

    from rhythmhead.face.landmarks import FaceMesher, canonical_68, mesh_to_68
    from rhythmhead.geometry.pose import estimate_pose

    img = np.array(Image.open(media_dir / "face_photo" / "mit_obama.jpg").convert("RGB"))
    h, w = img.shape[:2]
    side = min(h, w)
    img = np.array(Image.fromarray(img[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]).resize((256, 256)))
    with FaceMesher(static_image_mode=True) as fm:
        pts = fm(img)
    assert pts is not None
    pose = estimate_pose(torch.from_numpy(mesh_to_68(pts)), torch.from_numpy(canonical_68()))
    tm = build_textured_mesh(img, pts, pose)
    out, mask = render_textured(tm, pose)
    assert mask.float().mean() > 0.1
    mse = ((out.float() - torch.from_numpy(img).float())[mask] ** 2).mean().item()
    psnr = 10 * np.log10(255.0 ** 2 / max(mse, 1e-10))
    assert psnr >= 30.0, psnr
    # a different pose moves the face: the render differs from the key frame where both are covered
    out2, mask2 = render_textured(tm, pose + torch.tensor([0.0, 0.25, 0.0, 0.0, 0.0, 0.0]))
    both = mask & mask2
    assert ((out2.float() - torch.from_numpy(img).float())[both] ** 2).mean() > 10 * max(mse, 1.0)


@pytest.mark.media
def test_unproject_mediapipe_backend(media_dir):
    from PIL import Image

    from rhythmhead.errors import InputError
    from rhythmhead.geometry.mesh import unproject

    img = np.array(Image.open(media_dir / "face_photo" / "vx_aoc_ref.jpg").convert("RGB").resize((256, 256)))
    verts = unproject(img, "mediapipe")
    assert verts.shape == (468, 3)
    assert 40 < verts[:, 0].mean() < 216 and 40 < verts[:, 1].mean() < 216
    with pytest.raises(InputError, match="no face"):
        unproject(np.zeros((256, 256, 3), np.uint8), "mediapipe")
