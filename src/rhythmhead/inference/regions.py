"""Real mouths and real blinks from a video reference: regions of the reference's own frames, warped into each output
frame at the output resolution (issue: sharp frames).

G synthesises the mouth box at its own resolution (128² for ``fast``), which leaves lips and teeth soft. A video
reference shows the person's mouth in many shapes, sharp and with their own teeth. So, per output frame:

* **Mouth.** Of up to ``candidates`` reference frames chosen to cover the reference's mouth shapes (farthest-point
  sampling of the frontal inner and outer lip landmarks), take the one whose frontal mouth is nearest the target's; fit
  the affine map that takes the target's posed mouth landmarks onto that frame's (least squares over the 20 lip points);
  warp the frame's mouth region through it; correct its mean colour to the frame it goes into (measured on the
  feathered band, so no colour step shows); and blend it in through a soft mask grown from the target's outer lip
  polygon (a blurred, dilated polygon: no box edge).
* **Eyes.** During a blink (the plan's ``closure`` > 0) the eye region comes, the same way, from the reference frame
  whose eye opening is nearest the target's (the reference's own blinks), aligned on the four eye corners by a
  similarity transform and blended with weight ``min(1, 2·closure)``; open-eyed frames keep the key frame's eyes, so
  the gaze stays steady.

A photo has one frame: nothing to choose, so its mouths come from the mouth synthesis network
(:class:`MouthSynthesis`, when the bundle has one; else they stay G's) and its blinks are G's eyelids. Frames are
``(S, S, 3)`` uint8 at the output size; landmarks are in 256²-crop pixels (scaled by ``S / 256`` here).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..face.track import CROP_SIZE as CROP
from ..geometry.mouth import fit_affine, fit_similarity, lip_mask, soft_polygon_mask, to_opencv
from ..geometry.pose import eye_openness

MOUTH = np.arange(48, 68)
OUTER_LIP = np.arange(48, 60)
EYE_CORNERS = np.array([36, 39, 42, 45])
EYES = (np.arange(36, 42), np.arange(42, 48))
# A reference without a frame whose eyes are this much more closed than its median shows no blink to borrow.
BLINK_EAR_RATIO = 0.6


def _shape(frontal: np.ndarray) -> np.ndarray:
    """Frontal mouth landmarks ``(…, 68, ≥2)`` → centred ``(…, 40)`` shape vectors."""
    m = np.asarray(frontal, np.float64)[..., MOUTH, :2]
    return (m - m.mean(-2, keepdims=True)).reshape(*m.shape[:-2], -1)


def spread_frames(features: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` rows of ``features (T, D)`` spread over their space (farthest-point sampling from the row
    nearest the mean); all rows when ``T ≤ k``. Sorted."""
    n = len(features)
    if n <= k:
        return np.arange(n)
    chosen = [int(np.linalg.norm(features - features.mean(0), axis=1).argmin())]
    dist = np.linalg.norm(features - features[chosen[0]], axis=1)
    for _ in range(k - 1):
        nxt = int(dist.argmax())
        if dist[nxt] <= 0:
            break
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(features - features[nxt], axis=1))
    return np.array(sorted(chosen), np.int64)


@dataclass
class RegionBank:
    """The reference frames a video lends its mouth and eyes from (crop-pixel landmarks; crops at any output size
    through ``crops``).

    Attributes:
        mouth_frames: ``(M,)`` reference frame indices covering the mouth shapes.
        blink_frames: ``(B,)`` reference frame indices whose eyes are closing or closed (may be empty).
        frontal: ``(T, 68, 3)`` the reference's frontal landmarks; landmarks: ``(T, 68, 3)`` its posed landmarks.
        open_ear: the reference's median eye aspect ratio.
    """

    mouth_frames: np.ndarray
    blink_frames: np.ndarray
    frontal: np.ndarray
    landmarks: np.ndarray
    open_ear: float

    @property
    def frames(self) -> np.ndarray:
        """Every frame index the bank needs crops of (sorted, unique)."""
        return np.unique(np.concatenate([self.mouth_frames, self.blink_frames]).astype(np.int64))


def region_bank(frontal: np.ndarray, landmarks: np.ndarray, candidates: int = 24) -> RegionBank | None:
    """The :class:`RegionBank` of a reference's ``frontal`` / posed ``landmarks (T, 68, 3)``; None for a single frame."""
    if len(frontal) < 2:
        return None
    mouth = spread_frames(_shape(frontal), candidates)
    ear = eye_openness(frontal)
    open_ear = float(np.median(ear))
    closing = np.where(ear < 0.85 * open_ear)[0]
    if not len(closing) or ear.min() > BLINK_EAR_RATIO * open_ear:
        closing = np.zeros(0, np.int64)
    elif len(closing) > candidates:  # keep the range of openings, from the most closed
        closing = closing[np.unique(np.linspace(0, len(closing) - 1, candidates).round().astype(int))]
    return RegionBank(mouth, closing.astype(np.int64), np.asarray(frontal, np.float32),
                      np.asarray(landmarks, np.float32), open_ear)


