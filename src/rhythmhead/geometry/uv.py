"""A fixed UV parametrisation of the 468-vertex face mesh and PRNet-style UV position maps (REFERENCE.md §4).

**The parametrisation** (:func:`cylindrical_uv`, :func:`face_uv`): a cylindrical unwrap of the package's canonical frontal
face (``rhythmhead.face.landmarks.canonical_mesh_478``, 256² crop pixels) about a vertical axis ``R = 100`` px behind its
nearest point: ``u ∝ R·atan2(x − x̄, (z_min + R) − z)``, ``v ∝ y``, both scaled by one factor into ``[margin, 1 − margin]``
(aspect kept). A plain frontal (x, y) projection folds one triangle at the nostril wing (the alar crease is concave seen
from the front); the unwrap has no fold — every triangle keeps a positive area — and gives the cheeks more room.

**Position maps** (PRNet): an ``(S, S, 3)`` image in UV space whose pixel holds the 3-D position of the surface point
with that UV, rasterised with barycentric interpolation of the vertex positions (:func:`position_map`);
:func:`sample_vertices` reads vertices back (bilinear). Pixels just outside the mesh are filled from their neighbours
(``fill_px``) so bilinear reads at border vertices are not pulled towards 0. Networks see positions normalised by the
image size (:func:`normalize_positions`: x/W, y/H, z/W + 0.5, so a 256² crop's face lies in [0, 1]).

UV coordinates are in [0, 1] with pixel-centre convention: ``uv·S`` is a continuous pixel position of the map (as the
rasteriser's ``j + 0.5`` centres).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .raster import interpolate, rasterize

CYLINDER_RADIUS_PX = 100.0
UV_MARGIN = 0.05


def cylindrical_uv(canonical: torch.Tensor, radius: float = CYLINDER_RADIUS_PX, margin: float = UV_MARGIN) -> torch.Tensor:
    """Cylindrical unwrap ``(V, 3)`` frontal vertices → ``(V, 2)`` UV in ``[margin, 1 − margin]`` (see module docstring)."""
    x, y, z = canonical.unbind(-1)
    axis_z = z.min() + radius
    u = radius * torch.atan2(x - x.mean(), axis_z - z)
    uv = torch.stack([u, y], -1)
    lo, hi = uv.min(0).values, uv.max(0).values
    scale = (1 - 2 * margin) / (hi - lo).max()
    centre = (lo + hi) / 2
    return (uv - centre) * scale + 0.5


@lru_cache(maxsize=1)
def _face_uv_np() -> np.ndarray:
    from ..face.landmarks import canonical_mesh_478  # package data: the canonical frontal face

    canonical = torch.from_numpy(canonical_mesh_478()[:468].astype(np.float64))
    return cylindrical_uv(canonical).to(torch.float32).numpy()


def face_uv() -> torch.Tensor:
    """The fixed UV coordinates ``(468, 2)`` float32 of MediaPipe's face vertices (a fresh CPU tensor)."""
    return torch.from_numpy(_face_uv_np().copy())


