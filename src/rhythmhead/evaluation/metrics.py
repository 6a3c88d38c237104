"""Metric registry: small pure functions, plus streaming evaluators for metrics over a set.

Image conventions (both accepted by :func:`ssim` and :func:`psnr`, and scored on the same [0, 1] scale):
  - ``uint8`` arrays or tensors, ``(H, W, 3)`` or ``(N, H, W, 3)``, values 0..255 (frames as decoded);
  - floating-point torch tensors, ``(3, H, W)`` or ``(N, 3, H, W)``, values in [−1, 1] (network outputs).
Masks are ``(H, W)``, ``(N, H, W)`` or ``(N, 1, H, W)``, nonzero = scored; a batch's score is the mean of its images'.
Landmark metrics take ``(T, 68, 2|3)`` points in crop pixels (only x, y are used). Identity metrics take dlib's 128-d
face descriptors (:meth:`rhythmhead.face.dlib_face.DlibFace.descriptor`).

``METRICS`` maps a name to a pairwise function ``fn(pred, real) -> float``; ``StreamingMean`` / ``StreamingFrechet``
follow detectron2's ``reset / process / result`` so an evaluator can feed clips one at a time.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy import linalg
from skimage.metrics import structural_similarity

from ..audio.windows import SPEECH_PAD, SPEECH_REL, speech_frames  # noqa: F401  (one definition, shared with inference)
from ..errors import InputError

MOUTH_68 = slice(48, 68)  # iBUG 68-point mouth (outer 48–59, inner 60–67)


# -- images ----------------------------------------------------------------------------------------------------------
def as_float_images(images) -> np.ndarray:
    """uint8 ``(…,H,W,3)`` or a [−1,1] float tensor ``(…,3,H,W)`` → float64 ``(N,H,W,3)`` in [0, 1]."""
    if isinstance(images, torch.Tensor):
        if images.dtype == torch.uint8:
            images = images.cpu().numpy()
        elif images.is_floating_point():
            x = images.detach().cpu().double()
            x = x[None] if x.ndim == 3 else x
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"float image tensors must be (N,3,H,W) in [-1,1], got {tuple(images.shape)}")
            return ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
        else:
            raise ValueError(f"unsupported image tensor dtype {images.dtype}")
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8 (H,W,3), got {images.dtype} (pass floats as [-1,1] tensors)")
    images = images[None] if images.ndim == 3 else images
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"uint8 images must be (N,H,W,3), got {images.shape}")
    return images.astype(np.float64) / 255.0


def as_masks(mask, n: int, h: int, w: int) -> np.ndarray:
    """A mask in any accepted layout → bool ``(N,H,W)``."""
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if m.ndim == 4:
        m = m[:, 0]
    m = np.broadcast_to(m[None] if m.ndim == 2 else m, (n, h, w))
    return m != 0


def psnr(pred, real, mask=None) -> float:
    """Peak signal-to-noise ratio in dB on the [0,1] scale (= 0..255 for uint8), mean over images.

    ``math.inf`` for identical images (or an empty mask), so averages over sets should say how they treat it.
    """
    a, b = as_float_images(pred), as_float_images(real)
    _same_shape(a, b)
    sq = ((a - b) ** 2).mean(axis=-1)  # (N,H,W)
    if mask is not None:
        m = as_masks(mask, *sq.shape)
        mse = np.array([s[k].mean() if k.any() else 0.0 for s, k in zip(sq, m)])
    else:
        mse = sq.reshape(len(sq), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        values = np.where(mse > 0, -10.0 * np.log10(np.maximum(mse, 1e-300)), math.inf)
    return float(values.mean())


def ssim(pred, real, mask=None) -> float:
    """Structural similarity (Wang et al. 2004: Gaussian window σ=1.5, population covariance; scikit-image), mean over
    images; with a mask, the mean of the SSIM map inside the mask. 1.0 for identical images."""
    a, b = as_float_images(pred), as_float_images(real)
    _same_shape(a, b)
    masks = as_masks(mask, *a.shape[:3]) if mask is not None else None
    scores = []
    for i in range(len(a)):
        value, smap = structural_similarity(a[i], b[i], channel_axis=-1, data_range=1.0, gaussian_weights=True,
                                            sigma=1.5, use_sample_covariance=False, full=True)
        if masks is not None:
            keep = masks[i]
            value = float(smap.mean(axis=-1)[keep].mean()) if keep.any() else 1.0
        scores.append(float(value))
    return float(np.mean(scores))


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")


# -- landmarks and pose ----------------------------------------------------------------------------------------------
def lmd(pred, real, subset: str = "mouth") -> float:
    """Landmark distance: mean Euclidean distance in pixels between ``(T,68,2|3)`` point sets (x, y only), over the
    mouth points (48–67) or ``"all"`` 68, and over frames."""
    p, r = _np(pred)[..., :2], _np(real)[..., :2]
    if p.shape != r.shape or p.shape[-2] != 68:
        raise ValueError(f"lmd needs two (T,68,2) arrays, got {p.shape} and {r.shape}")
    if subset == "mouth":
        p, r = p[..., MOUTH_68, :], r[..., MOUTH_68, :]
    elif subset != "all":
        raise ValueError(f"lmd subset must be 'mouth' or 'all', got {subset!r}")
    return float(np.linalg.norm(p - r, axis=-1).mean())


# Mouth closures (no phone aligner): constants of :func:`closure_events`, stated in the Ψ report's settings.
CLOSURE_REL = 0.15  # closed: opening below min + 15 % of the clip's opening range (min … 95th percentile) …
CLOSURE_ABS_PX = 1.0  # … or below this absolute inner-lip gap (crop px), whichever is larger
OPEN_REL = 0.40  # "after being open": above min + 40 % of the range within the OPEN_LOOKBACK frames before
OPEN_LOOKBACK = 8
CLOSURE_TOL = 2  # a generated mouth closes "with" the real one within ±2 frames


def closure_threshold(opening) -> float:
    """Inner-lip opening below which a clip's mouth counts as closed (see ``CLOSURE_REL``, ``CLOSURE_ABS_PX``)."""
    o = np.asarray(opening, np.float64)
    lo, hi = float(o.min()), float(np.percentile(o, 95))
    return max(lo + CLOSURE_REL * (hi - lo), CLOSURE_ABS_PX)


