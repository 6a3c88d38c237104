"""Speed and memory of the 3-D-aware stage: textured-mesh render, mesh flow and warp at 256² (DESIGN.md §6).

The mesh is the package's canonical face (468 vertices + one ring, 970 triangles) with a random 256² texture, posed along
a smooth head motion; the reference-side work (building the mesh) is outside the timed loop, as at inference. Threads:
torch's current setting (``OMP_NUM_THREADS=2`` for the 2-core target of ≥ 100 frames/s). Both presets use the same
renderer, so ``preset`` changes nothing but the label. Besides the wall-clock ``fps`` each entry reports
``cpu_ms_per_frame`` (process CPU time, all threads), which stays meaningful on a machine shared with other work.
"""
from __future__ import annotations

import time

import numpy as np
import torch

N_FRAMES = 100


def _poses(n: int) -> torch.Tensor:
    t = torch.linspace(0, 2 * np.pi, n)
    return torch.stack([0.1 * torch.sin(t), 0.3 * torch.sin(2 * t), 0.05 * torch.cos(t),
                        4 * torch.sin(t), 3 * torch.cos(t), torch.zeros_like(t)], 1)


def run(preset: str = "fast", n_frames: int = N_FRAMES) -> dict[str, dict]:
    """``{"render": {...}, "mesh_flow": {...}, "warp": {...}}`` each with ``fps`` and ``peak_mb`` (see bench.common)."""
    from ..face.landmarks import canonical_mesh_478
    from ..geometry.flow import mesh_flow, warp
    from ..geometry.mesh import build_textured_mesh, face_triangles_tensor, render_textured
    from .common import measure

    face = torch.from_numpy(canonical_mesh_478()[:468].copy())
    texture = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    mesh = build_textured_mesh(texture, face, torch.zeros(6))
    poses = _poses(n_frames)
    tris = face_triangles_tensor()

    def render_all():
        for p in poses:
            render_textured(mesh, p)

    from ..geometry.pose import apply_pose

    posed = apply_pose(face, poses)

    def flow_all():
        for v in posed:
            mesh_flow(face, v, tris, 256)

    image = torch.rand(1, 3, 256, 256)
    flow = torch.randn(1, 2, 256, 256) * 3

    def warp_all():
        for _ in range(n_frames):
            warp(image, flow)

    out = {}
    with torch.no_grad():
        for name, fn in (("render", render_all), ("mesh_flow", flow_all), ("warp", warp_all)):
            cpu0 = time.process_time()
            res = measure(fn, n_frames, warmup=1)
            # process CPU time of the warm-up and the timed call (all threads): robust to other load on the machine
            cpu_ms = (time.process_time() - cpu0) / (2 * n_frames) * 1000
            out[name] = {**res, "cpu_ms_per_frame": round(cpu_ms, 3), "size": 256, "threads": torch.get_num_threads(),
                         "preset": preset}
    return out
