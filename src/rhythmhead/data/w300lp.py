"""300W-LP loader: images + 3DMM fits → dense 3-D faces in image pixels, for training the unprojection network.

300W-LP (Zhu et al., CVPR 2016; the data PRNet trains on) is **not** shipped and cannot be downloaded by this package: the
user supplies the dataset folder and the Basel Face Model it was fitted with. Layout expected under ``ROOT``::

    ROOT/<subset>/<name>.jpg + <name>.mat      subsets AFW, HELEN, IBUG, LFPW and their *_Flip twins

Each ``.mat`` holds the fit: ``Pose_Para`` (1×7: pitch, yaw, roll in radians, tx, ty, tz, scale), ``Shape_Para`` (199×1),
``Exp_Para`` (29×1) and, in most files, ``pt2d`` (2×68). The BFM file (``--bfm``) is the one of the face3d / PRNet
tool-chain (``BFM.mat``, a struct ``model`` or top-level variables): ``shapeMU`` (3N×1), ``shapePC`` (3N×199),
``expPC`` (3N×29), ``tri`` (3×M or M×3, 1-based) and ``kpt_ind`` (68, 1-based); vertex coordinates are interleaved
x, y, z per vertex (MATLAB column order).

Reconstruction (3DDFA's convention, as PRNet's ``generate_posmap_300WLP``): ``V = shapeMU + shapePC·α + expPC·β``
reshaped to (N, 3); ``R = Rx(pitch)·Ry(yaw)·Rz(roll)`` with 3DDFA's sign convention; ``V' = s·V·Rᵀ + t``; image
coordinates flip y (``y_img = H − 1 − y``) and z is negated so that larger z is farther from the camera (ARCHITECTURE.md).

The network in this package regresses position maps in MediaPipe's 468-vertex UV layout, which the BFM topology does not
share. :class:`W300LPFaces` therefore yields BFM dense vertices, and — given a user-supplied ``correspondence`` (an int
array ``(468,)`` of BFM vertex indices for the MediaPipe vertices, e.g. made once by nearest-point registration of the
two mean shapes) — the 468 MediaPipe-topology vertices that the unprojection task's position maps are built from.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

SUBSETS = ("AFW", "HELEN", "IBUG", "LFPW", "AFW_Flip", "HELEN_Flip", "IBUG_Flip", "LFPW_Flip")


@dataclass(frozen=True)
class BFM:
    """The Basel Face Model arrays needed to rebuild 300W-LP faces (0-based indices)."""

    shape_mu: np.ndarray  # (3N,)
    shape_pc: np.ndarray  # (3N, n_shape)
    exp_pc: np.ndarray  # (3N, n_exp)
    triangles: np.ndarray  # (M, 3) int
    kpt_ind: np.ndarray  # (68,) int

    @property
    def n_vertices(self) -> int:
        return self.shape_mu.shape[0] // 3


@dataclass(frozen=True)
class Fit:
    """One 300W-LP 3DMM fit."""

    pose: np.ndarray  # (7,) pitch, yaw, roll (rad), tx, ty, tz, scale
    shape: np.ndarray  # (n_shape,)
    expression: np.ndarray  # (n_exp,)
    pt2d: np.ndarray | None  # (68, 2) annotated 2-D landmarks, or None


def _loadmat(path: Path) -> dict:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    if not path.is_file():
        raise InputError("file not found", path)
    try:
        return loadmat(str(path))
    except (MatReadError, ValueError, OSError, NotImplementedError, TypeError) as exc:
        raise InputError(f"not a readable MATLAB .mat file ({str(exc).splitlines()[0][:80]})", path) from None


def _field(data: dict, name: str, path: Path) -> np.ndarray:
    if name not in data:
        raise InputError(f"lacks the '{name}' field", path)
    return np.asarray(data[name])


def load_bfm(path: str | Path) -> BFM:
    """Read a face3d/PRNet-style ``BFM.mat`` (variables at top level or inside a ``model`` struct)."""
    path = Path(path)
    data = _loadmat(path)
    if "model" in data and "shapeMU" not in data:
        model = data["model"]
        model = model[0, 0] if model.dtype.names else model
        data = {k: model[k] for k in model.dtype.names}
    shape_mu = _field(data, "shapeMU", path).astype(np.float64).reshape(-1)
    shape_pc = _field(data, "shapePC", path).astype(np.float64)
    exp_pc = _field(data, "expPC", path).astype(np.float64)
    tri = _field(data, "tri", path).astype(np.int64)
    kpt = _field(data, "kpt_ind", path).astype(np.int64).reshape(-1)
    if shape_mu.size % 3 or shape_pc.shape[0] != shape_mu.size or exp_pc.shape[0] != shape_mu.size:
        raise InputError(f"inconsistent BFM sizes: shapeMU {shape_mu.shape}, shapePC {shape_pc.shape}, "
                         f"expPC {exp_pc.shape}", path)
    if "expMU" in data:  # some BFM variants keep a separate mean expression
        shape_mu = shape_mu + np.asarray(data["expMU"], np.float64).reshape(-1)
    tri = tri.T if tri.shape[0] == 3 and tri.shape[1] != 3 else tri
    n = shape_mu.size // 3
    if tri.min() < 1 or tri.max() > n or kpt.min() < 1 or kpt.max() > n or kpt.size != 68:
        raise InputError("BFM 'tri' / 'kpt_ind' must be 1-based vertex indices (68 key points)", path)
    return BFM(shape_mu, shape_pc, exp_pc, tri - 1, kpt - 1)


def read_fit(path: str | Path) -> Fit:
    """Read one 300W-LP ``.mat`` fit (InputError naming the file if a field is missing or has the wrong size)."""
    path = Path(path)
    data = _loadmat(path)
    pose = _field(data, "Pose_Para", path).astype(np.float64).reshape(-1)
    if pose.size != 7:
        raise InputError(f"Pose_Para has {pose.size} values, expected 7", path)
    shape = _field(data, "Shape_Para", path).astype(np.float64).reshape(-1)
    expression = _field(data, "Exp_Para", path).astype(np.float64).reshape(-1)
    pt2d = None
    if "pt2d" in data:
        pts = np.asarray(data["pt2d"], np.float64)
        pt2d = pts.T if pts.shape == (2, 68) else pts.reshape(68, 2)
    return Fit(pose, shape, expression, pt2d)


def rotation_3ddfa(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """3DDFA's rotation ``Rx·Ry·Rz`` (angles in radians, its sign convention)."""
    cx, sx, cy, sy, cz, sz = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, sx], [0, -sx, cx]])
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rz = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def reconstruct(bfm: BFM, fit: Fit, image_height: int) -> np.ndarray:
    """Dense face ``(N, 3)`` float32 in image pixels: x right, y down, larger z farther (see the module docstring)."""
    if fit.shape.size > bfm.shape_pc.shape[1] or fit.expression.size > bfm.exp_pc.shape[1]:
        raise InputError(f"fit has {fit.shape.size} shape / {fit.expression.size} expression parameters, the BFM only "
                         f"{bfm.shape_pc.shape[1]} / {bfm.exp_pc.shape[1]}")
    flat = (bfm.shape_mu + bfm.shape_pc[:, :fit.shape.size] @ fit.shape
            + bfm.exp_pc[:, :fit.expression.size] @ fit.expression)
    verts = flat.reshape(-1, 3)  # interleaved x, y, z per vertex (MATLAB column order of a 3×N array)
    pitch, yaw, roll, tx, ty, tz, scale = fit.pose
    posed = scale * verts @ rotation_3ddfa(pitch, yaw, roll).T + np.array([tx, ty, tz])
    out = np.stack([posed[:, 0], image_height - 1 - posed[:, 1], -posed[:, 2]], 1)
    return out.astype(np.float32)


