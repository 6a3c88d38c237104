"""Rigid head pose: rotation vectors, Kabsch alignment, frontalisation and posing (REFERENCE.md §2.1, §3).

Pure, batched functions on torch tensors: every function accepts any leading batch shape ``...``, keeps the input's
dtype and device, and has no state or file I/O.

Paper convention (ARCHITECTURE.md "Units and conventions"):

* pose ``(..., 6)`` = rotation vector (axis-angle, radians) followed by translation (crop pixels);
* the pose maps a frame's landmarks ``l`` onto the canonical face: ``frontal = R·l + t``;
* posing canonical/frontal points for that frame is the inverse, ``Rᵀ(x − t)``;
* the pose is a Kabsch fit (rotation + translation, **no scale**) of the 27 stable landmarks :data:`STABLE_68`;
* the key frame is the most frontal frame, ``argmin_t ‖rotvec_t‖₁``.

Points are row vectors ``(..., N, 3)``, so ``R·p`` is written ``p @ Rᵀ``.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "STABLE_68",
    "rotvec_to_matrix",
    "matrix_to_rotvec",
    "kabsch",
    "estimate_pose",
    "frontalize",
    "apply_pose",
    "key_frame",
    "pose_to_matrix",
    "matrix_to_pose",
]

# The 27 rigid ("stable") iBUG-68 indices used for the pose fit: jaw 1-5 and 11-15, nose 27-35, the outer/inner eye
# corners 36/39/42/45 and the brow ends 17/21/22/26 (REFERENCE.md §2.1).
STABLE_68: tuple[int, ...] = (
    *range(1, 6), *range(11, 16), *range(27, 36), 36, 39, 42, 45, 17, 21, 22, 26,
)


def _skew(v: torch.Tensor) -> torch.Tensor:
    """``(..., 3) -> (..., 3, 3)`` cross-product matrix ``[v]ₓ``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape[:-1], 3, 3)


