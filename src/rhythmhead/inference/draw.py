"""Overlays for looking at what the pipeline sees: 68 landmarks, head-pose axes, an audio level bar (OpenCV drawing).

Every function takes an ``(H, W, 3)`` uint8 RGB image and returns a new image (the input is not modified). Coordinates
are crop pixels (x right, y down), as everywhere in the project (docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from ..geometry.pose import rotvec_to_matrix

__all__ = ["IBUG_68_PARTS", "draw_landmarks", "draw_pose_axes", "draw_level_bar", "draw_marker"]

# iBUG-68 contours: (first index, last index inclusive, closed?)
IBUG_68_PARTS: tuple[tuple[int, int, bool], ...] = (
    (0, 16, False),   # jaw
    (17, 21, False),  # right brow (subject's)
    (22, 26, False),  # left brow
    (27, 30, False),  # nose bridge
    (31, 35, False),  # nose base
    (36, 41, True),   # right eye
    (42, 47, True),   # left eye
    (48, 59, True),   # outer lips
    (60, 67, True),   # inner lips
)

RGB = tuple[int, int, int]


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
    return np.ascontiguousarray(img).copy()


def draw_landmarks(img: np.ndarray, pts68: np.ndarray, color: RGB = (0, 255, 0), radius: int = 2,
                   thickness: int = 1) -> np.ndarray:
    """Draw 68 iBUG landmarks (``(68, 2)`` or ``(68, 3)``, pixels; z is ignored) as dots joined by their contours."""
    out = _check_image(img)
    pts = np.asarray(pts68, dtype=np.float64)
    if pts.shape not in ((68, 2), (68, 3)):
        raise ValueError(f"pts68 must be (68, 2) or (68, 3), got {pts.shape}")
    xy = np.round(pts[:, :2]).astype(np.int32)
    for first, last, closed in IBUG_68_PARTS:
        cv2.polylines(out, [xy[first:last + 1].reshape(-1, 1, 2)], closed, color, thickness, cv2.LINE_AA)
    for x, y in xy:
        cv2.circle(out, (int(x), int(y)), radius, color, -1, cv2.LINE_AA)
    return out


def draw_pose_axes(img: np.ndarray, pose: np.ndarray, origin: tuple[float, float], length: float = 60.0,
                   thickness: int = 2) -> np.ndarray:
    """Draw the head's rotation as three coloured axes from ``origin`` (pixels, e.g. the nose tip).

    With the paper's convention ``frontal = R·l + t`` the canonical axis ``e_i`` points along ``Rᵀe_i`` (row i of R) in
    the frame. Drawn orthographically: x (the face's right → left of the image) in red, y (down) in green, and the facing
    direction ``−z`` (out of the face, towards the camera for a frontal head) in blue. A frontal head shows a red
    horizontal and a green vertical axis and a blue dot; turning the head swings the blue axis the way the face turns.

    Args:
        img: ``(H, W, 3)`` uint8 RGB.
        pose: ``(6,)`` rotation vector (rad) + translation (px); only the rotation is drawn.
        origin: ``(x, y)`` pixel position of the axes' origin.
        length: axis length in pixels.
    """
    out = _check_image(img)
    pose = np.asarray(pose, dtype=np.float64).reshape(-1)
    if pose.shape[0] < 3:
        raise ValueError(f"pose must have a rotation vector in its first 3 values, got {pose.shape}")
    rot = rotvec_to_matrix(torch.as_tensor(pose[:3], dtype=torch.float64)).numpy()
    axes = (rot[0], rot[1], -rot[2])  # frame directions of canonical x, y and the facing direction −z
    colors = ((255, 0, 0), (0, 255, 0), (0, 128, 255))
    o = np.asarray(origin, dtype=np.float64)
    # draw the axis pointing away from the viewer first so that the nearer ones stay on top
    for i in sorted(range(3), key=lambda i: -axes[i][2]):
        end = o + length * axes[i][:2]
        p0 = tuple(int(round(v)) for v in o)
        p1 = tuple(int(round(v)) for v in end)
        cv2.arrowedLine(out, p0, p1, colors[i], thickness, cv2.LINE_AA, tipLength=0.15)
    cv2.circle(out, tuple(int(round(v)) for v in o), thickness + 1, (255, 255, 255), -1, cv2.LINE_AA)
    return out


def draw_level_bar(img: np.ndarray, level: float, color: RGB = (255, 200, 0), width: int = 10,
                   margin: int = 6) -> np.ndarray:
    """Draw a vertical level meter at the image's right edge, filled to ``level`` ∈ [0, 1] from the bottom."""
    out = _check_image(img)
    h, w = out.shape[:2]
    level = float(np.clip(level, 0.0, 1.0))
    x0, x1 = w - margin - width, w - margin
    y0, y1 = margin, h - margin
    cv2.rectangle(out, (x0, y0), (x1, y1), (40, 40, 40), -1)
    top = int(round(y1 - level * (y1 - y0)))
    if top < y1:
        cv2.rectangle(out, (x0, top), (x1, y1), color, -1)
    cv2.rectangle(out, (x0, y0), (x1, y1), (255, 255, 255), 1)
    return out


def draw_marker(img: np.ndarray, center: tuple[float, float], radius: int = 6, color: RGB = (255, 60, 60)) -> np.ndarray:
    """Draw a filled dot (e.g. flashing on audio onsets)."""
    out = _check_image(img)
    cv2.circle(out, (int(round(center[0])), int(round(center[1]))), radius, color, -1, cv2.LINE_AA)
    return out
