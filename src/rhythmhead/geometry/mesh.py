"""The reference's textured face mesh and its 3-D-aware render at any head pose (REFERENCE.md §4, DESIGN.md §2).

Built once per reference from its key frame ``t_M`` (the most frontal frame):

- **Geometry:** MediaPipe's 468 face vertices (the 10 iris points dropped) with the 898 triangles of
  :func:`rhythmhead.face.tessellation.face_triangles` (eyes and mouth closed), moved to the canonical frontal space by
  removing the key frame's pose, ``frontalize = R·p + t`` — as the paper's affine alignment of the PRNet mesh to the
  frontal landmarks, but exact because the mesh *is* the tracked geometry.
- **Ring (optional, on by default):** for each scale ``s`` in ``ring_scales`` a ring of vertices is added around the face
  oval (the mesh's 36-vertex outer boundary), at ``c + s·(v − c)`` in the key-frame image (``c`` = the oval's centroid,
  clipped to the image), at the depth of the oval vertex it extends, and stitched to the previous ring by a quad strip.
  The ring carries the hair, ears and jaw-line surroundings rigidly with the head, so the render covers more of the head
  than the bare face mask (the paper's PRNet mesh also reaches to the forehead and ears). ``ring_scales=()`` disables it.
- **Texture:** the key frame itself, sampled *per pixel*: ``uv`` are the vertices' pixel positions in the key frame, so a
  render pixel looks up the key frame at the barycentric interpolation of its triangle's uv (piecewise-affine warp,
  bilinear sampling) — sharp, unlike the paper's per-vertex colours.

``render_textured(mesh, pose)`` poses the canonical vertices with ``apply_pose`` (``Rᵀ(x − t)``), z-buffers them with
:func:`rhythmhead.geometry.raster.rasterize` (orthographic, smaller z nearer) and returns the image with a black
background and the coverage mask.

:func:`unproject` is the caller-friendly "image → 468 vertices" entry point with two backends: ``mediapipe`` (the face
tracker) and ``network`` (the PRNet-style :class:`rhythmhead.models.unprojection.UnprojectionNet`, its position map
sampled at the UV coordinates of :mod:`rhythmhead.geometry.uv`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .pose import apply_pose, frontalize
from .raster import rasterize_sparse

NUM_FACE_VERTICES = 468


@dataclass(eq=False)
class TexturedMesh:
    """A reference's face mesh in the canonical frontal space with its key-frame texture.

    Attributes:
        vertices: ``(V, 3)`` float32 canonical frontal positions (key-frame pose removed), pixels.
        triangles: ``(F, 3)`` int64 vertex indices (the 898 face triangles first, ring triangles after).
        uv: ``(V, 2)`` float32 pixel positions of the vertices in ``texture`` (x, y; pixel-centre convention of raster).
        texture: ``(H, W, 3)`` uint8 RGB key frame.
        key_pose: ``(6,)`` float32 the key frame's pose (rendering at it reproduces the key frame).
        num_face_vertices: the first ``num_face_vertices`` vertices are MediaPipe's (468); the rest are ring vertices.
    """

    vertices: torch.Tensor
    triangles: torch.Tensor
    uv: torch.Tensor
    texture: torch.Tensor
    key_pose: torch.Tensor
    num_face_vertices: int = NUM_FACE_VERTICES

    def to(self, device: torch.device | str) -> "TexturedMesh":
        """A copy on ``device``."""
        return TexturedMesh(self.vertices.to(device), self.triangles.to(device), self.uv.to(device),
                            self.texture.to(device), self.key_pose.to(device), self.num_face_vertices)


@lru_cache(maxsize=1)
def _topology() -> tuple[np.ndarray, np.ndarray]:
    """Face triangles ``(898,3)`` and the ordered outer boundary loop (the face oval) of the 468-vertex mesh."""
    from ..face.tessellation import boundary_loops, face_triangles  # package data, read once

    tris = face_triangles()
    loops = boundary_loops(tris)
    outline = max(loops, key=len)
    return np.asarray(tris, np.int64), np.asarray(outline, np.int64)


def face_triangles_tensor(device: torch.device | str | None = None) -> torch.Tensor:
    """The 898 face triangles as an int64 tensor (for :func:`rhythmhead.geometry.flow.mesh_flow` on 468-vertex meshes)."""
    return torch.from_numpy(_topology()[0].copy()).to(device or "cpu")


def _as_tensor(x, dtype=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return t if dtype is None else t.to(dtype)


def add_rings(points: torch.Tensor, size_hw: tuple[int, int], ring_scales: tuple[float, ...] = (1.25,)
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ring vertices around the face oval of a 468-vertex image-space mesh, and the triangles stitching them.

    Args:
        points: ``(468, 3)`` key-frame image positions (pixels).
        size_hw: image ``(H, W)``; ring points are clipped to ``[0, W] × [0, H]``.
        ring_scales: increasing scales (> 1) of the rings about the oval's centroid.
    Returns:
        ``ring (R·L, 3)`` points (L = 36 oval vertices per ring) and ``triangles (2·R·L, 3)`` indexing the concatenation
        ``[points; ring]``.
    """
    tris, outline = _topology()
    n_loop = len(outline)
    oval = points[torch.from_numpy(outline).to(points.device)]  # (L,3)
    centre = oval[:, :2].mean(0)
    h, w = size_hw
    rings, faces = [], []
    prev_idx = torch.from_numpy(outline)
    base = points.shape[0]
    k = torch.arange(n_loop)
    for r, s in enumerate(ring_scales):
        xy = centre + s * (oval[:, :2] - centre)
        xy = torch.stack([xy[:, 0].clamp(0, w), xy[:, 1].clamp(0, h)], -1)
        rings.append(torch.cat([xy, oval[:, 2:]], -1))
        cur_idx = base + r * n_loop + k
        a, b = prev_idx, prev_idx[(k + 1) % n_loop]
        c, d = cur_idx, cur_idx[(k + 1) % n_loop]
        faces += [torch.stack([a, b, d], -1), torch.stack([a, d, c], -1)]
        prev_idx = cur_idx
    if not rings:
        return points.new_zeros(0, 3), torch.zeros(0, 3, dtype=torch.long)
    return torch.cat(rings), torch.cat(faces)