def rotvec_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: rotation vector ``(..., 3)`` (radians) -> rotation matrix ``(..., 3, 3)``.

    ``R = I + A·[v]ₓ + B·[v]ₓ²`` with ``A = sin θ/θ``, ``B = (1 − cos θ)/θ²``, ``θ = ‖v‖``; Taylor series near θ = 0.
    """
    theta2 = (rotvec * rotvec).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    small = theta2 < 1e-8
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    safe = safe2.sqrt()
    a = torch.where(small, 1 - theta2 / 6, torch.sin(safe) / safe)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(safe)) / safe2)
    k = _skew(rotvec)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def _matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrix ``(..., 3, 3)`` -> unit quaternion ``(..., 4)`` (w, x, y, z), w ≥ 0.

    Shepperd's method: of the four algebraically equal formulas, use the one with the largest (best conditioned)
    denominator, so the result is accurate for every angle including θ ≈ π.
    """
    m = matrix
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4·q_i² for i = w, x, y, z.
    four_sq = torch.stack([
        1 + m00 + m11 + m22,
        1 + m00 - m11 - m22,
        1 - m00 + m11 - m22,
        1 - m00 - m11 + m22,
    ], dim=-1)
    two_abs = four_sq.clamp_min(0).sqrt()  # 2·|q_i|
    # Row i holds 4·q_i·q (each an exact identity for a rotation matrix).
    rows = torch.stack([
        torch.stack([four_sq[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, four_sq[..., 1], m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, four_sq[..., 2], m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, four_sq[..., 3]], dim=-1),
    ], dim=-2)  # (..., 4, 4)
    cand = rows / (2 * two_abs.clamp_min(1e-12))[..., None]  # ±q from each row
    best = two_abs.argmax(-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def matrix_to_rotvec(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrix ``(..., 3, 3)`` -> rotation vector ``(..., 3)`` with angle in [0, π] (as scipy's ``as_rotvec``)."""
    q = _matrix_to_quaternion(matrix)
    w, v = q[..., :1], q[..., 1:]
    s = v.norm(dim=-1, keepdim=True)  # sin(θ/2)
    angle = 2 * torch.atan2(s, w)
    small = s < 1e-6
    # θ / sin(θ/2), whose series near θ = 0 is 2·(1 + sin²(θ/2)/6 + …).
    scale = torch.where(small, 2 * (1 + s * s / 6), angle / torch.where(small, torch.ones_like(s), s))
    return v * scale


def pose_to_matrix(pose: torch.Tensor) -> torch.Tensor:
    """Pose ``(..., 6)`` -> homogeneous ``(..., 4, 4)`` matrix mapping frame points to frontal ones (``R·l + t``)."""
    rot = rotvec_to_matrix(pose[..., :3])
    top = torch.cat([rot, pose[..., 3:, None]], dim=-1)  # (..., 3, 4)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1
    return torch.cat([top, bottom], dim=-2)


def matrix_to_pose(rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """``R (..., 3, 3)``, ``t (..., 3)`` -> pose ``(..., 6)`` = [rotvec, t]."""
    return torch.cat([matrix_to_rotvec(rotation), translation], dim=-1)


def kabsch(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares rigid fit (rotation + translation, no scale) with ``dst ≈ R·src + t``.

    Args:
        src: ``(..., N, 3)`` points to move.
        dst: ``(..., N, 3)`` target points (broadcast against ``src``'s batch shape, e.g. one canonical face).
        weights: optional ``(..., N)`` non-negative point weights (broadcast likewise); uniform when None.

    Returns:
        ``R (..., 3, 3)`` a proper rotation (det = +1, reflections excluded) and ``t (..., 3)``.
    """
    src, dst = torch.broadcast_tensors(src, dst)
    if weights is None:
        weights = torch.ones_like(src[..., 0])
    weights = torch.broadcast_to(weights.to(src.dtype), src.shape[:-1])
    w = (weights / weights.sum(-1, keepdim=True).clamp_min(torch.finfo(src.dtype).tiny))[..., None]  # (..., N, 1)
    src_mean = (w * src).sum(-2)  # (..., 3)
    dst_mean = (w * dst).sum(-2)
    src_c = src - src_mean[..., None, :]
    dst_c = dst - dst_mean[..., None, :]
    cov = (w * src_c).transpose(-1, -2) @ dst_c  # H = Σ w·src_c·dst_cᵀ, (..., 3, 3)
    u, _, vh = torch.linalg.svd(cov)
    v = vh.transpose(-1, -2)
    d = torch.sign(torch.det(v @ u.transpose(-1, -2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    diag = torch.ones_like(src_mean)
    diag = torch.cat([diag[..., :2], d[..., None]], dim=-1)
    rot = v @ (diag[..., :, None] * u.transpose(-1, -2))  # V·diag(1, 1, d)·Uᵀ
    t = dst_mean - (rot @ src_mean[..., None])[..., 0]
    return rot, t


def estimate_pose(landmarks: torch.Tensor, canonical: torch.Tensor) -> torch.Tensor:
    """Head pose of each frame: Kabsch of its 27 stable landmarks onto the canonical face (REFERENCE.md §2.1).

    Args:
        landmarks: ``(..., 68, 3)`` landmarks in crop pixels.
        canonical: ``(68, 3)`` canonical frontal face (same units), e.g. ``rhythmhead.face.landmarks.canonical_68()``.

    Returns:
        pose ``(..., 6)`` such that ``frontalize(landmarks, pose) = R·l + t`` best matches ``canonical`` on the stable points.
    """
    idx = torch.as_tensor(STABLE_68, device=landmarks.device)
    canonical = canonical.to(dtype=landmarks.dtype, device=landmarks.device)
    rot, t = kabsch(landmarks.index_select(-2, idx), canonical.index_select(-2, idx))
    return matrix_to_pose(rot, t)


def frontalize(points: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """Remove the head pose: ``R·p + t`` for points ``(..., N, 3)`` and pose ``(..., 6)`` -> ``(..., N, 3)``."""
    rot = rotvec_to_matrix(pose[..., :3])
    return points @ rot.transpose(-1, -2) + pose[..., None, 3:]


def apply_pose(frontal: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """Pose frontal/canonical points for a frame: ``Rᵀ(x − t)`` for ``(..., N, 3)`` and pose ``(..., 6)`` -> ``(..., N, 3)``."""
    rot = rotvec_to_matrix(pose[..., :3])
    return (frontal - pose[..., None, 3:]) @ rot


def eye_openness(landmarks) -> np.ndarray:
    """Eye aspect ratio per frame (mean of both eyes, iBUG 36–47): ``(…, 68, ≥2)`` → ``(…)``; ≈ 0.25–0.35 open, < 0.15
    closed."""
    lm = np.asarray(landmarks, np.float64)[..., :2]

    def ear(e):  # e: (…, 6, 2) in iBUG order p1..p6
        v = np.linalg.norm(e[..., 1, :] - e[..., 5, :], axis=-1) + np.linalg.norm(e[..., 2, :] - e[..., 4, :], axis=-1)
        return v / (2.0 * np.maximum(np.linalg.norm(e[..., 0, :] - e[..., 3, :], axis=-1), 1e-6))

    return (ear(lm[..., 36:42, :]) + ear(lm[..., 42:48, :])) / 2


def mouth_openness(landmarks) -> np.ndarray:
    """Inner-lip gap over mouth width per frame (iBUG 61–63 vs 67–65, corners 48/54): ``(…, 68, ≥2)`` → ``(…)``."""
    lm = np.asarray(landmarks, np.float64)[..., :2]
    gap = np.linalg.norm(lm[..., [61, 62, 63], :] - lm[..., [67, 66, 65], :], axis=-1).mean(-1)
    return gap / np.maximum(np.linalg.norm(lm[..., 48, :] - lm[..., 54, :], axis=-1), 1e-6)


# A key frame may be this much less frontal (L1 of the rotation vector, rad) than the most frontal frame when that buys
# open eyes and a closed mouth.
KEY_FRAME_SLACK = 0.15


def key_frame(pose: torch.Tensor, landmarks=None) -> int:
    """The key frame of a clip (the texture of the 3-D-aware render, hence of every generated frame's face).

    ``pose (T, 6)`` alone: the most frontal frame, ``argmin_t ‖rotvec_t‖₁`` (the paper). With ``landmarks
    (T, 68, ≥2)``: the most frontal frame among those with open eyes (eye aspect ratio ≥ 0.9 × the clip's median, so
    never mid-blink) and a closed mouth (opening within the clip's lowest 30 %, or under 0.05 of the mouth width),
    searched within :data:`KEY_FRAME_SLACK` of the most frontal rotation; relaxed to open eyes alone, then to the
    rotation alone, when no frame qualifies.
    """
    if pose.ndim != 2 or pose.shape[-1] != 6 or pose.shape[0] == 0:
        raise ValueError(f"key_frame: expected pose of shape (T>0, 6), got {tuple(pose.shape)}")
    rot = np.asarray(pose[:, :3].abs().sum(-1).double().cpu().numpy() if isinstance(pose, torch.Tensor)
                     else np.abs(np.asarray(pose)[:, :3]).sum(-1), np.float64)
    if landmarks is None or len(rot) == 1:
        return int(rot.argmin())
    lm = np.asarray(landmarks)
    if lm.shape[0] != len(rot):
        raise ValueError(f"key_frame: {len(rot)} poses but {lm.shape[0]} landmark frames")
    eyes = eye_openness(lm)
    mouth = mouth_openness(lm)
    eyes_ok = eyes >= 0.9 * np.median(eyes)
    mouth_ok = mouth <= max(np.quantile(mouth, 0.3), 0.05)
    near = rot <= rot.min() + KEY_FRAME_SLACK
    for ok in (eyes_ok & mouth_ok & near, eyes_ok & near):
        if ok.any():
            return int(np.where(ok, rot, np.inf).argmin())
    return int(rot.argmin())
