"""Face tracking over a video, the paper's eye-centred square crop, and resampling to 25 fps (REFERENCE.md §7).

Tracking (:class:`FaceTracker`): MediaPipe Face Mesh runs on a square region of interest (ROI) around the face, not on
the whole frame: the ROI of frame t is a square of ``roi_scale`` × the face's size centred on the mesh of frame t − 1,
shrunk or enlarged to ``roi_px``² before the mesh sees it. So the mesh only ever sees the followed face (another person
in the frame cannot steal the track), large frames cost no more than small ones, and MediaPipe's own frame-to-frame
tracking stays steady because the face keeps its place in the ROI. When the mesh loses the face (or at the first frame)
the full-range face detector (:mod:`rhythmhead.face.detect`) runs on a shrunk copy of the frame; with several faces it
takes the largest, most central one at the start and the one nearest the last position afterwards, and counts them so
that the caller can warn once.

Crop (:func:`crop_boxes`): with the 68 2-D landmarks of each frame in source pixels, eye centre e_t = mean of the two
eyes' landmark centres, and d = the clip mean of max(box width, box height) of the landmarks, the crop is the square of
side 205·d/90 whose top-left is e_t − (100·d/90 columns, 80·d/90 rows). The eye centre is smoothed over time with an
11-tap Hanning window (``mode="smooth"``, the default) or fixed to its clip mean (``mode="fixed"``, the paper's mode 1).
Given the frame size, the square is kept inside the frame (shrunk to fit, slid back from the edges), so no crop shows
padding; :func:`crop_frame` still zero-pads a box that leaves the frame. The crop is resized to 256². :func:`to_crop` maps points into crop pixels (z scaled
like x, y).

Resampling (:func:`resample_indices`, :func:`resampled`): output frame k (time k/25 s from the first frame) takes the
source frame nearest in time, so any input rate (or a variable rate) gives a 25 fps clip of the same duration.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from ..common import CROP as CROP_SIZE
from ..common import FPS
from .detect import FaceDetector, choose_face
from .landmarks import FaceMesher, mesh_to_68

__all__ = [
    "CROP_SIZE", "FPS", "FaceTracker", "crop_boxes", "crop_frame", "to_crop", "fill_missing", "resample_indices",
    "resampled", "output_frame_count", "eye_centre", "face_size", "integer_box", "CropTrack",
]



class FaceTracker:
    """Follows one face through consecutive frames: frame ``(H, W, 3)`` uint8 -> mesh ``(478, 3)`` float32 source px or None.

    Args:
        static_image_mode: True for unrelated images (the mesh detects every time), False for a video's frames.
        roi_scale: ROI side / face size (max of the mesh's 2-D box width and height).
        roi_px: the ROI is resized to this many pixels before the mesh runs.
        min_confidence: detection confidence threshold.
    """

    def __init__(self, static_image_mode: bool = False, roi_scale: float = 1.8, roi_px: int = 256,
                 min_confidence: float = 0.5):
        self.static_image_mode = static_image_mode
        self.roi_scale = float(roi_scale)
        self.roi_px = int(roi_px)
        self.min_confidence = float(min_confidence)
        self._detector = FaceDetector(min_confidence=min_confidence)
        self._mesher: FaceMesher | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the track (call between clips): the next frame starts with a detection."""
        if self._mesher is not None:
            self._mesher.close()
        self._mesher = FaceMesher(static_image_mode=self.static_image_mode, min_detection_confidence=self.min_confidence)
        self._roi: tuple[float, float, float] | None = None  # centre x, centre y, side (source px)
        self._last_centre: tuple[float, float] | None = None
        self.max_faces = 0  # most faces seen by one detection in this clip
        self.detections = 0  # detector runs in this clip

    def close(self) -> None:
        """Release the MediaPipe graphs."""
        if self._mesher is not None:
            self._mesher.close()
            self._mesher = None
        self._detector.close()

    def __enter__(self) -> "FaceTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _detect_roi(self, frame: np.ndarray) -> tuple[float, float, float] | None:
        faces = self._detector(frame)
        self.detections += 1
        self.max_faces = max(self.max_faces, len(faces))
        if not faces:
            return None
        x0, y0, x1, y1, _ = choose_face(faces, frame.shape[:2], near=self._last_centre)
        # the detector's box is tight (brows to chin): enlarge it to the mesh's face size
        return (x0 + x1) / 2, (y0 + y1) / 2 - 0.1 * (y1 - y0), 1.2 * self.roi_scale * max(x1 - x0, y1 - y0)

    def _mesh_in_roi(self, frame: np.ndarray, roi: tuple[float, float, float]) -> np.ndarray | None:
        cx, cy, side = roi
        box = (cx - side / 2, cy - side / 2, side)
        patch, ibox = crop_frame(frame, box, self.roi_px, return_box=True, fast=True)
        mesh = self._mesher(patch)
        if mesh is None:
            return None
        scale = ibox[2] / self.roi_px
        mesh = mesh * scale
        mesh[:, 0] += ibox[0]
        mesh[:, 1] += ibox[1]
        return mesh

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        """The followed face's mesh in ``frame`` (source pixels), or None when no face is found."""
        mesh = None
        if self._roi is not None:
            mesh = self._mesh_in_roi(frame, self._roi)
        if mesh is None:
            roi = self._detect_roi(frame)
            if roi is not None:
                mesh = self._mesh_in_roi(frame, roi)
        if mesh is None:
            self._roi = None
            return None
        lo, hi = mesh[:468, :2].min(0), mesh[:468, :2].max(0)
        centre = (lo + hi) / 2
        self._last_centre = (float(centre[0]), float(centre[1]))
        self._roi = (float(centre[0]), float(centre[1]), self.roi_scale * float((hi - lo).max()))
        return mesh.astype(np.float32)


def fill_missing(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill frames whose points are NaN by linear interpolation in time (nearest at the ends).

    Args:
        points: ``(T, N, 3)`` with all-NaN rows for frames without a face.

    Returns:
        ``(filled (T, N, 3), found (T,) bool)``; raises ValueError when no frame has a face.
    """
    found = ~np.isnan(points).any(axis=(1, 2))
    if not found.any():
        raise ValueError("no frame has a face")
    if found.all():
        return points.copy(), found
    t = np.arange(len(points))
    flat = points.reshape(len(points), -1)
    out = np.empty_like(flat)
    for j in range(flat.shape[1]):
        out[:, j] = np.interp(t, t[found], flat[found, j])
    return out.reshape(points.shape), found


def eye_centre(landmarks: np.ndarray) -> np.ndarray:
    """``(..., 68, ≥2)`` -> ``(..., 2)`` mean of the two eyes' landmark centres (x, y)."""
    return (landmarks[..., 36:42, :2].mean(-2) + landmarks[..., 42:48, :2].mean(-2)) / 2


def face_size(landmarks: np.ndarray) -> np.ndarray:
    """``(..., 68, ≥2)`` -> ``(...)`` max(width, height) of the landmarks' 2-D box (the paper's d per frame)."""
    span = landmarks[..., :2].max(-2) - landmarks[..., :2].min(-2)
    return span.max(-1)


def crop_boxes(landmarks: np.ndarray, mode: str = "smooth", window: int = 11,
               frame_size: tuple[int, int] | None = None) -> np.ndarray:
    """The paper's crop square of every frame: ``(T, 68, ≥2)`` source-pixel landmarks -> ``(T, 3)`` (x0, y0, side).

    Args:
        landmarks: 68 iBUG landmarks per frame in source pixels.
        mode: ``"smooth"`` (eye centre smoothed by a ``window``-tap Hanning window) or ``"fixed"`` (clip mean).
        window: odd smoothing length in frames.
        frame_size: ``(H, W)`` of the source frames. Given, the square is kept inside the frame, so a crop never shows
            padding: a side larger than the frame shrinks to ``min(H, W)`` (about the same eye centre), and a square
            that reaches past an edge slides back in (the face then sits off the paper's position in the crop; every
            landmark, pose and mesh is measured in crop pixels, so nothing downstream assumes that position).
    """
    eye = eye_centre(landmarks)  # (T, 2)
    d = float(face_size(landmarks).mean())
    if mode == "fixed":
        eye = np.broadcast_to(eye.mean(0), eye.shape)
    elif mode == "smooth":
        if len(eye) > 1:
            w = np.hanning(window + 2)[1:-1]
            w /= w.sum()
            half = window // 2
            padded = np.pad(eye, ((half, half), (0, 0)), mode="edge")
            eye = np.stack([np.convolve(padded[:, k], w, mode="valid") for k in range(2)], axis=1)
    else:
        raise ValueError(f"crop mode must be 'smooth' or 'fixed', got {mode!r}")
    side = 205.0 * d / 90.0
    if frame_size is not None:
        side = min(side, float(min(frame_size)))
    x0 = eye[:, 0] - side * 100.0 / 205.0
    y0 = eye[:, 1] - side * 80.0 / 205.0
    if frame_size is not None:
        h, w = frame_size
        # whole pixels as crop_frame cuts them: the rounded square must lie inside the frame too
        side = float(min(int(round(side)), h, w))
        x0 = np.clip(x0, 0.0, w - side)
        y0 = np.clip(y0, 0.0, h - side)
    return np.stack([x0, y0, np.full(len(eye), side)], axis=1)


def integer_box(box) -> tuple[int, int, int]:
    """(x0, y0, side) rounded to whole pixels (side ≥ 1): the box :func:`crop_frame` really cuts."""
    x0, y0, side = box
    return int(round(x0)), int(round(y0)), max(1, int(round(side)))


def crop_frame(frame: np.ndarray, box, size: int = CROP_SIZE, return_box: bool = False, fast: bool = False):
    """Cut the square ``box`` (x0, y0, side; rounded to whole pixels) out of ``frame``, zero-padded, resized to size².

    Shrinking uses area averaging (no aliasing), or bilinear with ``fast`` (for the tracker's ROI, 3× cheaper).
    Returns the ``(size, size, 3)`` uint8 crop, and with ``return_box`` also the integer box actually used (the one
    :func:`to_crop` must be given to map points exactly).
    """
    import cv2

    x0, y0, side = integer_box(box)
    h, w = frame.shape[:2]
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
    if sx0 == x0 and sy0 == y0 and sx1 == x0 + side and sy1 == y0 + side:
        patch = frame[sy0:sy1, sx0:sx1]
    else:
        patch = np.zeros((side, side, 3), dtype=np.uint8)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    interp = cv2.INTER_AREA if side > size and not fast else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=interp)
    return (out, (x0, y0, side)) if return_box else out


def to_crop(points: np.ndarray, box, size: int = CROP_SIZE) -> np.ndarray:
    """Source-pixel points ``(..., N, 3)`` -> crop pixels for the integer ``box`` (x0, y0, side); z is scaled like x, y."""
    x0, y0, side = integer_box(box)
    scale = size / side
    out = np.array(points, dtype=np.float32, copy=True)
    out[..., 0] = (out[..., 0] - x0) * scale
    out[..., 1] = (out[..., 1] - y0) * scale
    out[..., 2] = out[..., 2] * scale
    return out


def output_frame_count(duration_s: float, fps: float = FPS) -> int:
    """Frames of a ``duration_s`` clip at ``fps`` (at least 1)."""
    return max(1, int(round(duration_s * fps)))


def resample_indices(times: Iterable[float], n_out: int, fps: float = FPS) -> np.ndarray:
    """For output frames k = 0..n_out−1 at times t₀ + k/fps, the index of the source frame nearest in time ``(n_out,)``."""
    times = np.asarray(list(times), dtype=np.float64)
    if times.size == 0:
        raise ValueError("no source frames")
    target = times[0] + np.arange(n_out) / fps
    idx = np.searchsorted(times, target).clip(1, len(times) - 1)
    left = times[idx - 1]
    right = times[idx]
    idx = np.where(np.abs(target - left) <= np.abs(right - target), idx - 1, idx)
    return idx.clip(0, len(times) - 1) if len(times) > 1 else np.zeros(n_out, dtype=np.int64)


def resampled(frames_with_times: Iterable[tuple[np.ndarray, float]], n_out: int, fps: float = FPS
              ) -> Iterator[tuple[int, int, np.ndarray]]:
    """Stream a decoded video at ``fps``: yields ``(k, source_index, frame)`` for output frames k = 0..n_out−1.

    Equivalent to :func:`resample_indices` on the source times, with one frame of look-ahead, so memory does not grow
    with the clip. A source frame is yielded once per output frame it serves (repeated when upsampling).
    """
    k = 0
    prev = None  # (index, frame, time)
    t0 = None
    for i, (frame, t) in enumerate(frames_with_times):
        if t0 is None:
            t0 = t
        if prev is not None:
            mid = (prev[2] + t) / 2
            while k < n_out and t0 + k / fps <= mid:
                yield k, prev[0], prev[1]
                k += 1
        if k >= n_out:
            return
        prev = (i, frame, t)
    while prev is not None and k < n_out:
        yield k, prev[0], prev[1]
        k += 1


@dataclass(frozen=True)
class CropTrack:
    """The result of tracking a clip: everything needed to cut its crops and place its landmarks.

    Args:
        mesh_src: ``(T, 478, 3)`` float32 mesh per output frame in source pixels (gaps interpolated).
        found: ``(T,)`` bool, where the face was actually found.
        boxes: ``(T, 3)`` float crop squares (x0, y0, side) in source pixels.
        max_faces: most faces one detection saw.
        source_size: (height, width) of the source frames.
    """

    mesh_src: np.ndarray
    found: np.ndarray
    boxes: np.ndarray
    max_faces: int
    source_size: tuple[int, int]

    def mesh_crop(self) -> np.ndarray:
        """``(T, 478, 3)`` float32 mesh in crop pixels (per-frame integer boxes, as :func:`crop_frame` cuts)."""
        return np.stack([to_crop(m, b) for m, b in zip(self.mesh_src, self.boxes)])

    def landmarks_crop(self) -> np.ndarray:
        """``(T, 68, 3)`` float32 landmarks in crop pixels."""
        return mesh_to_68(self.mesh_crop())