def build_textured_mesh(image, mesh478, pose, *, ring_scales: tuple[float, ...] = (1.25,)) -> TexturedMesh:
    """The textured mesh of a reference key frame.

    Args:
        image: ``(H, W, 3)`` uint8 RGB key frame (numpy or torch).
        mesh478: ``(478, 3)`` (or ``(468, 3)``) MediaPipe points of that frame, in its pixels.
        pose: ``(6,)`` the frame's pose (``frontal = R·p + t``).
        ring_scales: rings added around the face oval (see the module docstring); ``()`` for the bare face.
    Returns:
        :class:`TexturedMesh` on the CPU (float32 geometry).
    """
    tex = _as_tensor(image)
    if tex.ndim != 3 or tex.shape[2] != 3 or tex.dtype != torch.uint8:
        raise ValueError(f"image: expected (H, W, 3) uint8, got {tuple(tex.shape)} {tex.dtype}")
    pts = _as_tensor(mesh478, torch.float32)
    if pts.ndim != 2 or pts.shape[0] < NUM_FACE_VERTICES or pts.shape[1] != 3:
        raise ValueError(f"mesh478: expected (478, 3) or (468, 3), got {tuple(pts.shape)}")
    pts = pts[:NUM_FACE_VERTICES]
    pose_t = _as_tensor(pose, torch.float32).reshape(6)
    tris = torch.from_numpy(_topology()[0].copy())
    ring, ring_tris = add_rings(pts, (tex.shape[0], tex.shape[1]), tuple(ring_scales))
    image_pts = torch.cat([pts, ring])
    return TexturedMesh(
        vertices=frontalize(image_pts, pose_t).contiguous(),
        triangles=torch.cat([tris, ring_tris]).contiguous(),
        uv=image_pts[:, :2].contiguous(),
        texture=tex.contiguous(),
        key_pose=pose_t,
        num_face_vertices=NUM_FACE_VERTICES,
    )