def uv_raster(triangles: torch.Tensor, uv: torch.Tensor, size: int = 256
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rasterise the mesh in UV space: ``face_index (S, S)``, ``barycentrics (S, S, 3)``, ``mask (S, S)``."""
    flat = torch.cat([uv * size, torch.zeros_like(uv[:, :1])], -1)
    return rasterize(flat, triangles, size)


def _fill(values: torch.Tensor, mask: torch.Tensor, steps: int) -> torch.Tensor:
    """Grow ``values (..., S, S, C)`` beyond ``mask (S, S)`` by ``steps`` pixels (mean of covered 3×3 neighbours)."""
    lead = values.shape[:-3]
    s1, s2, c = values.shape[-3:]
    v = values.reshape(-1, s1, s2, c).permute(0, 3, 1, 2)
    m = mask.to(values.dtype).expand(v.shape[0], 1, s1, s2).clone()
    v = v * m
    ones = torch.ones(1, 1, 3, 3, dtype=values.dtype, device=values.device)
    for _ in range(steps):
        num = F.conv2d(v.reshape(-1, 1, s1, s2), ones, padding=1).reshape(v.shape)
        den = F.conv2d(m, ones, padding=1)
        grow = (m == 0) & (den > 0)
        v = torch.where(grow, num / den.clamp(min=1), v)
        m = torch.where(grow, torch.ones_like(m), m)
    return v.permute(0, 2, 3, 1).reshape(*lead, s1, s2, c)


def position_map(vertices: torch.Tensor, triangles: torch.Tensor, uv: torch.Tensor, size: int = 256,
                 fill_px: int = 2, raster: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """UV position map of a mesh.

    Args:
        vertices: ``(..., V, 3)`` positions (any units; usually crop pixels or normalised).
        triangles: ``(F, 3)``.
        uv: ``(V, 2)`` in [0, 1].
        size: map side S.
        fill_px: pixels the map is grown beyond the mesh (0 = exact mask, zeros outside).
        raster: a precomputed :func:`uv_raster` (the UV layout is fixed, so callers may compute it once).
    Returns:
        ``(..., S, S, 3)`` in ``vertices.dtype``.
    """
    face_index, bary, mask = raster if raster is not None else uv_raster(triangles, uv.to(vertices.device), size)
    lead = vertices.shape[:-2]
    flat = vertices.reshape(-1, *vertices.shape[-2:])
    maps = torch.stack([interpolate(v, triangles, face_index, bary) for v in flat])
    if fill_px:
        maps = _fill(maps, mask, fill_px)
    return maps.reshape(*lead, size, size, 3)


def sample_vertices(position_map: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear read of ``position_map (..., S, S, C)`` at ``uv (V, 2)`` → ``(..., V, C)``."""
    lead = position_map.shape[:-3]
    s1, s2, c = position_map.shape[-3:]
    pm = position_map.reshape(-1, s1, s2, c).permute(0, 3, 1, 2)
    grid = (uv.to(pm) * 2 - 1).reshape(1, -1, 1, 2).expand(pm.shape[0], -1, -1, -1)
    out = F.grid_sample(pm, grid, mode="bilinear", padding_mode="border", align_corners=False)  # (B,C,V,1)
    return out[..., 0].transpose(1, 2).reshape(*lead, uv.shape[0], c)


def normalize_positions(positions: torch.Tensor, size: int = 256) -> torch.Tensor:
    """Crop-pixel positions ``(..., 3)`` → network units: ``(x/S, y/S, z/S + 0.5)``."""
    scale = positions.new_tensor([1.0 / size, 1.0 / size, 1.0 / size])
    offset = positions.new_tensor([0.0, 0.0, 0.5])
    return positions * scale + offset


def denormalize_positions(positions: torch.Tensor, size: int = 256) -> torch.Tensor:
    """Inverse of :func:`normalize_positions`."""
    offset = positions.new_tensor([0.0, 0.0, 0.5])
    return (positions - offset) * size


def region_weights(triangles: torch.Tensor, uv: torch.Tensor, size: int = 256, *, landmark_vertices=(),
                   feature_vertices=(), landmark_weight: float = 16.0, feature_weight: float = 4.0,
                   face_weight: float = 3.0) -> torch.Tensor:
    """PRNet's region weight mask in UV space ``(S, S)``: 68 landmarks > eyes/nose/mouth > rest of face > outside (0).

    Per-vertex weights (``landmark_weight`` on ``landmark_vertices``, ``feature_weight`` on ``feature_vertices``,
    ``face_weight`` elsewhere) are interpolated over the triangles and the map is 0 outside the face (PRNet gives its
    neck region 0 too), then normalised to mean 1 over the face.
    """
    w = torch.full((uv.shape[0], 1), face_weight, dtype=torch.float32)
    if len(feature_vertices):
        w[list(feature_vertices)] = feature_weight
    if len(landmark_vertices):
        w[list(landmark_vertices)] = landmark_weight
    face_index, bary, mask = uv_raster(triangles, uv.float(), size)
    weights = interpolate(w, triangles, face_index, bary)[..., 0]
    return weights / weights[mask].mean()
