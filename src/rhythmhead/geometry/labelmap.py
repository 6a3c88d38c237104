"""Landmark label maps: the generator's 1-channel edge-map conditioning (REFERENCE.md §5.1), and the mouth box.

A label map is drawn from 68 iBUG landmarks (x, y in pixels of a ``size``² crop) plus 15 synthetic forehead points: the jaw
points 1–15 mirrored about the line through the jaw ends 0 and 16, with their distance to that line scaled by 2/3. The face
contour (jaw + forehead, closed), brows, nose bridge, nose base, eyes (closed) and outer/inner lips (closed) are drawn as
anti-aliased polylines of width 1 with sub-pixel precision. Values are in [−1, 1]: −1 background, +1 on the lines.

Coordinates are continuous pixels with pixel ``j``'s centre at ``j + 0.5`` (the convention of
:mod:`rhythmhead.geometry.raster` and ``grid_sample(align_corners=False)``), so a mirrored face is ``x → size − x``.

Shapes: landmarks ``(..., 68, 2)`` (numpy or torch; a trailing z column is ignored) → maps ``(..., 1, size, size)`` of the
same kind (torch: same dtype and device; drawing itself runs on the CPU with OpenCV, frame by frame).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

# Polylines of the 68-point iBUG layout: (indices, closed). The face contour is handled separately (jaw + forehead).
PARTS_68: tuple[tuple[tuple[int, ...], bool], ...] = (
    (tuple(range(17, 22)), False),  # right brow (image left)
    (tuple(range(22, 27)), False),  # left brow
    (tuple(range(27, 31)), False),  # nose bridge
    (tuple(range(31, 36)), False),  # nose base
    (tuple(range(36, 42)), True),  # right eye
    (tuple(range(42, 48)), True),  # left eye
    (tuple(range(48, 60)), True),  # outer lips
    (tuple(range(60, 68)), True),  # inner lips
)
MOUTH_68 = tuple(range(48, 68))

# Horizontal-flip permutation of the 68 iBUG indices: landmark i of a mirrored face is landmark FLIP_68[i] of the original.
FLIP_68: tuple[int, ...] = tuple(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 21, -1)) + list(range(21, 16, -1))  # brows swap
    + [27, 28, 29, 30]  # nose bridge
    + [35, 34, 33, 32, 31]  # nose base
    + [45, 44, 43, 42, 47, 46]  # right eye <- left eye
    + [39, 38, 37, 36, 41, 40]  # left eye <- right eye
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lips
)

_SHIFT = 4  # OpenCV fixed-point bits: draw at 1/16 px precision


def forehead_points(landmarks: np.ndarray) -> np.ndarray:
    """15 synthetic forehead points ``(..., 15, 2)`` from ``(..., 68, 2)`` landmarks (jaw 1–15 mirrored, 2/3 height).

    Returned in the order of the jaw points they mirror (1 → 15), i.e. from the image-left temple to the right one.
    """
    pts = np.asarray(landmarks, dtype=np.float64)[..., :2]
    a, b = pts[..., 0:1, :], pts[..., 16:17, :]
    d = b - a
    d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-6)
    jaw = pts[..., 1:16, :]
    along = ((jaw - a) * d).sum(-1, keepdims=True)
    foot = a + along * d  # projection of each jaw point onto the line through the jaw ends
    return foot - (jaw - foot) * (2.0 / 3.0)


def _draw_one(points: np.ndarray, size: int) -> np.ndarray:
    """One frame: (68, 2) float → (size, size) uint8 with lines at 255."""
    canvas = np.zeros((size, size), np.uint8)
    if not np.isfinite(points).all():
        return canvas
    scale = float(1 << _SHIFT)
    points = points - 0.5  # continuous coordinates → OpenCV's pixel-index coordinates
    contour = np.concatenate([points[:17], forehead_points(points)[::-1]], 0)
    polys = [(contour, True)] + [(points[list(idx)], closed) for idx, closed in PARTS_68]
    for poly, closed in polys:
        fixed = np.round(poly * scale).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [fixed], closed, 255, thickness=1, lineType=cv2.LINE_AA, shift=_SHIFT)
    return canvas


def draw_label_map(landmarks, size: int = 256):
    """Draw label maps. ``landmarks (..., 68, 2|3)`` in pixels → ``(..., 1, size, size)`` in [−1, 1] (lines +1).

    Accepts numpy (returns float32 numpy) or torch (returns a tensor of the input's dtype and device).
    """
    is_torch = isinstance(landmarks, torch.Tensor)
    pts = landmarks.detach().cpu().double().numpy() if is_torch else np.asarray(landmarks, dtype=np.float64)
    if pts.ndim < 2 or pts.shape[-2] != 68 or pts.shape[-1] not in (2, 3):
        raise ValueError(f"landmarks: expected shape (..., 68, 2|3), got {tuple(pts.shape)}")
    lead = pts.shape[:-2]
    flat = pts[..., :2].reshape(-1, 68, 2)
    maps = np.stack([_draw_one(p, size) for p in flat], 0) if len(flat) else np.zeros((0, size, size), np.uint8)
    out = (maps.astype(np.float32) * (2.0 / 255.0) - 1.0).reshape(*lead, 1, size, size)
    if is_torch:
        return torch.from_numpy(out).to(device=landmarks.device, dtype=landmarks.dtype if landmarks.is_floating_point()
                                        else torch.float32)
    return out


def mouth_box(landmarks68, size: int = 256, margin: float = 0.15) -> tuple[int, int, int, int]:
    """Bounding box ``(x0, y0, x1, y1)`` (pixel indices, x1/y1 exclusive, clipped to the image) of the mouth points
    48–67 of one face ``(68, 2|3)``, grown on each side by ``margin`` × the box's width (x) and height (y)."""
    pts = landmarks68.detach().cpu().numpy() if isinstance(landmarks68, torch.Tensor) else np.asarray(landmarks68)
    mouth = pts[list(MOUTH_68), :2].astype(np.float64)
    lo, hi = mouth.min(0), mouth.max(0)
    grow = (hi - lo) * margin
    lo, hi = lo - grow, hi + grow
    x0, y0 = (int(np.clip(np.floor(v), 0, size)) for v in lo)
    x1, y1 = (int(np.clip(np.ceil(v), 0, size)) for v in hi)
    return x0, y0, x1, y1


def mouth_mask(landmarks, size: int = 256, margin: float = 0.15):
    """Mouth-box masks ``(..., 1, size, size)`` (1 inside the box of :func:`mouth_box`, else 0) for ``(..., 68, 2|3)``
    landmarks; torch in → tensor of the input's dtype and device, numpy in → float32 numpy. Pure tensor ops for torch."""
    if isinstance(landmarks, torch.Tensor):
        mouth = landmarks[..., list(MOUTH_68), :2]
        lo, hi = mouth.amin(-2), mouth.amax(-2)  # (..., 2)
        grow = (hi - lo) * margin
        lo, hi = (lo - grow).floor(), (hi + grow).ceil()
        coords = torch.arange(size, device=landmarks.device, dtype=landmarks.dtype)  # pixel j covers [j, j + 1)
        inx = (coords >= lo[..., 0:1]) & (coords < hi[..., 0:1])  # (..., W)
        iny = (coords >= lo[..., 1:2]) & (coords < hi[..., 1:2])  # (..., H)
        return (iny[..., :, None] & inx[..., None, :]).unsqueeze(-3).to(landmarks.dtype)
    pts = np.asarray(landmarks, dtype=np.float64)
    return mouth_mask(torch.from_numpy(pts), size, margin).float().numpy()