def _lookup(texture: torch.Tensor, positions: torch.Tensor, mode: str) -> torch.Tensor:
    """``texture (H, W, 3)`` uint8 at pixel ``positions (B, h, w, 2)`` → ``(B, 3, h, w)`` float32. Images of
    positions stay images, a batch a batch: grid_sample vectorises along a grid row and shares out the batch between
    threads (one (N, 1) column of positions is several times slower)."""
    h, w = texture.shape[:2]
    tex = texture.permute(2, 0, 1).unsqueeze(0).to(torch.float32)
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float32, device=texture.device)
    grid = positions.to(torch.float32) * scale - 1.0
    return F.grid_sample(tex.expand(len(grid), -1, -1, -1), grid, mode=mode, padding_mode="border",
                         align_corners=False)


def landmark_weights(mesh: TexturedMesh, landmarks: torch.Tensor, sigma: float = 0.1) -> torch.Tensor:
    """How the mesh follows its landmarks: ``(V, 68)`` weights, row ``v`` a normalised Gaussian of the frontal 2-D
    distance from vertex ``v`` to each of the 68 frontal ``landmarks (68, ≥2)`` (σ = ``sigma`` × the landmarks' width),
    zero for the ring vertices (hair and background stay put). With :func:`deform_vertices` the key frame's mesh takes
    on another expression: the jaw drops, the lips part, the brows rise — with the key frame's own texture."""
    lm = torch.as_tensor(landmarks, dtype=torch.float32, device=mesh.vertices.device)[:, :2]
    width = float(lm[:, 0].max() - lm[:, 0].min())
    d2 = torch.cdist(mesh.vertices[:, :2], lm).pow(2)
    w = torch.exp(-(d2 - d2.min(1, keepdim=True).values) / (2 * (sigma * width) ** 2))  # stable: nearest = 1
    w = w / w.sum(1, keepdim=True)
    w[mesh.num_face_vertices:] = 0
    return w


