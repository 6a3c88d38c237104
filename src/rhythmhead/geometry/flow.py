"""Dense correspondence between two posed meshes of the same topology, and the backward warp that uses it.

Flow convention (the generator's flow nets, its warp, the pseudo-ground-truth flow losses and the 3-D-aware render all
share it): a flow field ``(B, 2, H, W)`` (or ``(H, W, 2)`` from :func:`mesh_flow`) is **backward, in pixels**, channel 0 =
x (right), channel 1 = y (down): the output pixel at centre ``p = (j + 0.5, i + 0.5)`` takes the source image's value at
``p + flow[:, :, i, j]``. Zero flow is the identity. Positions follow the pixel-centre convention of
:mod:`rhythmhead.geometry.raster`, which is ``grid_sample(align_corners=False)``'s: continuous coordinate ``u`` in pixels
maps to the normalised ``2u/W − 1``.

Because both meshes share their topology (MediaPipe's 468 vertices, or a :class:`~rhythmhead.geometry.mesh.TexturedMesh`
with its ring), the flow is exact: rasterise the destination mesh, and interpolate the *source* vertex positions with the
destination barycentrics (DESIGN.md §2, "flow supervision without FlowNet2").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .raster import _size_hw, rasterize_sparse


def pixel_grid(size: int | tuple[int, int], *, like: torch.Tensor) -> torch.Tensor:
    """``(H, W, 2)`` pixel-centre positions ``(j + 0.5, i + 0.5)`` with ``like``'s dtype and device."""
    h, w = _size_hw(size)
    ys = torch.arange(h, dtype=like.dtype, device=like.device) + 0.5
    xs = torch.arange(w, dtype=like.dtype, device=like.device) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1)


def mesh_flow(verts_src: torch.Tensor, verts_dst: torch.Tensor, triangles: torch.Tensor,
              size: int | tuple[int, int] = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward flow from a destination (target) mesh to a source mesh of the same topology.

    For every target pixel covered by ``verts_dst``, where the same surface point lies in the source image, minus the
    pixel's own position.

    Args:
        verts_src: ``(..., V, 3)`` source-image vertex positions in pixels (z unused).
        verts_dst: ``(..., V, 3)`` target-image vertex positions in pixels (z = depth, smaller is nearer).
        triangles: ``(F, 3)`` shared topology.
        size: target image ``H`` (= W) or ``(H, W)``.
    Returns:
        ``flow (..., H, W, 2)`` in pixels (0 outside the mask) and ``mask (..., H, W) bool`` (pixels the target mesh
        covers). Use ``flow.permute(..., 3, 1, 2)``-style reshaping to ``(B, 2, H, W)`` for :func:`warp`.
    """
    if verts_src.shape != verts_dst.shape or verts_src.shape[-1] != 3:
        raise ValueError(f"verts_src {tuple(verts_src.shape)} and verts_dst {tuple(verts_dst.shape)} must match (..., V, 3)")
    lead = verts_src.shape[:-2]
    src = verts_src.reshape(-1, *verts_src.shape[-2:])
    dst = verts_dst.reshape(-1, *verts_dst.shape[-2:])
    grid = pixel_grid(size, like=verts_dst).reshape(-1, 2)
    tris = triangles.to(device=verts_dst.device, dtype=torch.long)
    flows, masks = [], []
    for s, d in zip(src, dst):
        pixel, face, bary = rasterize_sparse(d, tris, size)
        flow = torch.zeros_like(grid)
        mask = torch.zeros(len(grid), dtype=torch.bool, device=grid.device)
        if len(pixel):
            pos = (s[:, :2][tris.index_select(0, face)] * bary.unsqueeze(-1)).sum(1)  # (M,2) source positions
            flow[pixel] = pos - grid.index_select(0, pixel)
            mask[pixel] = True
        flows.append(flow)
        masks.append(mask)
    h, w = _size_hw(size)
    return torch.stack(flows).reshape(*lead, h, w, 2), torch.stack(masks).reshape(*lead, h, w)


def flow_to_grid(flow: torch.Tensor) -> torch.Tensor:
    """``(B, 2, H, W)`` backward flow in pixels → ``(B, H, W, 2)`` normalised sampling grid for ``grid_sample``."""
    b, _, h, w = flow.shape
    base = pixel_grid((h, w), like=flow)  # (H,W,2)
    pos = base.unsqueeze(0) + flow.permute(0, 2, 3, 1)
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=flow.dtype, device=flow.device)
    return pos * scale - 1.0


def warp(image: torch.Tensor, flow: torch.Tensor, *, mode: str = "bilinear", padding_mode: str = "zeros") -> torch.Tensor:
    """Backward-warp ``image`` by ``flow``: ``out[:, :, i, j] = image at (j + 0.5, i + 0.5) + flow[:, :, i, j]``.

    Args:
        image: ``(B, C, H_in, W_in)`` float. The source may have another size than the flow: positions are in the
            flow's pixel units, so ``H_in, W_in`` should equal ``H, W`` (resize the flow otherwise).
        flow: ``(B, 2, H, W)`` backward flow in pixels (x, y).
        mode, padding_mode: as in ``torch.nn.functional.grid_sample``.
    Returns:
        ``(B, C, H, W)`` in ``image.dtype``; differentiable w.r.t. both inputs.
    """
    if image.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2 or flow.shape[0] != image.shape[0]:
        raise ValueError(f"warp: expected image (B,C,H,W) and flow (B,2,H,W), got {tuple(image.shape)}, {tuple(flow.shape)}")
    grid = flow_to_grid(flow.to(image.dtype))
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=False)
