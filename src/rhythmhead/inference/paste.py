"""Paste-back: put each generated face into the reference's original (uncropped) frame at full resolution.

The crop was cut as the integer square ``box = (x0, y0, side)`` of the source frame (kept inside the frame,
:func:`rhythmhead.face.track.crop_boxes`). With paste-back the pipeline composes its frames directly at the box's own
resolution, ``side × scale`` pixels, from the source's own pixels (:func:`rhythmhead.inference.stream.synthesize`), so
nothing is upscaled here. ``scale = min(1, max_size / long side)`` caps the output (default 1280 px on the long side,
as LivePortrait does); the background is the source frame shrunk by the same scale.

Each frame is blended into the background through a **face-and-neck mask** made from that frame's own landmarks: the
jaw line, the brows lifted to the hairline, and the neck down to the box's lower edge, grown, Gaussian-feathered and
multiplied by a raised-cosine fade to the box's edges. Pixels away from the face and neck are the background's exactly.

The background is the reference's key frame: for a photo that is the photo; for a video it keeps the output consistent
with what G saw, and the memory constant (one source frame is held).
"""
from __future__ import annotations

import numpy as np

from ..face.track import CROP_SIZE as CROP

MAX_SIZE = 1280  # default cap on the long side of a pasted-back video


def feather_mask(side: int, feather: float = 0.12) -> np.ndarray:
    """``(side, side)`` float32 weights: 1 in the middle, a raised-cosine ramp to 0 over ``feather·side`` at the edges."""
    ramp_px = max(1.0, feather * side)
    d = np.minimum(np.arange(side) + 0.5, side - np.arange(side) - 0.5)  # distance to the nearest edge (px)
    w = np.clip(d / ramp_px, 0.0, 1.0)
    w = 0.5 - 0.5 * np.cos(np.pi * w)
    return np.outer(w, w).astype(np.float32)


def face_neck_mask(landmarks: np.ndarray, side: int, grow: float = 1.2, blur: float = 0.05) -> np.ndarray:
    """``(side, side)`` float32 soft mask of the face, forehead and neck for ``landmarks (68, ≥2)`` in 256²-crop px.

    The polygon: jaw points 0–16, then the brows (17–26) lifted by 0.6 × the nose-to-chin length (forehead and
    hairline), grown by ``grow`` about the face centre; plus the neck, from the jaw's lower half straight down to the
    box's edge. Filled, then blurred with σ = ``blur`` × side.
    """
    import cv2

    if side > CROP:  # drawn and blurred at the crop's 256², then resized: the same mask, far cheaper
        return cv2.resize(face_neck_mask(landmarks, CROP, grow, blur), (side, side), interpolation=cv2.INTER_LINEAR)
    lm = np.asarray(landmarks, np.float64)[:, :2] * (side / CROP)
    lift = 0.6 * np.linalg.norm(lm[8] - lm[33])
    up = np.array([0.0, -lift])
    brows = lm[26:16:-1] + up  # right to left, so the polygon runs round
    face = np.concatenate([lm[0:17], brows])
    centre = face.mean(0)
    face = centre + grow * (face - centre)
    neck_l, neck_r = face[4], face[12]
    neck = np.array([neck_r, [neck_r[0], side + 1.0], [neck_l[0], side + 1.0], neck_l])
    mask = np.zeros((side, side), np.float32)
    for poly in (face, neck):
        cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
    sigma = max(1.0, blur * side)
    k = int(2 * round(3 * sigma) + 1)
    return cv2.GaussianBlur(mask, (k, k), sigma)


def output_scale(height: int, width: int, max_size: int = MAX_SIZE) -> float:
    """The factor that brings a ``height × width`` frame's long side down to ``max_size`` (1 when it already fits)."""
    return min(1.0, float(max_size) / max(height, width))


class PasteBack:
    """Blend generated crops into one background frame (see the module docstring).

    Args:
        source: ``(H, W, 3)`` uint8 original frame (the reference's key frame).
        box: ``(x0, y0, side)`` integer crop square of that frame.
        max_size: cap on the output's long side.
        feather: edge fraction of the fade to the box's edges.

    Attributes:
        side: the crop side at the output scale — compose frames at ``side``² and pass them to ``__call__``.
        background: the output-size background ``(H', W', 3)``.
    """

    def __init__(self, source: np.ndarray, box, max_size: int = MAX_SIZE, feather: float = 0.08):
        import cv2

        h, w = source.shape[:2]
        self.scale = output_scale(h, w, max_size)
        # even sides: H.264 with 4:2:0 chroma needs them
        out_w, out_h = [max(2, 2 * int(round(v * self.scale / 2))) for v in (w, h)]
        self.background = np.ascontiguousarray(
            source if (out_w, out_h) == (w, h) else cv2.resize(source, (out_w, out_h), interpolation=cv2.INTER_AREA))
        x0, y0, side = (int(v) for v in box)
        self.side = max(16, int(round(side * self.scale)))
        self.x0, self.y0 = int(round(x0 * self.scale)), int(round(y0 * self.scale))
        self.edge = feather_mask(self.side, feather)

    def __call__(self, crop: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
        """``crop (side, side, 3)`` uint8 composed at the output scale, ``landmarks (68, ≥2)`` (256²-crop px) of that
        frame → the output frame ``(H', W', 3)`` uint8 (the face-and-neck mask; without landmarks the box fade only)."""
        if crop.shape[0] != self.side:
            raise ValueError(f"paste-back expects {self.side}² crops, got {crop.shape[:2]}")
        mask = self.edge if landmarks is None else self.edge * face_neck_mask(landmarks, self.side)
        return paste(self.background, crop, (self.x0, self.y0, self.side), mask)


def paste(background: np.ndarray, crop: np.ndarray, box, mask: np.ndarray) -> np.ndarray:
    """Blend ``crop (side, side, 3)`` uint8 into a copy of ``background`` at ``box = (x0, y0, side)`` through ``mask
    (side, side)`` in [0, 1] (the part of the box outside the frame is dropped). Returns ``(H, W, 3)`` uint8."""
    x0, y0, side = (int(v) for v in box)
    out = background.copy()
    h, w = out.shape[:2]
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
    if sx1 <= sx0 or sy1 <= sy0:
        return out
    region = (slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))
    alpha = mask[region][..., None]
    dst = out[sy0:sy1, sx0:sx1].astype(np.float32)
    out[sy0:sy1, sx0:sx1] = np.clip(alpha * crop[region] + (1 - alpha) * dst + 0.5, 0, 255).astype(np.uint8)
    return out


def key_frame_source(reference) -> np.ndarray:
    """The reference's key frame as decoded from its source file (full resolution, upright), at 25 fps timing."""
    from ..face.track import resampled
    from ..media.io import IMAGE_SUFFIXES, iter_frames_with_times, read_image

    src = reference.source
    if reference.is_image or str(src).lower().endswith(tuple(IMAGE_SUFFIXES)):
        return read_image(src)
    key = int(reference.key_frame)
    for k, _index, frame in resampled(iter_frames_with_times(src), len(reference.boxes)):
        if k == key:
            return frame
    raise ValueError(f"{src}: key frame {key} not found on decoding")