def deform_vertices(mesh: TexturedMesh, weights: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The mesh's canonical vertices moved by landmark displacements ``delta (T, 68, 3)`` (frontal space) through
    :func:`landmark_weights` → ``(T, V, 3)``."""
    return mesh.vertices + torch.einsum("vk,tkc->tvc", weights, delta.to(mesh.vertices))


def render_uv(mesh: TexturedMesh, pose, size: int = 256, vertices: torch.Tensor | None = None, scale: float = 1.0
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each pixel of the render at ``pose`` looks up the texture: the rasterised, barycentrically interpolated uv.

    Args:
        mesh: from :func:`build_textured_mesh`.
        pose: ``(6,)`` or ``(T, 6)`` target pose(s).
        size: output side in pixels (the pose's pixel units).
        vertices: optional ``(T, V, 3)`` canonical vertices per pose (:func:`deform_vertices`) instead of the mesh's.
        scale: output pixels per pose pixel (0.5: a 128² render of a pose in 256²-crop pixels); uv stays in texture
            pixels.
    Returns:
        ``uv (T, H, W, 2)`` float32 texture pixels (0 where not covered), ``cover (T, H, W)`` bool and ``face (T, H, W)``
        bool — the pixels of the face itself (MediaPipe's triangles, not the ring around them) — batched or not as
        ``pose``. The render is :func:`sample_uv` of these; since uv is piecewise affine, resizing it gives the render
        at another resolution from a texture of that resolution (one lookup, no second rasterisation).
    """
    pose_t = _as_tensor(pose, torch.float32).to(mesh.vertices.device)
    batched = pose_t.ndim == 2
    posed = apply_pose(mesh.vertices if vertices is None else vertices, pose_t.reshape(-1, 6))  # (T,V,3)
    if scale != 1.0:
        posed = posed * scale
    face_tri = (mesh.triangles < mesh.num_face_vertices).all(1)
    n, dev = len(posed), posed.device
    pixel, face, bary = rasterize_sparse(posed, mesh.triangles, size)  # all poses in one pass
    uv = torch.zeros(n * size * size, 2, dtype=torch.float32, device=dev)
    cover = torch.zeros(n * size * size, dtype=torch.bool, device=dev)
    on_face = torch.zeros(n * size * size, dtype=torch.bool, device=dev)
    if len(pixel):
        corners = mesh.uv.index_select(0, mesh.triangles.index_select(0, face).reshape(-1)).view(-1, 3, 2)
        uv[pixel] = torch.bmm(bary.unsqueeze(1).float(), corners).squeeze(1)  # barycentric interpolation
        cover[pixel] = True
        on_face[pixel] = face_tri[face]
    uv, cover, on_face = uv.view(n, size, size, 2), cover.view(n, size, size), on_face.view(n, size, size)
    return (uv, cover, on_face) if batched else (uv[0], cover[0], on_face[0])


def sample_uv(texture: torch.Tensor, uv: torch.Tensor, cover: torch.Tensor, size: int | None = None,
              uv_scale: float = 1.0, mode: str = "bilinear", supersample: int = 1) -> torch.Tensor:
    """The render from :func:`render_uv`'s maps: ``texture (H_t, W_t, 3)`` uint8 looked up at ``uv (…, h, w, 2)``
    (times ``uv_scale``: the texture's pixels per uv pixel) where ``cover``, black elsewhere → ``(…, S, S, 3)`` uint8.

    With ``size`` ≠ h, the maps are resized to ``size`` first: uv by normalised convolution (the covered
    neighbours only, so edges do not bleed towards 0), the coverage bilinearly and thresholded at ½.

    ``supersample`` = n > 1 looks up an n× finer grid (``size`` × n; the texture then has n× the pixels per uv
    pixel, counted in ``uv_scale``) and averages each n×n block over its covered samples: an area filter, which keeps
    the fine detail that a single interpolated lookup per pixel loses at sub-pixel positions (bicubic at 1× keeps
    ≈ 0.7 of a sharp photo's Laplacian variance under sub-pixel shifts, at 2× ≈ 1.0).
    """
    lead = uv.shape[:-3]
    uv = uv.reshape(-1, *uv.shape[-3:])
    cover = cover.reshape(-1, *cover.shape[-2:])
    h = uv.shape[1]
    size = h if size is None else size
    if size == h and supersample == 1:  # the maps as they are
        out = _lookup(texture, uv * uv_scale if uv_scale != 1.0 else uv, mode)
        out = out.round_().clamp_(0, 255).to(torch.uint8) * cover.unsqueeze(1)
        return out.permute(0, 2, 3, 1).reshape(*lead, size, size, 3)
    # only the window of output pixels that the coverage reaches (its bounding box over the batch, grown by a map
    # pixel) is looked up: the face is under half of a frame
    result = torch.zeros(len(uv), 3, size, size, dtype=torch.uint8, device=uv.device)
    rows, cols = cover.any(0).any(1).nonzero()[:, 0], cover.any(0).any(0).nonzero()[:, 0]
    if len(rows) == 0:
        return result.permute(0, 2, 3, 1).reshape(*lead, size, size, 3)
    k = size / h
    y0, y1 = max(0, int((rows.min() - 1) * k)), min(size, int(np.ceil((rows.max() + 2) * k)))
    x0, x1 = max(0, int((cols.min() - 1) * k)), min(size, int(np.ceil((cols.max() + 2) * k)))
    fine = size * supersample
    # the maps resized to the fine grid by normalised convolution (bilinear, as F.interpolate, on the window only)
    ys = (torch.arange(y0 * supersample, y1 * supersample, device=uv.device) + 0.5) * (2.0 / fine) - 1.0
    xs = (torch.arange(x0 * supersample, x1 * supersample, device=uv.device) + 0.5) * (2.0 / fine) - 1.0
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).expand(len(uv), -1, -1, -1)
    c = cover.unsqueeze(1).float()
    both = F.grid_sample(torch.cat([uv.permute(0, 3, 1, 2) * c, c], 1), grid, mode="bilinear",
                         padding_mode="border", align_corners=False)
    den = both[:, 2:]
    out = _lookup(texture, (both[:, :2] * (uv_scale / den.clamp_min(1e-6))).permute(0, 2, 3, 1), mode)
    inside = den > 0.5
    if supersample > 1:
        c = inside.float()
        pooled = F.avg_pool2d(torch.cat([out * c, c], 1), supersample)
        out, inside = pooled[:, :3] / pooled[:, 3:].clamp_min(1e-6), pooled[:, 3:] > 0.5
    result[:, :, y0:y1, x0:x1] = out.round_().clamp_(0, 255).to(torch.uint8) * inside
    return result.permute(0, 2, 3, 1).reshape(*lead, size, size, 3)


