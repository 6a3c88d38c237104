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
              size: int | tuple[int, int] = 256, *, source_visible: bool = False,
              depth_tolerance: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward flow from a destination (target) mesh to a source mesh of the same topology.

    For every target pixel covered by ``verts_dst``, where the same surface point lies in the source image, minus the
    pixel's own position.

    Args:
        verts_src: ``(..., V, 3)`` source-image vertex positions in pixels (z unused).
        verts_dst: ``(..., V, 3)`` target-image vertex positions in pixels (z = depth, smaller is nearer).
        triangles: ``(F, 3)`` shared topology.
        size: target image ``H`` (= W) or ``(H, W)``; the source image is assumed to have the same size.
        source_visible: also drop from the mask the target pixels whose surface point is hidden in the source image
            (behind another part of the source mesh by more than ``depth_tolerance`` pixels, or outside it), i.e. keep
            only pixels whose pseudo-ground-truth colour really is at ``p + flow`` in the source.
        depth_tolerance: depth slack of that test, pixels.
    Returns:
        ``flow (..., H, W, 2)`` in pixels (0 outside the mask) and ``mask (..., H, W) bool`` (pixels the target mesh
        covers, and with ``source_visible`` whose point the source shows). For :func:`warp`, permute a batch of flows
        to ``(B, 2, H, W)``: ``flow.permute(0, 3, 1, 2)``.
    """
    if verts_src.shape != verts_dst.shape or verts_src.shape[-1] != 3:
        raise ValueError(f"verts_src {tuple(verts_src.shape)} and verts_dst {tuple(verts_dst.shape)} "
                         "must match (..., V, 3)")
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
            corners = s.index_select(0, tris.index_select(0, face).reshape(-1)).view(-1, 3, 3)
            pos = torch.bmm(bary.unsqueeze(1).to(corners.dtype), corners).squeeze(1)  # (M,3) source positions
            if source_visible:
                keep = _visible_in(s, tris, size, pos, depth_tolerance)
                pixel, pos = pixel[keep], pos[keep]
            flow[pixel] = (pos[:, :2] - grid.index_select(0, pixel)).to(flow.dtype)
            mask[pixel] = True
        flows.append(flow)
        masks.append(mask)
    h, w = _size_hw(size)
    return torch.stack(flows).reshape(*lead, h, w, 2), torch.stack(masks).reshape(*lead, h, w)


def _visible_in(verts: torch.Tensor, tris: torch.Tensor, size, points: torch.Tensor, tolerance: float) -> torch.Tensor:
    """``(M,)`` bool: surface points ``(M, 3)`` of the mesh ``verts`` that its own z-buffer shows (nearest pixel)."""
    h, w = _size_hw(size)
    pixel, face, bary = rasterize_sparse(verts, tris, (h, w))
    zbuf = torch.full((h * w,), float("inf"), dtype=verts.dtype, device=verts.device)
    if len(pixel):
        zc = verts[:, 2].index_select(0, tris.index_select(0, face).reshape(-1)).view(-1, 3)
        zbuf[pixel] = (zc * bary.to(zc.dtype)).sum(1)
    col = points[:, 0].floor().long()
    row = points[:, 1].floor().long()
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    z = zbuf[(row.clamp(0, h - 1) * w + col.clamp(0, w - 1))]
    return inside & (points[:, 2] <= z + tolerance)


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
        raise ValueError(f"warp: expected image (B,C,H,W) and flow (B,2,H,W), "
                         f"got {tuple(image.shape)}, {tuple(flow.shape)}")
    grid = flow_to_grid(flow.to(image.dtype))
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def resize_flow(flow: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """A backward flow ``(B, 2, h, w)`` in pixels of an ``h × w`` image as the same flow for an ``H × W`` image
    (bilinear resize, values scaled to the new pixels): what a flow estimated at a network's resolution becomes at the
    output's."""
    h, w = _size_hw(size)
    if flow.shape[-2:] == (h, w):
        return flow
    scale = torch.tensor([w / flow.shape[-1], h / flow.shape[-2]], dtype=flow.dtype, device=flow.device)
    return F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False) * scale.view(1, 2, 1, 1)
