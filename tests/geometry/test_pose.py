"""Tests for rhythmhead.geometry.pose: rotation round trips, Kabsch, pose estimation, posing, key frame."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from rhythmhead.geometry.pose import (
    STABLE_68,
    apply_pose,
    estimate_pose,
    frontalize,
    kabsch,
    key_frame,
    matrix_to_pose,
    matrix_to_rotvec,
    pose_to_matrix,
    rotvec_to_matrix,
)


def _random_rotvecs(n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(n, 3, generator=g, dtype=dtype)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    angle = torch.rand(n, 1, generator=g, dtype=dtype) * (math.pi - 1e-3)
    return axis * angle


def _face(seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """A face-sized random 68-point cloud (crop pixels), not planar."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(68, 3, generator=g, dtype=dtype) * torch.tensor([40.0, 50.0, 20.0], dtype=dtype) + 128


def test_stable_indices():
    assert len(STABLE_68) == 27 and len(set(STABLE_68)) == 27
    assert {1, 5, 11, 15, 27, 35, 36, 39, 42, 45, 17, 21, 22, 26} <= set(STABLE_68)
    assert 0 not in STABLE_68 and 8 not in STABLE_68 and 48 not in STABLE_68


def test_rotvec_matches_scipy():
    rv = _random_rotvecs(200)
    ours = rotvec_to_matrix(rv)
    ref = torch.from_numpy(Rotation.from_rotvec(rv.numpy()).as_matrix())
    assert torch.allclose(ours, ref, atol=1e-12)
    back = matrix_to_rotvec(ref)
    assert torch.allclose(back, rv, atol=1e-9)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-5, 0.3, math.pi - 1e-6, math.pi])
def test_rotvec_round_trip_edge_angles(angle):
    axis = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    rv = axis / axis.norm(dim=-1, keepdim=True) * angle
    mat = rotvec_to_matrix(rv)
    assert torch.allclose(mat @ mat.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(3, 3, 3), atol=1e-12)
    back = rotvec_to_matrix(matrix_to_rotvec(mat))
    assert torch.allclose(back, mat, atol=1e-9)
    if angle < math.pi - 1e-3:  # at π the axis sign is ambiguous; the matrix check above covers it
        assert torch.allclose(matrix_to_rotvec(mat), rv, atol=1e-8)


def test_dtype_device_batching_preserved():
    rv = _random_rotvecs(24).reshape(2, 3, 4, 3)
    for dtype in (torch.float32, torch.float64):
        x = rv.to(dtype)
        mat = rotvec_to_matrix(x)
        assert mat.shape == (2, 3, 4, 3, 3) and mat.dtype == dtype
        back = matrix_to_rotvec(mat)
        assert back.shape == x.shape and back.dtype == dtype
        tol = 1e-4 if dtype == torch.float32 else 1e-9
        assert torch.allclose(back, x, atol=tol)
        # each batch element equals the unbatched result
        assert torch.allclose(rotvec_to_matrix(x[1, 2, 3]), mat[1, 2, 3], atol=tol)


def test_kabsch_recovers_rigid_transform_and_is_proper():
    src = _face().expand(5, 68, 3)
    rv = _random_rotvecs(5, seed=3)
    rot = rotvec_to_matrix(rv)
    t = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 30
    dst = src @ rot.transpose(-1, -2) + t[:, None]
    r_est, t_est = kabsch(src, dst)
    assert torch.allclose(r_est, rot, atol=1e-9)
    assert torch.allclose(t_est, t, atol=1e-7)
    assert torch.allclose(torch.det(r_est), torch.ones(5, dtype=torch.float64))


def test_kabsch_never_returns_reflection():
    src = _face()
    mirrored = src * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)  # best orthogonal fit is a reflection
    rot, _ = kabsch(src, mirrored)
    assert torch.det(rot).item() == pytest.approx(1.0, abs=1e-9)


def test_kabsch_weights_ignore_outliers():
    src = _face()
    rot = rotvec_to_matrix(torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64))
    dst = src @ rot.T + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    dst[:10] += 100.0  # corrupt 10 points, give them weight 0
    w = torch.ones(68, dtype=torch.float64)
    w[:10] = 0
    r_est, t_est = kabsch(src, dst, weights=w)
    assert torch.allclose(r_est, rot, atol=1e-9)
    r_bad, _ = kabsch(src, dst)
    assert not torch.allclose(r_bad, rot, atol=1e-3)


