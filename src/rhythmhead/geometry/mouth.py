"""The mouth crop: where the mouth synthesis network looks, and what it is given — one function for training and
inference, so both feed it the same tensors.

For target landmarks ``(68, ≥2)`` in the pixels of some image, the **mouth crop** is the square of side
``MOUTH_CROP_SCALE`` × the mouth width (corners 48–54), centred on the mouth's landmarks, resampled to ``size``² (128
for the bundled network: the mouth is then about 50 px wide, twice what it is in a 128² G frame). Its 2×3 affine maps
crop pixels to image pixels (``crop_to_image``).

:func:`mouth_inputs` gives the network:

* ``reference`` ``(size, size, 3)`` uint8 — the reference frame's mouth in the target's mouth crop, aligned by the
  least-squares similarity (no stretch) between the two mouths' corners and upper lip (48, 54, 50–52, 61–63): the
  reference's own lips, skin and colours where the target's upper lip is, left for the network to open;
* ``label`` ``(size, size)`` float32 in [−1, 1] — the target's outer and inner lip contours, drawn anti-aliased;
* ``mask`` ``(size, size)`` float32 in [0, 1] — where the synthesised mouth is blended in: the outer lip polygon grown
  by 1.3 about its centre, feathered (:func:`lip_mask`, as the reference-mouth transfer's);
* ``affine`` — crop → image pixels of the target.

Coordinates follow the pixel-centre convention of :mod:`rhythmhead.geometry.raster` (OpenCV's for ``warpAffine``).
"""
from __future__ import annotations

import cv2
import numpy as np

MOUTH_CROP_SCALE = 2.2  # crop side / mouth width
MOUTH = np.arange(48, 68)
OUTER_LIP = np.arange(48, 60)
INNER_LIP = np.arange(60, 68)
ALIGN = np.array([48, 54, 50, 51, 52, 61, 62, 63])  # corners and upper lip: what stays put when a mouth opens


