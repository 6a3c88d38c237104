"""A small, exact, vectorised z-buffer rasteriser for orthographic triangle meshes (pure PyTorch).

Conventions (shared with :mod:`rhythmhead.geometry.flow` and ``grid_sample(align_corners=False)``):

- Vertices are ``(V, 3)`` in image pixels: x right, y down, z depth in the same units. A pixel ``(row i, col j)`` is the
  unit square ``[j, j+1) × [i, i+1)`` and is sampled at its centre ``(j + 0.5, i + 0.5)`` — the same convention as
  MediaPipe's ``x·W, y·H`` (normalised coordinate 0 = the left edge of the image).
- **Near = smaller z.** MediaPipe's z grows away from the camera (ARCHITECTURE.md), and a rigid pose keeps that meaning,
  so where triangles overlap the one with the smallest interpolated z at the pixel centre wins. No back-face culling (the
  face mesh is an open surface; the z-buffer resolves its folds).
- Orthographic projection: the image position is the vertex's (x, y); attributes interpolate linearly (affinely) in
  screen space, which is exact for an orthographic camera.

Algorithm (no per-pixel Python loop): the pixel rows of each triangle's bounding box are enumerated with
``repeat_interleave``, each row's column span inside the triangle is solved from the three barycentric half-planes, and
the pixels of the spans are enumerated the same way (so the work is ~ the triangles' area, not F × a fixed window); the
barycentrics of every candidate pixel centre come from per-triangle affine coefficients, inside candidates get an int64 key ``(quantised depth << b) | candidate``
(b = bits of the candidate count, the depth gets the other 62 − b bits) and a ``scatter_reduce(amin)`` onto the pixel
grid keeps the nearest candidate per pixel (ties: lower triangle index), whose barycentrics are already known.
:func:`rasterize_sparse` returns only the covered pixels (what the renderer and the flow need); :func:`rasterize`
scatters them into dense maps.
"""
from __future__ import annotations

import torch

