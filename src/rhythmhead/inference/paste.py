"""Paste-back: put the generated 256² crop back into the reference's original (uncropped) frame.

The crop was cut as the integer square ``box = (x0, y0, side)`` of the source frame, zero-padded where it leaves the
frame, and resized to 256² (:func:`rhythmhead.face.track.crop_frame`). Pasting inverts that: the generated frame is
resized to ``side × side`` and blended into the square, clipped to the frame, through a feathered mask (1 inside,
falling to 0 over the outer ``feather`` fraction of the side with a raised-cosine ramp) so no seam shows.

The background is the reference's key frame (the most frontal one): for a photo that is the photo; for a video it
keeps the output consistent with what G saw, and the memory constant (one source frame is held).
"""
from __future__ import annotations

import numpy as np


def feather_mask(side: int, feather: float = 0.12) -> np.ndarray:
    """``(side, side)`` float32 weights: 1 in the middle, a raised-cosine ramp to 0 over ``feather·side`` at the edges."""
    ramp_px = max(1.0, feather * side)
    d = np.minimum(np.arange(side) + 0.5, side - np.arange(side) - 0.5)  # distance to the nearest edge (px)
    w = np.clip(d / ramp_px, 0.0, 1.0)
    w = 0.5 - 0.5 * np.cos(np.pi * w)
    return np.outer(w, w).astype(np.float32)


def paste(background: np.ndarray, crop: np.ndarray, box, mask: np.ndarray | None = None,
          feather: float = 0.12) -> np.ndarray:
    """Blend ``crop (S, S, 3)`` uint8 into a copy of ``background (H, W, 3)`` uint8 at ``box = (x0, y0, side)``.

    Args:
        background: the original frame.
        crop: the generated frame (any square size; resized to ``side``).
        box: the integer crop square in background pixels (may extend past the frame).
        mask: optional precomputed :func:`feather_mask` of ``side``.
        feather: edge fraction of the feathering when ``mask`` is None.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    import cv2

    x0, y0, side = (int(v) for v in box)
    out = background.copy()
    h, w = out.shape[:2]
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
    if sx1 <= sx0 or sy1 <= sy0:
        return out
    interp = cv2.INTER_LINEAR if side >= crop.shape[0] else cv2.INTER_AREA
    big = cv2.resize(np.ascontiguousarray(crop), (side, side), interpolation=interp)
    m = feather_mask(side, feather) if mask is None else mask
    region = (slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))
    alpha = m[region][..., None]
    dst = out[sy0:sy1, sx0:sx1].astype(np.float32)
    out[sy0:sy1, sx0:sx1] = np.clip(alpha * big[region] + (1 - alpha) * dst + 0.5, 0, 255).astype(np.uint8)
    return out


class PasteBack:
    """Paste every generated frame into one background frame at one box (see the module docstring).

    Args:
        background: ``(H, W, 3)`` uint8 original frame.
        box: ``(x0, y0, side)`` integer crop square of that frame.
        feather: edge fraction of the mask.
    """

    def __init__(self, background: np.ndarray, box, feather: float = 0.12):
        self.background = np.ascontiguousarray(background)
        self.box = tuple(int(v) for v in box)
        self.mask = feather_mask(self.box[2], feather)

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        return paste(self.background, crop, self.box, self.mask)


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