def list_samples(root: str | Path) -> list[tuple[Path, Path]]:
    """``(image, mat)`` pairs under ``root`` (every subset folder; the ``landmarks`` folder is skipped), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("300W-LP folder not found", root)
    pairs = []
    for mat in sorted(root.rglob("*.mat")):
        if "landmarks" in mat.parts:
            continue
        image = mat.with_suffix(".jpg")
        if image.is_file():
            pairs.append((image, mat))
    if not pairs:
        raise InputError("no <name>.jpg + <name>.mat pairs found (is this the 300W_LP folder?)", root)
    return pairs


class W300LPFaces:
    """300W-LP samples as ``{"image": (H,W,3) uint8, "vertices": (N,3), "landmarks": (68,3), "mesh468": (468,3)?}``.

    Args:
        root: the 300W_LP folder.
        bfm: a :class:`BFM` (:func:`load_bfm`).
        correspondence: optional ``(468,)`` BFM vertex indices of MediaPipe's face vertices; when given, items carry
            ``mesh468`` in MediaPipe's topology (what the unprojection task's position maps are made from).
    """

    def __init__(self, root: str | Path, bfm: BFM, correspondence: np.ndarray | None = None):
        self.pairs = list_samples(root)
        self.bfm = bfm
        if correspondence is not None:
            correspondence = np.asarray(correspondence, np.int64).reshape(-1)
            if correspondence.size != 468 or correspondence.min() < 0 or correspondence.max() >= bfm.n_vertices:
                raise InputError(f"correspondence must hold 468 BFM vertex indices in 0..{bfm.n_vertices - 1}")
        self.correspondence = correspondence

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        from PIL import Image

        image_path, mat_path = self.pairs[i]
        try:
            image = np.asarray(Image.open(image_path).convert("RGB"))
        except OSError as exc:
            raise InputError(f"unreadable image ({exc})", image_path) from None
        verts = reconstruct(self.bfm, read_fit(mat_path), image.shape[0])
        item = {"image": image, "vertices": verts, "landmarks": verts[self.bfm.kpt_ind]}
        if self.correspondence is not None:
            item["mesh468"] = verts[self.correspondence]
        return item
