"""The 68-point map against dlib on the real face photos (reads ../shared/media)."""
from __future__ import annotations

import numpy as np
import pytest

from rhythmhead.face.dlib_face import DlibFace
from rhythmhead.face.landmarks import FaceMesher, mesh_to_68
from rhythmhead.media.io import read_image

pytestmark = pytest.mark.media


def _shrink(img: np.ndarray, max_side: int = 512) -> np.ndarray:
    """Downscale large photos (dlib's detector time grows with the pixel count)."""
    import cv2

    scale = max_side / max(img.shape[:2])
    if scale >= 1:
        return img
    return cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)


def test_mesh_map_matches_dlib(media_dir):
    dl = DlibFace()
    errors = []
    with FaceMesher(static_image_mode=True) as fm:
        for photo in sorted((media_dir / "face_photo").iterdir()):
            img = _shrink(read_image(photo))
            boxes = dl.detect(img)
            mesh = fm(img)
            if not boxes or mesh is None:
                continue
            ref = dl.landmarks68(img, boxes[0])
            iod = np.linalg.norm(ref[36:42].mean(0) - ref[42:48].mean(0))
            errors.append(np.linalg.norm(mesh_to_68(mesh)[:, :2] - ref, axis=-1).mean() / iod)
    errors = np.array(errors)
    print(f"\nMESH_TO_68 vs dlib on {len(errors)} photos: mean error {100 * errors.mean():.2f} % of the inter-ocular "
          f"distance (worst photo {100 * errors.max():.1f} %)")
    assert len(errors) >= 20
    assert errors.mean() < 0.08


def test_dlib_face(media_dir):
    dl = DlibFace()
    img = read_image(media_dir / "face_photo" / "mit_obama.jpg")
    boxes = dl.detect(img)
    assert len(boxes) == 1
    l, t, r, b = boxes[0]
    assert 0 <= l < r <= img.shape[1] and 0 <= t < b <= img.shape[0]
    pts = dl.landmarks68(img, boxes[0])
    assert pts.shape == (68, 2) and pts.dtype == np.float32
    assert pts[36, 0] < pts[45, 0] and pts[8, 1] > pts[30, 1]  # eyes left to right, chin below the nose
    d1 = dl.descriptor(img)
    assert d1.shape == (128,) and d1.dtype == np.float32
    flipped = np.ascontiguousarray(img[:, ::-1])
    other = read_image(media_dir / "face_photo" / "mit_taylor.jpg")
    same = np.linalg.norm(d1 - dl.descriptor(flipped))
    diff = np.linalg.norm(d1 - dl.descriptor(other))
    assert same < 0.6 < diff
    assert dl.descriptor(np.zeros((80, 80, 3), np.uint8)) is None