def render_textured(mesh: TexturedMesh, pose, size: int = 256, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Render the textured mesh at ``pose`` (orthographic, z-buffered, black background).

    Args:
        mesh: from :func:`build_textured_mesh`.
        pose: ``(6,)`` or ``(T, 6)`` target pose(s) (``Rᵀ(x − t)`` poses the canonical vertices).
        size: output side in pixels (256 for the paper crop).
        scale: output pixels per pose pixel (0.5: a 128² render of poses in 256²-crop pixels, looked up bilinearly
            in the full texture).
    Returns:
        ``image (H, W, 3)`` or ``(T, H, W, 3)`` uint8 and ``mask`` ``(H, W)`` / ``(T, H, W)`` bool (covered pixels).
    """
    uv, cover, _ = render_uv(mesh, pose, size, scale=scale)
    return sample_uv(mesh.texture, uv, cover), cover


def unproject(image, backend: str = "mediapipe", model=None) -> np.ndarray:
    """Dense 3-D face of an image: ``(468, 3)`` float32 vertices in its pixels (x right, y down, z away from camera).

    Args:
        image: ``(H, W, 3)`` uint8 RGB face crop (square for the network backend, ideally the 256² paper crop).
        backend: ``"mediapipe"`` (the face tracker) or ``"network"`` (the trained unprojection network).
        model: for ``"network"``, an :class:`rhythmhead.models.unprojection.UnprojectionNet` (eval mode).
    Raises:
        InputError: no face (mediapipe), or no model / wrong image size (network).
    """
    from ..errors import InputError

    rgb = np.ascontiguousarray(image.numpy() if isinstance(image, torch.Tensor) else image)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"unproject expects an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    if backend == "mediapipe":
        from ..face.landmarks import FaceMesher  # the tracker lives in face/; imported only for this backend

        with FaceMesher(static_image_mode=True) as mesher:
            pts = mesher(rgb)
        if pts is None:
            raise InputError("no face found in the image (mediapipe unprojector)")
        return pts[:NUM_FACE_VERTICES].astype(np.float32)
    if backend == "network":
        if model is None:
            raise InputError("the network unprojector needs a trained model (--models RUN)")
        from .uv import denormalize_positions, face_uv, sample_vertices

        h, w = rgb.shape[:2]
        if h != w:
            raise InputError(f"the network unprojector expects a square face crop, got {w}x{h}")
        param = next(model.parameters())
        x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).to(param.device, param.dtype)
        size = int(getattr(model, "image_size", w))
        if size != w:  # positions are normalised by the image side, so any crop size maps back to its own pixels
            x = F.interpolate(x, size=(size, size), mode="area" if size < w else "bilinear")
        with torch.no_grad():
            pos_map = model(x / 127.5 - 1.0)[0].permute(1, 2, 0)  # (S,S,3) normalised
        verts = sample_vertices(denormalize_positions(pos_map, w), face_uv().to(pos_map.device))
        return verts.float().cpu().numpy()
    raise InputError(f"unknown unprojector {backend!r} (choose mediapipe or network)")
