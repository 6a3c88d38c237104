"""dlib's face detector, 68-point predictor and 128-d face descriptor: the second opinion beside MediaPipe.

Uses the model files of the ``face_recognition_models`` package (``shape_predictor_68_face_landmarks.dat``,
``dlib_face_recognition_resnet_model_v1.dat``), loaded once per process and shared by every :class:`DlibFace`. The
descriptor is the identity embedding behind CSIM and the descriptor Fréchet distance (faces of one person are within a
Euclidean distance of about 0.6).
"""
from __future__ import annotations

import functools
import warnings

import numpy as np

__all__ = ["DlibFace", "Box"]

Box = tuple[int, int, int, int]  # (left, top, right, bottom) pixels


@functools.lru_cache(maxsize=None)
def _models():
    import dlib

    with warnings.catch_warnings():  # face_recognition_models imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        import face_recognition_models as frm

    return (dlib.get_frontal_face_detector(), dlib.shape_predictor(frm.pose_predictor_model_location()),
            dlib.face_recognition_model_v1(frm.face_recognition_model_location()))


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.ascontiguousarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
    return img


class DlibFace:
    """dlib face detection, 68 landmarks and identity descriptors.

    Args:
        upsample: how many times the detector upsamples the image (1 finds faces down to about 40 px).
    """

    def __init__(self, upsample: int = 1):
        self.upsample = int(upsample)
        self._detector, self._predictor, self._encoder = _models()

    def detect(self, rgb: np.ndarray) -> list[Box]:
        """Face boxes ``(left, top, right, bottom)`` in ``rgb`` ``(H, W, 3)`` uint8, largest first."""
        rects = self._detector(_rgb(rgb), self.upsample)
        boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
        return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))

    def _shape(self, rgb: np.ndarray, box: Box):
        import dlib

        return self._predictor(rgb, dlib.rectangle(*(int(v) for v in box)))

    def landmarks68(self, rgb: np.ndarray, box: Box) -> np.ndarray:
        """dlib's 68 iBUG points ``(68, 2)`` float32 (x, y pixels) of the face in ``box``."""
        shape = self._shape(_rgb(rgb), box)
        return np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=np.float32)

    def descriptor(self, rgb: np.ndarray, box: Box | None = None) -> np.ndarray | None:
        """The 128-d face descriptor ``(128,)`` float32 of the face in ``box`` (default: the largest face), or None."""
        rgb = _rgb(rgb)
        if box is None:
            boxes = self.detect(rgb)
            if not boxes:
                return None
            box = boxes[0]
        desc = self._encoder.compute_face_descriptor(rgb, self._shape(rgb, box))
        return np.asarray(desc, dtype=np.float32)