def test_estimate_pose_recovers_known_pose():
    canonical = _face(seed=7)
    true_pose = torch.cat([_random_rotvecs(6, seed=8) * 0.5, torch.randn(6, 3, dtype=torch.float64) * 10], -1)
    frame = apply_pose(canonical.expand(6, 68, 3), true_pose)  # canonical posed for each frame
    # non-stable points (mouth) move freely: they must not affect the pose
    frame = frame.clone()
    frame[:, 48:68] += torch.randn(6, 20, 3, dtype=torch.float64) * 5
    pose = estimate_pose(frame, canonical)
    assert torch.allclose(pose, true_pose, atol=1e-4)
    front = frontalize(frame, pose)
    idx = list(STABLE_68)
    assert torch.allclose(front[:, idx], canonical[idx].expand(6, 27, 3), atol=1e-6)


def test_estimate_pose_float32():
    canonical = _face(seed=1).float()
    true_pose = torch.tensor([[0.2, -0.3, 0.1, 5.0, -3.0, 2.0]])
    frame = apply_pose(canonical[None], true_pose)
    pose = estimate_pose(frame, canonical)
    assert pose.dtype == torch.float32 and pose.shape == (1, 6)
    assert torch.allclose(pose, true_pose, atol=1e-3)


def test_frontalize_apply_pose_inverse():
    pts = torch.randn(4, 10, 3, dtype=torch.float64) * 50
    pose = torch.cat([_random_rotvecs(4, seed=2), torch.randn(4, 3, dtype=torch.float64) * 20], -1)
    assert torch.allclose(frontalize(apply_pose(pts, pose), pose), pts, atol=1e-9)
    assert torch.allclose(apply_pose(frontalize(pts, pose), pose), pts, atol=1e-9)


def test_pose_matrix_round_trip():
    pose = torch.cat([_random_rotvecs(3, seed=5), torch.randn(3, 3, dtype=torch.float64)], -1)
    mat = pose_to_matrix(pose)
    assert mat.shape == (3, 4, 4)
    assert torch.allclose(mat[:, 3], torch.tensor([0.0, 0, 0, 1], dtype=torch.float64).expand(3, 4))
    pts = torch.randn(3, 7, 3, dtype=torch.float64)
    homog = torch.cat([pts, torch.ones_like(pts[..., :1])], -1) @ mat.transpose(-1, -2)
    assert torch.allclose(homog[..., :3], frontalize(pts, pose), atol=1e-12)
    assert torch.allclose(matrix_to_pose(mat[:, :3, :3], mat[:, :3, 3]), pose, atol=1e-9)


def test_key_frame():
    pose = torch.zeros(5, 6)
    pose[:, :3] = torch.tensor([[0.3, 0, 0], [0.1, -0.1, 0.05], [0.02, 0.02, -0.02], [0.5, 0.5, 0.5], [0.0, 0.2, 0.0]])
    pose[:, 3:] = 100.0  # translation is ignored
    assert key_frame(pose) == 2
    with pytest.raises(ValueError):
        key_frame(torch.zeros(0, 6))


def test_numpy_free_of_nan_for_identity():
    mat = torch.eye(3).expand(2, 3, 3)
    rv = matrix_to_rotvec(mat)
    assert torch.all(rv == 0) and not torch.isnan(rv).any()
    assert np.allclose(rotvec_to_matrix(rv).numpy(), np.eye(3))


def test_key_frame_skips_blinks_and_open_mouths():
    from rhythmhead.face.landmarks import canonical_68
    from rhythmhead.geometry.pose import eye_openness, mouth_openness

    base = np.repeat(canonical_68()[None].astype(np.float64), 6, 0)
    pose = torch.zeros(6, 6)
    pose[:, 0] = torch.tensor([0.00, 0.01, 0.02, 0.03, 0.04, 0.30])
    # frame 0 (most frontal) blinks, frame 1 opens the mouth wide: frame 2 is the key frame
    base[0, [37, 38, 43, 44], 1] = base[0, [41, 40, 47, 46], 1]
    base[1, [65, 66, 67], 1] += 12
    base[1, [55, 56, 57, 58, 59], 1] += 12
    assert eye_openness(base)[0] < 0.5 * eye_openness(base)[2]
    assert mouth_openness(base)[1] > mouth_openness(base)[2] + 0.1
    assert key_frame(pose) == 0  # the paper's rule alone
    assert key_frame(pose, base) == 2
    # never trades much frontality for it: frames 2–5 turn away, so open eyes alone decide among frames 0 and 1
    pose[2:5, 0] = 0.5
    assert key_frame(pose, base) == 1
