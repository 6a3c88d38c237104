"""Training pairs for the unprojection network: (face crop, UV position map of its MediaPipe mesh), with augmentation.

Where no 300W-LP is at hand (DESIGN.md §2) the targets are built from the store's tracked MediaPipe meshes: the 468 face
vertices of a frame, in crop pixels, rasterised into the fixed UV layout (:mod:`rhythmhead.geometry.uv`) after
normalisation by the crop size (x/256, y/256, z/256 + 0.5).

Augmentation (training split only), applied identically to the image and the mesh: a random similarity about the crop
centre (rotation ±``rotate_deg``, scale 1 ± ``scale``, shift ±``shift_px``; z scales with the image), and a colour jitter
(per-channel gain 1 ± ``color``, brightness ± ``color``/2). The randomness comes from the global torch RNG, which the
Trainer seeds and checkpoints (resume is exact with ``num_workers = 0``).

Frames are decoded once at start-up, every ``frame_stride``-th frame up to ``max_frames_per_clip`` per clip, and kept
resized to the network's ``image_size`` (memory: 48 KiB per frame at 128²).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.store import CROP_SIZE, ClipStore
from ..geometry.mesh import face_triangles_tensor
from ..geometry.uv import face_uv, normalize_positions, position_map, region_weights, uv_raster


@dataclass(frozen=True)
class Augment:
    """Augmentation ranges (0 disables each)."""

    rotate_deg: float = 10.0
    scale: float = 0.08
    shift_px: float = 8.0  # in 256-crop pixels
    color: float = 0.2


def resize_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 → ``(T, 3, size, size)`` uint8 (area-averaged when shrinking)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    if x.shape[-1] == size and x.shape[-2] == size:
        return x.contiguous()
    out = F.interpolate(x.float(), size=(size, size), mode="area" if size < x.shape[-1] else "bilinear",
                        **({} if size < x.shape[-1] else {"align_corners": False}))
    return out.round().clamp(0, 255).to(torch.uint8)


def prnet_weights(size: int) -> torch.Tensor:
    """PRNet's region weights in the face UV layout ``(size, size)``: 68 landmarks 16, eyes/nose/mouth 4, face 3, else 0."""
    from mediapipe.python.solutions import face_mesh_connections as fc

    from ..face.landmarks import MESH_TO_68

    features = set()
    for edges in (fc.FACEMESH_LEFT_EYE, fc.FACEMESH_RIGHT_EYE, fc.FACEMESH_LIPS, fc.FACEMESH_NOSE):
        for a, b in edges:
            features.update((a, b))
    features = sorted(v for v in features if v < 468)
    return region_weights(face_triangles_tensor(), face_uv(), size, landmark_vertices=MESH_TO_68,
                          feature_vertices=features)


def face_mask(size: int) -> torch.Tensor:
    """``(size, size)`` float 0/1: the UV pixels the face mesh covers."""
    return uv_raster(face_triangles_tensor(), face_uv(), size)[2].float()


class PositionMapFrames(torch.utils.data.Dataset):
    """Items ``{"image": (3,S,S) float in [−1,1], "position_map": (3,S,S) normalised, "mesh": (468,3) crop px}``.

    Args:
        store: an open :class:`~rhythmhead.data.store.ClipStore`.
        clip_ids: the clips of this split.
        image_size: network side S (the crop is 256²; positions stay normalised by 256).
        frame_stride, max_frames_per_clip: which frames are used.
        augment: an :class:`Augment` for training, None for validation/evaluation.
    """

    def __init__(self, store: ClipStore, clip_ids: Sequence[str], image_size: int = 256, frame_stride: int = 5,
                 max_frames_per_clip: int = 48, augment: Augment | None = None):
        self.image_size, self.augment = image_size, augment
        images, meshes, owners = [], [], []
        for clip_id in clip_ids:
            track = store.track(clip_id)
            idx = np.arange(0, len(track["pose"]), max(1, frame_stride))[:max_frames_per_clip]
            frames = store.frames(clip_id)
            idx = idx[idx < len(frames)]
            images.append(resize_frames(frames[idx], image_size))
            meshes.append(torch.from_numpy(track["mesh"][idx, :468].copy()))
            owners += [clip_id] * len(idx)
            del frames
        self.images = torch.cat(images) if images else torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8)
        self.meshes = torch.cat(meshes) if meshes else torch.zeros(0, 468, 3)
        self.clip_ids = owners
        self.triangles = face_triangles_tensor()
        self.uv = face_uv()
        self.raster = uv_raster(self.triangles, self.uv, image_size)

    def __len__(self) -> int:
        return len(self.images)

    def target(self, mesh: torch.Tensor) -> torch.Tensor:
        """``(468, 3)`` crop-pixel mesh → ``(3, S, S)`` normalised position map."""
        pm = position_map(normalize_positions(mesh, CROP_SIZE), self.triangles, self.uv, self.image_size,
                          raster=self.raster)
        return pm.permute(2, 0, 1).contiguous()

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = self.images[i].float() / 127.5 - 1.0  # (3,S,S)
        mesh = self.meshes[i].clone()
        if self.augment is not None:
            image, mesh = self._augment(image, mesh)
        return {"image": image, "position_map": self.target(mesh), "mesh": mesh}

    def _augment(self, image: torch.Tensor, mesh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.augment
        r = (torch.rand(4) * 2 - 1).tolist()
        angle = math.radians(a.rotate_deg) * r[0]
        scale = 1.0 + a.scale * r[1]
        shift = torch.tensor([a.shift_px * r[2], a.shift_px * r[3]])
        c, s = math.cos(angle), math.sin(angle)
        rot = torch.tensor([[c, -s], [s, c]])
        centre = torch.tensor([CROP_SIZE / 2, CROP_SIZE / 2])
        # forward map on crop pixels: p' = scale·R(p − centre) + centre + shift ; z' = scale·z
        xy = (mesh[:, :2] - centre) @ rot.T * scale + centre + shift
        mesh = torch.cat([xy, mesh[:, 2:] * scale], 1)
        # image: backward map in normalised coordinates (centre = 0, so the crop centre stays the origin)
        inv = rot.T / scale
        theta = torch.cat([inv, (-(inv @ shift) / (CROP_SIZE / 2))[:, None]], 1)[None]
        grid = F.affine_grid(theta, [1, 3, self.image_size, self.image_size], align_corners=False)
        image = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        if a.color:
            gain = 1.0 + a.color * (torch.rand(3, 1, 1) * 2 - 1)
            bright = a.color / 2 * (torch.rand(1) * 2 - 1)
            image = ((image + 1) * gain - 1 + bright).clamp(-1, 1)
        return image, mesh
