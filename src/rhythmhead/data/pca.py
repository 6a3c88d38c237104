"""The expression PCA of Ψ (REFERENCE.md §3): frontal 2-D landmarks, identity removed, → 20 coefficients.

Each clip's identity is removed before the PCA: the frontal landmarks of the clip's closed-mouth frame (the frame with
the smallest "open rate", the mean distance of the inner-lip pairs (61,67), (62,66), (63,65)) minus a template face give
the clip's ``identity_offset (68,3)``; it is subtracted from every frame of the clip before the PCA and added back after
the inverse PCA. The template is a canonical closed-mouth frontal face: by default the mean of the training clips'
closed-mouth frames (so the fit needs nothing but the store); any ``(68,3)`` face can be passed instead.

The PCA models x,y only (136-D, as the paper); :meth:`ExpressionPCA.decode` takes z from the template plus the offset.
Landmarks are in the pixel units of the 256² crop (docs/ARCHITECTURE.md), so a squared code distance is a squared
landmark distance in pixels² within the subspace (the components are orthonormal).

All methods accept numpy arrays or torch tensors and return the same kind (tensors keep their dtype and device).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError

N_POINTS = 68
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
_KEYS = ("mean", "components", "template", "explained_variance")


def _like(array: np.ndarray, ref):
    """``array`` as the same kind as ``ref`` (numpy → numpy; torch → tensor on ref's device/dtype)."""
    if isinstance(ref, np.ndarray):
        return array.astype(ref.dtype if np.issubdtype(ref.dtype, np.floating) else np.float32, copy=False)
    import torch

    if isinstance(ref, torch.Tensor):
        return torch.as_tensor(array, dtype=ref.dtype if ref.is_floating_point() else torch.float32, device=ref.device)
    return array


def open_rate(frontal) -> np.ndarray:
    """Mouth opening per frame: mean 2-D distance of the inner-lip pairs.

    Args:
        frontal: ``(…, 68, 2|3)`` landmarks (numpy or torch).

    Returns:
        ``(…)`` in the landmarks' units.
    """
    upper = [a for a, _ in INNER_LIP_PAIRS]
    lower = [b for _, b in INNER_LIP_PAIRS]
    d = frontal[..., upper, :2] - frontal[..., lower, :2]
    return ((d ** 2).sum(-1) ** 0.5).mean(-1)


def closed_mouth_frame(frontal) -> int:
    """Index of the frame with the most closed mouth (lowest :func:`open_rate`) of a clip ``(T, 68, 2|3)``."""
    rate = open_rate(frontal)
    return int(rate.argmin())


@dataclass(frozen=True)
class ExpressionPCA:
    """Fitted expression PCA.

    Attributes:
        mean: ``(136,)`` mean of the identity-removed frontal x,y landmarks (flattened x0,y0,x1,y1,…).
        components: ``(n, 136)`` orthonormal principal directions, by decreasing variance.
        template: ``(68, 3)`` canonical closed-mouth frontal face the identity offsets are measured from.
        explained_variance: ``(n,)`` variance (pixels²) along each component.
    """

    mean: np.ndarray
    components: np.ndarray
    template: np.ndarray
    explained_variance: np.ndarray

    @property
    def neutral_code(self) -> np.ndarray:
        """``(n,)`` the template's code: decoded with a clip's identity offset, that clip's own closed-mouth frame."""
        return np.asarray(self.encode(self.template, np.zeros_like(self.template)), np.float32)

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    # -- fitting ------------------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, frontal_landmarks_per_clip: Sequence[np.ndarray], n_components: int = 20,
            template: np.ndarray | None = None) -> "ExpressionPCA":
        """Fit on the frontal landmarks of several clips.

        Args:
            frontal_landmarks_per_clip: one ``(T_i, 68, 3)`` array per clip (frontalised landmarks, crop pixels).
            n_components: number of components kept (≤ 136 and ≤ the number of frames).
            template: ``(68, 3)`` canonical face; default the mean of the clips' closed-mouth frames.

        Returns:
            the fitted :class:`ExpressionPCA`.
        """
        clips = [np.asarray(c, dtype=np.float64) for c in frontal_landmarks_per_clip]
        if not clips:
            raise ValueError("no clips to fit the expression PCA on")
        for c in clips:
            if c.ndim != 3 or c.shape[1:] != (N_POINTS, 3):
                raise ValueError(f"frontal landmarks must be (T, 68, 3), got {c.shape}")
        closed = np.stack([c[closed_mouth_frame(c)] for c in clips])
        template = closed.mean(0) if template is None else np.asarray(template, dtype=np.float64)
        data = np.concatenate([(c - (k - template))[..., :2].reshape(len(c), -1) for c, k in zip(clips, closed)])
        if not 1 <= n_components <= min(data.shape):
            raise ValueError(f"n_components must be in 1..{min(data.shape)}, got {n_components}")
        mean = data.mean(0)
        # SVD of the centred data: rows of vt are the principal directions; s²/(N−1) the variances.
        _, s, vt = np.linalg.svd(data - mean, full_matrices=False)
        var = s ** 2 / max(len(data) - 1, 1)
        return cls(mean=mean.astype(np.float32), components=vt[:n_components].astype(np.float32),
                   template=template.astype(np.float32), explained_variance=var[:n_components].astype(np.float32))

    # -- identity -----------------------------------------------------------------------------------------------------
    def identity_offset(self, frontal_clip):
        """``(68, 3)`` offset of a clip: its closed-mouth frontal frame minus the template.

        Args:
            frontal_clip: ``(T, 68, 3)`` frontal landmarks of the clip (or of its reference part).
        """
        return frontal_clip[closed_mouth_frame(frontal_clip)] - _like(self.template, frontal_clip)

    def reference_code(self, frontal_clip, keep_identity: bool = True):
        """Ψ's reference input ``(n,)``.

        With ``keep_identity`` (the paper): the code of the clip's closed-mouth frame encoded with a zero offset, so it
        carries the speaker's face shape. Without: the mean code of the clip's frames with its identity offset removed,
        i.e. how the speaker's face moves on average away from its closed mouth (the template's code for a single frame).

        Args:
            frontal_clip: ``(T, 68, 3)`` frontal landmarks of the reference clip.
        """
        if keep_identity:
            closed = frontal_clip[closed_mouth_frame(frontal_clip)]
            return self.encode(closed, closed * 0)
        return self.encode(frontal_clip, self.identity_offset(frontal_clip)).mean(0)

    # -- codes --------------------------------------------------------------------------------------------------------
    def encode(self, frontal, identity_offset):
        """Frontal landmarks → PCA codes.

        Args:
            frontal: ``(…, 68, 2|3)`` frontal landmarks.
            identity_offset: ``(68, 2|3)`` (or broadcastable ``(…, 68, 2|3)``) offset of the clip; zeros keep the
                identity in the code.

        Returns:
            ``(…, n)`` codes.
        """
        flat = (frontal[..., :2] - identity_offset[..., :2]).reshape(*frontal.shape[:-2], 2 * N_POINTS)
        return (flat - _like(self.mean, frontal)) @ _like(self.components, frontal).T

    def decode(self, codes, identity_offset):
        """PCA codes → frontal 3-D landmarks.

        Args:
            codes: ``(…, n)``.
            identity_offset: ``(68, 3)`` (or broadcastable) offset of the clip.

        Returns:
            ``(…, 68, 3)``: x,y from the inverse PCA plus the offset, z from the template plus the offset.
        """
        xy = codes @ _like(self.components, codes) + _like(self.mean, codes)
        xy = xy.reshape(*codes.shape[:-1], N_POINTS, 2)
        z = _like(self.template, codes)[:, 2:]
        z = z.expand(*xy.shape[:-1], 1) if not isinstance(xy, np.ndarray) else np.broadcast_to(z, (*xy.shape[:-1], 1))
        if isinstance(xy, np.ndarray):
            out = np.concatenate([xy, z], axis=-1)
        else:
            import torch

            out = torch.cat([xy, z], dim=-1)
        return out + identity_offset

    # -- files --------------------------------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The four arrays by name (as stored in files and checkpoint extras)."""
        return {k: np.ascontiguousarray(getattr(self, k), dtype=np.float32) for k in _KEYS}

    @classmethod
    def from_arrays(cls, arrays: dict, where: object = "expression PCA") -> "ExpressionPCA":
        """Inverse of :meth:`arrays` (numpy arrays or tensors); InputError naming ``where`` if anything is off."""
        missing = [k for k in _KEYS if k not in arrays]
        if missing:
            raise InputError(f"lacks the PCA array(s) {', '.join(missing)}", where)
        a = {k: np.asarray(arrays[k].detach().cpu() if hasattr(arrays[k], "detach") else arrays[k], dtype=np.float32)
             for k in _KEYS}
        n = a["components"].shape[0] if a["components"].ndim == 2 else -1
        ok = (a["mean"].shape == (2 * N_POINTS,) and a["components"].shape == (n, 2 * N_POINTS) and n >= 1
              and a["template"].shape == (N_POINTS, 3) and a["explained_variance"].shape == (n,))
        if not ok:
            shapes = ", ".join(f"{k} {a[k].shape}" for k in _KEYS)
            raise InputError(f"PCA arrays have wrong shapes ({shapes})", where)
        if not all(np.isfinite(v).all() for v in a.values()):
            raise InputError("PCA arrays hold NaN or inf", where)
        return cls(**a)

    def save(self, path: str | Path) -> Path:
        """Write a safetensors file atomically."""
        from safetensors.numpy import save_file

        from ..media.io import atomic_path

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(self.arrays(), str(tmp), metadata={"format": "rhythmhead-expression-pca"})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ExpressionPCA":
        """Read a file written by :meth:`save` (InputError naming the file when missing, corrupt or wrong)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = Path(path)
        if not path.is_file():
            raise InputError("PCA file not found (make one with `rhythmhead fit-pca STORE --out FILE`)", path)
        try:
            arrays = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"not a readable safetensors PCA file ({str(exc).splitlines()[0] if str(exc) else exc})",
                             path) from None
        return cls.from_arrays(arrays, path)