def closure_events(opening, speech) -> np.ndarray:
    """Frames where a real mouth closes during speech: each run of frames below :func:`closure_threshold` that touches
    a speech frame and follows an open mouth (above min + ``OPEN_REL`` of the range within ``OPEN_LOOKBACK`` frames
    before it) gives one event, at the run's lowest opening. ``opening``: ``(T,)`` inner-lip gaps
    (:func:`rhythmhead.data.pca.open_rate`), ``speech``: ``(T,)`` bool (:func:`speech_frames`)."""
    o = np.asarray(opening, np.float64)
    sp = np.asarray(speech, bool)
    if o.shape != sp.shape or o.ndim != 1:
        raise ValueError(f"opening and speech must be (T,) alike, got {o.shape} and {sp.shape}")
    if len(o) < 3:
        return np.zeros(0, np.int64)
    thr = closure_threshold(o)
    lo, hi = float(o.min()), float(np.percentile(o, 95))
    open_thr = lo + OPEN_REL * (hi - lo)
    closed = np.concatenate([[False], o < thr, [False]])
    starts = np.flatnonzero(~closed[:-1] & closed[1:])
    ends = np.flatnonzero(closed[:-1] & ~closed[1:])
    events = [a + int(np.argmin(o[a:b])) for a, b in zip(starts, ends)
              if a > 0 and sp[a:b].any() and o[max(0, a - OPEN_LOOKBACK): a].max() > open_thr]
    return np.asarray(events, np.int64)