def _window(points: np.ndarray, pad: float, size: int) -> tuple[int, int, int, int]:
    lo, hi = points.min(0) - pad, points.max(0) + pad
    x0, y0 = (int(max(0, np.floor(v))) for v in lo)
    x1, y1 = (int(min(size, np.ceil(v))) for v in hi)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def _paste_region(frame: np.ndarray, source: np.ndarray, affine: np.ndarray, mask: np.ndarray, window,
                  weight: float = 1.0) -> None:
    """Blend ``source`` warped by ``affine`` (output px → source px, 2×3) into ``frame`` over ``window``, in place,
    with its mean colour matched to ``frame`` on the mask's feathered band."""
    import cv2

    x0, y0, x1, y1 = window
    m = affine.astype(np.float64).copy()
    m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)  # the window's top-left in the source
    patch = cv2.warpAffine(source, to_opencv(m), (x1 - x0, y1 - y0), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    base = frame[y0:y1, x0:x1].astype(np.float32)
    band = (mask > 0.05) & (mask < 0.6)
    if band.sum() >= 16:
        patch += np.clip((base[band] - patch[band]).mean(0), -25, 25)
    a = (weight * mask)[..., None]
    frame[y0:y1, x0:x1] = np.clip(a * patch + (1 - a) * base + 0.5, 0, 255).astype(np.uint8)


def _eye_ellipse(eye: np.ndarray) -> np.ndarray:
    """A polygon ``(N, 2)`` of the ellipse around one eye's 6 landmarks: through its corners' span (× 1.5) and half as
    tall, whatever the lids do (a closed eye's landmarks are a flat line)."""
    import cv2

    a, b = eye[0], eye[3]
    centre = (a + b) / 2
    width = float(np.linalg.norm(b - a))
    angle = float(np.degrees(np.arctan2(b[1] - a[1], b[0] - a[0])))
    pts = cv2.ellipse2Poly((int(round(centre[0] * 16)), int(round(centre[1] * 16))),
                           (int(round(0.75 * width * 16)), int(round(0.45 * width * 16))), int(round(angle)), 0, 360, 15)
    return pts.astype(np.float64) / 16


class RegionTransfer:
    """Puts the bank's mouths (and blinking eyes) into frames of one output size (see the module docstring).

    Args:
        bank: the reference's :class:`RegionBank`.
        crops: frame index → ``(S, S, 3)`` uint8 crop of that reference frame at the output size S.
        size: S.
    """

    def __init__(self, bank: RegionBank, crops: dict[int, np.ndarray], size: int):
        self.bank, self.crops, self.size = bank, crops, int(size)
        self.scale = self.size / CROP
        self._mouth_shapes = _shape(bank.frontal[bank.mouth_frames])
        self._blink_ear = eye_openness(bank.frontal[bank.blink_frames]) if len(bank.blink_frames) else None

    def mouth_source(self, frontal: np.ndarray) -> int:
        """The bank frame whose frontal mouth is nearest ``frontal (68, ≥2)``."""
        d = np.linalg.norm(self._mouth_shapes - _shape(frontal)[None], axis=1)
        return int(self.bank.mouth_frames[d.argmin()])

    def __call__(self, frame: np.ndarray, landmarks: np.ndarray, frontal: np.ndarray, closure: float = 0.0
                 ) -> np.ndarray:
        """``frame (S, S, 3)`` uint8 with the reference's mouth (and eyes while blinking) for the target ``landmarks``
        and ``frontal`` ``(68, ≥2)`` (crop px). Returns a new array."""
        out = np.array(frame, copy=True)
        s = self.scale
        tgt = np.asarray(landmarks, np.float64)[:, :2] * s
        # mouth
        k = self.mouth_source(frontal)
        src = self.bank.landmarks[k, :, :2].astype(np.float64) * s
        width = float(np.linalg.norm(tgt[54] - tgt[48]))
        lips = tgt[OUTER_LIP]
        win = _window(lips, 0.9 * width, self.size)
        mask = lip_mask(tgt - win[:2], (win[3] - win[1], win[2] - win[0]))
        _paste_region(out, self.crops[k], fit_affine(tgt[MOUTH], src[MOUTH]), mask, win)
        # eyes, while blinking
        if closure > 0.02 and self._blink_ear is not None:
            ear = float(eye_openness(frontal))
            j = int(self.bank.blink_frames[np.abs(self._blink_ear - ear).argmin()])
            src = self.bank.landmarks[j, :, :2].astype(np.float64) * s
            affine = fit_similarity(tgt[EYE_CORNERS], src[EYE_CORNERS])
            span = float(np.linalg.norm(tgt[45] - tgt[36]))
            for eye in EYES:
                pts = _eye_ellipse(tgt[eye])
                win = _window(pts, 0.2 * span, self.size)
                mask = soft_polygon_mask(pts - win[:2], (win[3] - win[1], win[2] - win[0]), blur=0.04 * span)
                _paste_region(out, self.crops[j], affine, mask, win, weight=min(1.0, 2.0 * float(closure)))
        return out


class MouthSynthesis:
    """A photo's mouths: the mouth synthesis network (:mod:`rhythmhead.models.mouth`) over each frame's mouth crop,
    from the reference's one mouth, blended into frames of one output size through the soft lip mask.

    The network reads what it was trained on (:func:`rhythmhead.geometry.mouth.mouth_inputs`: the reference's mouth
    aligned to the target's 256²-crop landmarks, in the network's mouth crop); the reference may be the key frame
    cropped at any resolution (the pipeline gives the full-resolution texture, up to 2 × the output side, so that the
    mouth crop is cut from the source's sharper pixels). The network's crop goes into the ``size``² frame through
    the same affine scaled by ``size / 256``.

    Args:
        net: a :class:`~rhythmhead.models.mouth.MouthNet` (eval mode).
        reference: ``(R, R, 3)`` uint8 the key frame's crop; reference_landmarks ``(68, ≥2)`` in its pixels.
        size: output frame side.
    """

    def __init__(self, net, reference: np.ndarray, reference_landmarks: np.ndarray, size: int):
        self.net, self.reference, self.size = net, np.ascontiguousarray(reference), int(size)
        self.reference_landmarks = np.asarray(reference_landmarks, np.float64)
        self.device = next(net.parameters()).device

    def __call__(self, frames: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """``frames (n, S, S, 3)`` uint8 with the synthesised mouths of the targets ``landmarks (n, 68, ≥2)`` (crop
        px); returns a new array."""
        import torch

        from ..geometry.mouth import mouth_inputs, paste_mouth
        from ..models.util import fast_precision

        s = self.net.image_size
        inputs = [mouth_inputs(self.reference, self.reference_landmarks, lm, s) for lm in landmarks]
        ref = torch.from_numpy(np.stack([i["reference"] for i in inputs])).permute(0, 3, 1, 2).float() / 127.5 - 1
        label = torch.from_numpy(np.stack([i["label"] for i in inputs]))[:, None]
        with torch.no_grad(), fast_precision(self.device):
            out = self.net(ref.to(self.device), label.to(self.device)).float()
        crops = ((out.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        scale = self.size / CROP
        result = np.empty_like(frames)
        for k, (frame, crop, inp) in enumerate(zip(frames, crops, inputs)):
            result[k] = paste_mouth(frame, crop, inp["mask"], inp["affine"] * scale)
        return result


def face_surface_weight(face: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Where an output frame takes the expression-following 3-D render's pixels: ``(n, s, s)`` float32 in [0, 1].

    ``face (n, s, s)`` bool is the render's face coverage (the mesh's own triangles, not the ring), eroded by 4 px
    and feathered (σ = 2 px) at 256² (at least 2 px and σ = 1.5 px at smaller sizes) so that the render's edge never
    shows; the mouth — which the
    key frame's closed mesh cannot open — is cut out through the very mask the reference's own mouths and the mouth
    network are blended with (the outer lips grown by 1.3, feathered), so that they, or G where there are neither,
    fill it. ``landmarks (n, 68, ≥2)`` in the same pixels as ``face``.
    """
    import cv2

    s = face.shape[-1] / CROP
    out = np.empty(face.shape, np.float32)
    k = max(5, int(round(9 * s)) | 1)
    kernel = np.ones((k, k), np.uint8)
    for i, (f, lm) in enumerate(zip(face, landmarks)):
        m = cv2.GaussianBlur(cv2.erode(f.astype(np.uint8), kernel).astype(np.float32), (0, 0), max(1.5, 2.0 * s))
        out[i] = m * (1.0 - lip_mask(lm, m.shape))
    return out


def head_weight(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Where G may synthesise: ``(n, size, size)`` float32 in [0, 1] around the head of ``landmarks (n, 68, ≥2)``
    (``size``² px) — the jaw line and the brows lifted by 0.9 × the nose-to-chin length (forehead and hair), grown by
    1.35 about the face centre, feathered (σ = 3 % of the side). Away from the head (background, torso) G's synthesis
    at 128² is blurry guesswork where the warped reference is right: :meth:`Generator.compose` keeps it out there."""
    out = np.empty((len(landmarks), size, size), np.float32)
    for i, lm in enumerate(landmarks):
        pts = np.asarray(lm, np.float64)[:, :2]
        lift = np.array([0.0, -0.9 * np.linalg.norm(pts[8] - pts[33])])
        poly = np.concatenate([pts[0:17], pts[26:16:-1] + lift])
        out[i] = soft_polygon_mask(poly, (size, size), blur=0.03 * size, grow=1.35)
    return out