def fit_affine(dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Least-squares 2×3 affine taking points ``dst (N, 2)`` onto ``src (N, 2)``."""
    a = np.concatenate([dst, np.ones((len(dst), 1))], 1)
    sol, *_ = np.linalg.lstsq(a, src, rcond=None)
    return sol.T


def fit_similarity(dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Least-squares 2×3 similarity (rotation, uniform scale, translation) taking ``dst (N, 2)`` onto ``src (N, 2)``."""
    dc, sc = dst.mean(0), src.mean(0)
    zd = (dst - dc) @ [1, 1j]
    zs = (src - sc) @ [1, 1j]
    q = (np.conj(zd) @ zs) / max(float(np.real(np.conj(zd) @ zd)), 1e-9)
    rot = np.array([[q.real, -q.imag], [q.imag, q.real]])
    return np.concatenate([rot, (sc - rot @ dc)[:, None]], 1)


def to_opencv(affine: np.ndarray) -> np.ndarray:
    """A 2×3 affine between continuous pixel coordinates (pixel ``j``'s centre at ``j + 0.5``) as OpenCV's (centre at
    ``j``): what ``cv2.warpAffine`` and the drawing functions expect."""
    a = np.asarray(affine, np.float64)
    return np.concatenate([a[:, :2], (a[:, 2] + a[:, :2] @ [0.5, 0.5] - 0.5)[:, None]], 1)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer ∘ inner`` of two 2×3 affines (``inner`` applied first)."""
    o = np.vstack([outer, [0, 0, 1]])
    i = np.vstack([inner, [0, 0, 1]])
    return (o @ i)[:2]


def crop_to_image(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The 2×3 affine from the ``size``² mouth-crop pixels of ``landmarks (68, ≥2)`` to their image's pixels."""
    pts = np.asarray(landmarks, np.float64)[:, :2]
    width = max(float(np.linalg.norm(pts[54] - pts[48])), 1.0)
    side = MOUTH_CROP_SCALE * width
    centre = pts[MOUTH].mean(0)
    s = side / size
    return np.array([[s, 0.0, centre[0] - side / 2], [0.0, s, centre[1] - side / 2]])


def soft_polygon_mask(points: np.ndarray, shape: tuple[int, int], blur: float, grow: float = 1.0) -> np.ndarray:
    """``(H, W)`` float32 soft mask of the polygon ``points (N, 2)`` (continuous pixels) grown by ``grow`` about its
    centre: filled, Gaussian-blurred with σ = ``blur`` px, then doubled and clipped, so that it is exactly 1 inside
    and falls smoothly to 0 over about 1.5 σ outside the (grown) polygon."""
    c = points.mean(0)
    poly = c + grow * (points - c) - 0.5  # OpenCV draws with pixel centres at integers
    mask = np.zeros(shape, np.float32)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
    if blur > 0:
        k = int(2 * round(3 * blur) + 1)
        mask = np.clip(2.0 * cv2.GaussianBlur(mask, (k, k), blur), 0.0, 1.0)
    return mask


def lip_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The soft mask a mouth is blended in with — the outer-lip polygon of ``landmarks (68, ≥2)`` (continuous pixels of
    an image of ``shape``) grown by 1.3, feathered over 0.12 mouth widths. One definition for the mouth network's
    crops, a video's lent mouths and the hole the face render leaves for them."""
    pts = np.asarray(landmarks, np.float64)[:, :2]
    width = float(np.linalg.norm(pts[54] - pts[48]))
    return soft_polygon_mask(pts[OUTER_LIP], shape, blur=0.12 * width, grow=1.3)


def mouth_inputs(reference: np.ndarray, reference_landmarks: np.ndarray, target_landmarks: np.ndarray,
                 size: int = 128) -> dict[str, np.ndarray]:
    """What the mouth network reads for one target (see the module docstring).

    Args:
        reference: ``(H, W, 3)`` uint8 reference frame (the photo's crop, or any frame of the person).
        reference_landmarks: ``(68, ≥2)`` its landmarks (its pixels).
        target_landmarks: ``(68, ≥2)`` the target's landmarks, in the pixels of the image the mouth goes into.
        size: the crop side.
    """
    tgt = np.asarray(target_landmarks, np.float64)[:, :2]
    ref = np.asarray(reference_landmarks, np.float64)[:, :2]
    to_image = crop_to_image(tgt, size)
    # crop px → target image px → (the similarity between the mouths) → reference image px
    to_ref = compose_affine(fit_similarity(tgt[ALIGN], ref[ALIGN]), to_image)
    ref_crop = cv2.warpAffine(np.ascontiguousarray(reference), to_opencv(to_ref), (size, size),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    inv = cv2.invertAffineTransform(to_image)
    crop_pts = tgt @ inv[:, :2].T + inv[:, 2]
    label = np.zeros((size, size), np.float32)
    for part in (OUTER_LIP, INNER_LIP):
        cv2.polylines(label, [np.round((crop_pts[part] - 0.5) * 16).astype(np.int32)], True, 1.0, 1, cv2.LINE_AA,
                      shift=4)
    mask = lip_mask(crop_pts, (size, size))
    return {"reference": ref_crop, "label": label * 2 - 1, "mask": mask, "affine": to_image}


def paste_mouth(frame: np.ndarray, crop: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Blend a synthesised mouth ``crop (s, s, 3)`` uint8 with its ``mask (s, s)`` into ``frame (H, W, 3)`` uint8
    through ``affine`` (crop → frame pixels, from :func:`mouth_inputs`, scaled to the frame). Returns a new frame."""
    h, w = frame.shape[:2]
    s = crop.shape[0]
    corners = np.array([[0, 0], [s, 0], [0, s], [s, s]], np.float64) @ affine[:, :2].T + affine[:, 2]
    x0, y0 = np.floor(corners.min(0)).astype(int).clip(0, [w, h])
    x1, y1 = np.ceil(corners.max(0)).astype(int).clip(0, [w, h])
    out = np.array(frame, copy=True)
    if x1 <= x0 or y1 <= y0:
        return out
    m = affine.copy()
    m[:, 2] -= [x0, y0]
    inv = to_opencv(cv2.invertAffineTransform(m))
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    patch = cv2.warpAffine(np.ascontiguousarray(crop), inv, (x1 - x0, y1 - y0),
                           flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    patch = patch.astype(np.float32)
    alpha = cv2.warpAffine(np.ascontiguousarray(mask), inv, (x1 - x0, y1 - y0), flags=flags,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)[..., None]
    base = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(alpha * patch + (1 - alpha) * base + 0.5, 0, 255).astype(np.uint8)
    return out