def closure_hits(generated_opening, events, threshold: float) -> np.ndarray:
    """``(n_events,)`` bool: whether the generated opening falls below ``threshold`` (the real clip's
    :func:`closure_threshold`) within ± ``CLOSURE_TOL`` frames of each event."""
    g = np.asarray(generated_opening, np.float64)
    return np.array([g[max(0, t - CLOSURE_TOL): t + CLOSURE_TOL + 1].min() < threshold for t in events], bool)


def pose_l1(pred, real, part: str = "all") -> float:
    """Mean absolute pose error between ``(T,6)`` poses (rotation vector in rad + translation in px).

    ``part``: ``"rotation"`` (degrees), ``"translation"`` (pixels) or ``"all"`` (the raw mean over the 6 channels).
    """
    p, r = _np(pred), _np(real)
    if p.shape != r.shape or p.shape[-1] != 6:
        raise ValueError(f"pose_l1 needs two (T,6) arrays, got {p.shape} and {r.shape}")
    err = np.abs(p - r)
    if part == "rotation":
        return float(np.degrees(err[..., :3]).mean())
    if part == "translation":
        return float(err[..., 3:].mean())
    if part == "all":
        return float(err.mean())
    raise ValueError(f"pose_l1 part must be 'rotation', 'translation' or 'all', got {part!r}")


