"""Face detection (MediaPipe's BlazeFace) and the rule that picks one face when there are several.

The short-range model (faces that fill much of the frame, as in face crops and webcam video) runs first; when it finds
nothing, the full-range model (small, distant faces) runs.

Detection runs on a copy of the frame shrunk to at most ``max_side`` pixels (the detector's own input is 192², so a
smaller copy costs nothing in accuracy and saves the colour conversion of a large frame); boxes come back in pixels of
the original frame.
"""
from __future__ import annotations

import numpy as np

from .native_log import quiet_native_stderr, start_quietly

__all__ = ["FaceDetector", "Detection", "choose_face", "suppress_overlaps"]

Detection = tuple[float, float, float, float, float]  # (x0, y0, x1, y1, score) pixels


class FaceDetector:
    """Every face in an RGB frame as ``(x0, y0, x1, y1, score)`` boxes in pixels.

    Args:
        min_confidence: detector score threshold.
        max_side: frames larger than this are shrunk (aspect kept) before detection.
    """

    def __init__(self, min_confidence: float = 0.5, max_side: int = 640):
        from mediapipe.python.solutions import face_detection

        self.max_side = int(max_side)
        self._dets = [start_quietly(lambda m=m: face_detection.FaceDetection(model_selection=m,
                                                                             min_detection_confidence=min_confidence))
                      for m in (0, 1)]

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        """Boxes of the faces in ``rgb`` ``(H, W, 3)`` uint8, clipped to the frame."""
        import cv2

        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = rgb if scale >= 1.0 else cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                    interpolation=cv2.INTER_AREA)
        small = np.ascontiguousarray(small)
        detections = []
        for det_model in self._dets:
            with quiet_native_stderr():
                detections = det_model.process(small).detections or []
            if detections:
                break
        out = []
        for det in detections:
            box = det.location_data.relative_bounding_box
            x0, y0 = max(0.0, box.xmin * w), max(0.0, box.ymin * h)
            x1, y1 = min(float(w), (box.xmin + box.width) * w), min(float(h), (box.ymin + box.height) * h)
            if x1 > x0 and y1 > y0:
                out.append((x0, y0, x1, y1, float(det.score[0])))
        return suppress_overlaps(out)

    def close(self) -> None:
        """Release the MediaPipe graph."""
        with quiet_native_stderr():
            for det_model in self._dets:
                det_model.close()
        self._dets = []

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def suppress_overlaps(faces: list[Detection], max_overlap: float = 0.5) -> list[Detection]:
    """Drop a box when more than ``max_overlap`` of the smaller box's area lies inside a better-scored kept box.

    BlazeFace sometimes adds a weak second box on part of a large face (an eye and cheek); that is not a second person.
    """
    kept: list[Detection] = []
    for f in sorted(faces, key=lambda f: -f[4]):
        area = (f[2] - f[0]) * (f[3] - f[1])
        if all(_inter(f, k) <= max_overlap * min(area, (k[2] - k[0]) * (k[3] - k[1])) for k in kept):
            kept.append(f)
    return kept


def _inter(a: Detection, b: Detection) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def choose_face(faces: list[Detection], frame_size: tuple[int, int], near: tuple[float, float] | None = None) -> Detection:
    """Pick the face to follow: the one nearest to ``near`` (x, y) when tracking, else the largest, most central one.

    "Largest, most central" scores each box by its area times ``1 − (distance of its centre from the frame centre /
    half the frame diagonal)``, so a big face at the edge can lose to a slightly smaller one in the middle.
    """
    if not faces:
        raise ValueError("choose_face needs at least one face")
    h, w = frame_size
    centres = [((f[0] + f[2]) / 2, (f[1] + f[3]) / 2) for f in faces]
    if near is not None:
        return faces[int(np.argmin([np.hypot(cx - near[0], cy - near[1]) for cx, cy in centres]))]
    half_diag = np.hypot(w, h) / 2
    scores = [(f[2] - f[0]) * (f[3] - f[1]) * (1 - np.hypot(cx - w / 2, cy - h / 2) / half_diag)
              for f, (cx, cy) in zip(faces, centres)]
    return faces[int(np.argmax(scores))]