_EMPTY = torch.iinfo(torch.int64).max


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def triangle_coefficients(vertices: torch.Tensor, triangles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-triangle affine maps from a pixel position to barycentrics and depth.

    Args:
        vertices: ``(V, 3)`` x, y, z in pixels.
        triangles: ``(F, 3)`` vertex indices.
    Returns:
        ``coef (F, 3, 3)`` with ``[b0, b1, b2] = coef @ [x, y, 1]`` (rows), and ``area2 (F,)`` twice the signed
        screen-space area (0 for degenerate triangles, whose coefficients are 0).
    """
    p = vertices[triangles.long()]  # (F,3,3)
    x0, y0 = p[:, 0, 0], p[:, 0, 1]
    x1, y1 = p[:, 1, 0], p[:, 1, 1]
    x2, y2 = p[:, 2, 0], p[:, 2, 1]
    area2 = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    ok = area2.abs() > 1e-9
    inv = torch.where(ok, 1.0 / torch.where(ok, area2, torch.ones_like(area2)), torch.zeros_like(area2))
    # b1 = ((x - x0)(y2 - y0) - (x2 - x0)(y - y0)) / area2 ; b2 = ((x1 - x0)(y - y0) - (x - x0)(y1 - y0)) / area2
    b1 = torch.stack([(y2 - y0) * inv, -(x2 - x0) * inv, (-(x0) * (y2 - y0) + (x2 - x0) * y0) * inv], -1)
    b2 = torch.stack([-(y1 - y0) * inv, (x1 - x0) * inv, ((x1 - x0) * (-y0) + x0 * (y1 - y0)) * inv], -1)
    b0 = torch.stack([-b1[:, 0] - b2[:, 0], -b1[:, 1] - b2[:, 1], ok.to(b1.dtype) - b1[:, 2] - b2[:, 2]], -1)
    return torch.stack([b0, b1, b2], 1), torch.where(ok, area2, torch.zeros_like(area2))


def rasterize_sparse(vertices: torch.Tensor, triangles: torch.Tensor, size: int | tuple[int, int] = 256
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Z-buffer rasterisation returning only the covered pixels (the fast path of :func:`rasterize`).

    Args:
        vertices: ``(V, 3)`` float, x, y, z in pixels — or ``(T, V, 3)``: T poses of one mesh rasterised in one pass
            (the same pixels as T separate calls; the per-call overhead of the small kernels is paid once).
        triangles: ``(F, 3)`` int vertex indices.
        size: output ``H`` (= W) or ``(H, W)``.
    Returns:
        ``pixel (M,) int64`` flat indices ``row·W + col`` of the covered pixels (ascending; ``t·H·W + row·W + col``
        for batched vertices), ``face (M,) int64`` the nearest triangle there (0..F−1), ``barycentrics (M, 3)`` in
        ``vertices.dtype``.
    """
    if vertices.ndim not in (2, 3) or vertices.shape[-1] != 3:
        raise ValueError(f"vertices: expected (V, 3) or (T, V, 3), got {tuple(vertices.shape)}")
    if triangles.ndim != 2 or triangles.shape[1] != 3:
        raise ValueError(f"triangles: expected (F, 3), got {tuple(triangles.shape)}")
    h, w = _size_hw(size)
    dev, dtype = vertices.device, vertices.dtype
    tris = triangles.to(device=dev, dtype=torch.long)
    n_tri = len(tris)
    empty = (torch.zeros(0, dtype=torch.long, device=dev), torch.zeros(0, dtype=torch.long, device=dev),
             torch.zeros(0, 3, dtype=dtype, device=dev))
    if n_tri == 0:
        return empty
    # T meshes as one mesh of T·F triangles whose pixels land in T separate H×W images (own coordinates, so the
    # arithmetic is that of T separate calls; only the flat pixel index carries t·H·W)
    t_count = 1
    if vertices.ndim == 3:
        t_count, n_vert = vertices.shape[:2]
        vertices = vertices.reshape(-1, 3)
        tris = (tris[None] + n_vert * torch.arange(t_count, device=dev)[:, None, None]).reshape(-1, 3)
    coef, area2 = triangle_coefficients(vertices, tris)
    p = vertices[tris]  # (F,3,3)
    # depth as an affine function of (x, y): z = zc · [x, y, 1]; pack 12 numbers per triangle for one gather
    zc = torch.einsum("fk,fkj->fj", p[:, :, 2], coef)
    table = torch.cat([coef.reshape(-1, 9), zc], 1)  # (F,12)
    # pixel-centre bounding boxes: columns j with j + 0.5 in [min x, max x]
    xmin = torch.ceil(p[:, :, 0].amin(1) - 0.5).clamp(min=0).long()
    xmax = torch.floor(p[:, :, 0].amax(1) - 0.5).clamp(max=w - 1).long()
    ymin = torch.ceil(p[:, :, 1].amin(1) - 0.5).clamp(min=0).long()
    ymax = torch.floor(p[:, :, 1].amax(1) - 0.5).clamp(max=h - 1).long()
    eps = 1e-5  # barycentric slack: pixel centres on a shared edge belong to both triangles (no cracks)
    # 1. rows: every pixel row of every triangle's bounding box
    bh = (ymax - ymin + 1).clamp(min=0) * (area2 != 0)
    n_rows = int(bh.sum())
    if n_rows == 0:
        return empty
    rf = torch.repeat_interleave(torch.arange(len(tris), device=dev), bh, output_size=n_rows)
    row_y = ymin.index_select(0, rf) + torch.arange(n_rows, device=dev) \
        - (torch.cumsum(bh, 0) - bh).index_select(0, rf)
    # 2. the row's column span: b_k = a_k·x + c_k(y) ≥ −eps for k = 0, 1, 2 bounds x from below (a_k > 0) or above
    rc = coef.index_select(0, rf)  # (R,3,3)
    slope = rc[:, :, 0]
    const = rc[:, :, 1] * (row_y.to(dtype) + 0.5).unsqueeze(1) + rc[:, :, 2]
    bound = (-eps - const) / torch.where(slope == 0, torch.ones_like(slope), slope)
    inf = torch.full_like(bound, float("inf"))
    x_lo = torch.where(slope > 0, bound, -inf).amax(1) - 1e-3  # a little wider: the inside test below decides
    x_hi = torch.where(slope < 0, bound, inf).amin(1) + 1e-3
    feasible = torch.where(slope == 0, const >= -eps, torch.ones_like(const, dtype=torch.bool)).all(1)
    x0 = torch.maximum(torch.ceil(x_lo - 0.5).clamp(0, w).long(), xmin.index_select(0, rf))
    x1 = torch.minimum(torch.floor(x_hi - 0.5).clamp(-1, w - 1).long(), xmax.index_select(0, rf))
    n = (x1 - x0 + 1).clamp(min=0) * feasible
    total = int(n.sum())
    if total == 0:
        return empty
    # 3. candidates: the pixels of each row span (≈ the triangles' area, not their bounding boxes)
    cand_row = torch.repeat_interleave(torch.arange(n_rows, device=dev), n, output_size=total)
    offset = torch.arange(total, device=dev) - (torch.cumsum(n, 0) - n).index_select(0, cand_row)
    px = x0.index_select(0, cand_row) + offset
    py = row_y.index_select(0, cand_row)
    fid = rf.index_select(0, cand_row)
    x = px.to(dtype) + 0.5
    y = py.to(dtype) + 0.5
    t = table.index_select(0, fid)  # (N,12)
    b0 = t[:, 0] * x + t[:, 1] * y + t[:, 2]
    b1 = t[:, 3] * x + t[:, 4] * y + t[:, 5]
    b2 = t[:, 6] * x + t[:, 7] * y + t[:, 8]
    keep = torch.nonzero((b0 >= -eps) & (b1 >= -eps) & (b2 >= -eps)).squeeze(1)
    if len(keep) == 0:
        return empty
    depth = (t[:, 9] * x + t[:, 10] * y + t[:, 11]).index_select(0, keep)
    pix = (py * w + px).index_select(0, keep)
    if t_count > 1:
        pix = pix + torch.div(fid.index_select(0, keep), n_tri, rounding_mode="floor") * (h * w)
    # nearest wins: int64 key (quantised depth << bits) | candidate, scatter-min per pixel (ties: lower candidate)
    bits = max(1, int(len(keep) - 1).bit_length())
    levels = (1 << (62 - bits)) - 1
    lo, hi = depth.min(), depth.max()
    scale = levels / torch.clamp(hi - lo, min=1e-12).double()
    q = ((depth - lo).double() * scale).round().long().clamp(0, levels)
    key = (q << bits) | torch.arange(len(keep), device=dev)
    buf = torch.full((t_count * h * w,), _EMPTY, dtype=torch.long, device=dev)
    buf.scatter_reduce_(0, pix, key, reduce="amin")
    pixel = torch.nonzero(buf != _EMPTY).squeeze(1)
    winner = keep.index_select(0, buf.index_select(0, pixel) & ((1 << bits) - 1))
    bary = torch.stack([b0.index_select(0, winner), b1.index_select(0, winner), b2.index_select(0, winner)], 1)
    bary = bary.clamp(min=0)
    bary = bary / bary.sum(1, keepdim=True)  # clamping the ≥ −1e-5 edge values keeps interpolation inside the triangle
    return pixel, fid.index_select(0, winner) % n_tri, bary


def rasterize(vertices: torch.Tensor, triangles: torch.Tensor, size: int | tuple[int, int] = 256
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Z-buffer rasterisation of an orthographic mesh.

    Args:
        vertices: ``(V, 3)`` float, x, y, z in pixels (see the module docstring for the pixel-centre convention).
        triangles: ``(F, 3)`` int vertex indices.
        size: output ``H`` (= W) or ``(H, W)``.
    Returns:
        ``face_index (H, W) int64`` (−1 where empty), ``barycentrics (H, W, 3)`` in ``vertices.dtype`` (0 where empty),
        ``mask (H, W) bool``. All on ``vertices.device``.
    """
    h, w = _size_hw(size)
    pixel, face, bary = rasterize_sparse(vertices, triangles, (h, w))
    face_index = torch.full((h * w,), -1, dtype=torch.long, device=vertices.device)
    face_index[pixel] = face
    out_bary = torch.zeros(h * w, 3, dtype=vertices.dtype, device=vertices.device)
    out_bary[pixel] = bary
    face_index = face_index.view(h, w)
    return face_index, out_bary.view(h, w, 3), face_index >= 0


def interpolate(attributes: torch.Tensor, triangles: torch.Tensor, face_index: torch.Tensor,
                barycentrics: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex attributes at rasterised pixels.

    Args:
        attributes: ``(V, C)`` per-vertex values.
        triangles: ``(F, 3)``.
        face_index: ``(H, W)`` from :func:`rasterize` (−1 = empty).
        barycentrics: ``(H, W, 3)`` from :func:`rasterize`.
    Returns:
        ``(H, W, C)`` in ``attributes.dtype``; 0 where ``face_index < 0``.
    """
    tris = triangles.to(device=attributes.device, dtype=torch.long)
    f = face_index.clamp(min=0)
    corner = attributes[tris[f]]  # (H,W,3,C)
    out = (corner * barycentrics.to(attributes.dtype).unsqueeze(-1)).sum(-2)
    return torch.where((face_index >= 0).unsqueeze(-1), out, torch.zeros_like(out))