# -- identity and distributions --------------------------------------------------------------------------------------
def csim(desc_a, desc_b) -> float:
    """Cosine similarity of face descriptors: ``(128,)`` pairs or ``(N,128)`` row-wise pairs (mean over rows)."""
    a, b = np.atleast_2d(_np(desc_a)), np.atleast_2d(_np(desc_b))
    if a.shape != b.shape:
        raise ValueError(f"descriptor shapes differ: {a.shape} vs {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(((a * b).sum(axis=1) / np.maximum(norms, 1e-12)).mean())


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to ``(N,D)`` and ``(M,D)`` features:
    ‖μa−μb‖² + tr(Σa + Σb − 2(ΣaΣb)^½). Fed dlib descriptors it is reported as **face-FD**; fed Inception pool features
    (:func:`inception_features`) it is FID. Needs N, M ≥ 2; small sets give a biased (larger) value."""
    a, b = _np(feats_a).astype(np.float64), _np(feats_b).astype(np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"frechet_distance needs (N>=2,D) and (M>=2,D) features, got {a.shape} and {b.shape}")
    return _frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def _frechet(mu_a, cov_a, mu_b, cov_b) -> float:
    # tr((ΣaΣb)^½) = Σ √λ over the eigenvalues λ of ΣaΣb, which are real and ≥ 0 for PSD Σa, Σb (rounding aside):
    # stable for the singular covariances of small sets, where a matrix square root is not.
    eig = linalg.eigvals(cov_a @ cov_b)
    trace_sqrt = float(np.sqrt(np.clip(eig.real, 0.0, None)).sum())
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)
    return max(value, 0.0)


def inception_features(images, weights: str | Path | None) -> np.ndarray:
    """Pool features for FID from a user-supplied TorchScript Inception-v3 (e.g. clean-fid's
    ``inception-2015-12-05.pt``, called as ``model(x, return_features=True)`` on ``(N,3,H,W)`` floats in 0..255).

    No weights are bundled or downloaded: without ``weights`` this is an InputError, and evaluations report face-FD.
    """
    if weights is None:
        raise InputError("FID needs Inception weights: pass --inception-weights FILE (a TorchScript Inception-v3)")
    path = Path(weights)
    if not path.is_file():
        raise InputError("Inception weights not found", path)
    try:
        with warnings.catch_warnings():  # torch.jit.load is deprecated in favour of torch.export, still the format used
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:  # torch raises RuntimeError/ValueError for files that are not TorchScript archives
        raise InputError(f"not a TorchScript model ({type(exc).__name__})", path) from None
    x = torch.from_numpy(as_float_images(images) * 255.0).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        feats = model(x, return_features=True)
    return feats.reshape(len(x), -1).numpy()


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# -- streaming evaluators (reset / process / result) -------------------------------------------------------------------
class StreamingMean:
    """Frame-weighted mean of a pairwise metric over many clips: ``process(pred, real, weight=len)``.

    Infinite values (PSNR of identical frames) are counted separately and left out of the mean."""

    def __init__(self, fn: Callable[..., float], **kwargs):
        self.fn, self.kwargs = fn, kwargs
        self.reset()

    def reset(self) -> None:
        self.total, self.weight, self.n_inf = 0.0, 0.0, 0

    def process(self, pred, real, weight: float | None = None, **kwargs) -> float:
        value = self.fn(pred, real, **{**self.kwargs, **kwargs})
        if math.isinf(value):
            self.n_inf += 1
            return value
        w = float(len(pred) if weight is None else weight)
        self.total += value * w
        self.weight += w
        return value

    def result(self) -> float:
        return self.total / self.weight if self.weight else (math.inf if self.n_inf else math.nan)


class StreamingFrechet:
    """Fréchet distance over feature sets fed in pieces: ``process(feats_a, feats_b)``; ``result()``.

    Accumulates first and second moments (O(D²) memory), so the sets never need to be held at once."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.moments: list[list] = [[0, 0.0, 0.0], [0, 0.0, 0.0]]  # count, sum, sum of outer products

    def process(self, feats_a=None, feats_b=None) -> None:
        for slot, feats in zip(self.moments, (feats_a, feats_b)):
            if feats is None or len(feats) == 0:
                continue
            f = np.atleast_2d(_np(feats)).astype(np.float64)
            slot[0] += len(f)
            slot[1] = slot[1] + f.sum(0)
            slot[2] = slot[2] + f.T @ f

    def result(self) -> float:
        (na, sa, qa), (nb, sb, qb) = self.moments
        if na < 2 or nb < 2:
            return math.nan
        mu_a, mu_b = sa / na, sb / nb
        cov_a = (qa - na * np.outer(mu_a, mu_a)) / (na - 1)
        cov_b = (qb - nb * np.outer(mu_b, mu_b)) / (nb - 1)
        return _frechet(mu_a, cov_a, mu_b, cov_b)


# -- sharpness -------------------------------------------------------------------------------------------------------
def region_masks(landmarks, size, region: str = "face") -> np.ndarray:
    """bool ``(N, H, W)`` masks (``size`` = H = W, or ``(H, W)``) from ``(N, 68, ≥2)`` landmarks in the images' pixels: ``"face"`` = the convex
    hull of the jaw and brows (0–26), ``"mouth"`` = the mouth box (48–67) grown by 15 % per side. A frame whose
    landmarks are not finite gets an empty mask."""
    import cv2

    lm = np.asarray(landmarks, np.float64)[..., :2]
    h, w = (size, size) if np.isscalar(size) else size
    out = np.zeros((len(lm), h, w), np.uint8)
    for i, pts in enumerate(lm):
        if not np.isfinite(pts).all():
            continue
        if region == "face":
            hull = cv2.convexHull(np.round(pts[:27]).astype(np.int32))
            cv2.fillConvexPoly(out[i], hull, 1)
        elif region == "mouth":
            m = pts[MOUTH_68]
            lo, hi = m.min(0), m.max(0)
            grow = 0.15 * (hi - lo)
            (x0, y0), (x1, y1) = np.floor(lo - grow).astype(int), np.ceil(hi + grow).astype(int)
            out[i, max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = 1
        else:
            raise ValueError(f"region must be 'face' or 'mouth', got {region!r}")
    return out.astype(bool)


def laplacian_variance(images, masks=None) -> np.ndarray:
    """Per-image variance of the Laplacian (3×3, on the grey image at 0..255) over ``masks`` (bool ``(N, H, W)``; all
    pixels when None) → ``(N,)`` float64, NaN where a mask is empty. The usual focus measure: blur lowers it."""
    import cv2

    x = (as_float_images(images) * 255.0).astype(np.float32)
    out = np.full(len(x), np.nan)
    for i, im in enumerate(x):
        lap = cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_32F)
        vals = lap if masks is None else lap[masks[i]]
        if vals.size > 1:
            out[i] = float(np.var(vals, dtype=np.float64))
    return out


def sharpness_ratio(pred, pred_landmarks, real, real_landmarks, region: str = "face") -> float:
    """Face (or mouth) detail kept: mean variance of the Laplacian over the ``region`` of the ``pred`` frames divided
    by the same over the ``real`` frames (each with its own landmarks, ``(N, 68, ≥2)`` in its pixels; ``real`` may be
    a single reference frame for cross-identity). ≈ 1 for real frames, < 1 when the output is softer than the input."""
    hw = lambda x: tuple(x.shape[-2:] if isinstance(x, torch.Tensor) and x.is_floating_point()  # noqa: E731
                         else x.shape[-3:-1])
    va = laplacian_variance(pred, region_masks(pred_landmarks, hw(pred), region))
    vb = laplacian_variance(real, region_masks(real_landmarks, hw(real), region))
    if not np.isfinite(va).any() or not np.isfinite(vb).any() or np.nanmean(vb) <= 0:
        return math.nan
    return float(np.nanmean(va) / np.nanmean(vb))


def _motion_stats():
    from . import motion_stats

    return motion_stats


def _windows(x) -> list:
    """One ``(T,6)`` sequence or a list of them → a list of windows."""
    return [x] if getattr(x, "ndim", 0) == 2 else list(x)


def closure_rate(generated_opening, real_opening, speech) -> float:
    """Fraction of the real clip's :func:`closure_events` that the generated mouth closes with (NaN: no event)."""
    events = closure_events(real_opening, speech)
    if not len(events):
        return math.nan
    return float(closure_hits(generated_opening, events, closure_threshold(real_opening)).mean())


# name -> fn(pred, real) -> float. One plain table; evaluators pick columns from it by name.
METRICS: dict[str, Callable[..., float]] = {
    "ssim": ssim,
    "psnr": psnr,
    "lmd_mouth": lambda pred, real: lmd(pred, real, "mouth"),
    "lmd_all": lambda pred, real: lmd(pred, real, "all"),
    "csim": csim,
    "face_fd": frechet_distance,
    "pose_l1_rot_deg": lambda pred, real: pose_l1(pred, real, "rotation"),
    "pose_l1_trans_px": lambda pred, real: pose_l1(pred, real, "translation"),
    # pose sequences (T,6), or lists of paired windows (rhythmhead.evaluation.motion_stats)
    "std_ratio_rot": lambda pred, real: _motion_stats().std_ratio(_windows(pred), _windows(real))[0],
    "std_ratio_trans": lambda pred, real: _motion_stats().std_ratio(_windows(pred), _windows(real))[1],
    "dP_ratio_rot": lambda pred, real: _motion_stats().change_ratio(_windows(pred), _windows(real))[0],
    "dP_ratio_trans": lambda pred, real: _motion_stats().change_ratio(_windows(pred), _windows(real))[1],
    "pose_fd": lambda pred, real: _motion_stats().pose_frechet(_windows(pred), _windows(real)),
    # inner-lip openings (T,) of generated and real frontal landmarks, with the real clip's speech mask
    "closure_rate": lambda pred, real, speech: closure_rate(pred, real, speech),
    # (images, landmarks) pairs
    "sharp_face": lambda pred, real: sharpness_ratio(pred[0], pred[1], real[0], real[1], "face"),
    "sharp_mouth": lambda pred, real: sharpness_ratio(pred[0], pred[1], real[0], real[1], "mouth"),
}
