"""Chunked generation: memory that does not grow with the audio's length (DESIGN.md §6).

Two passes over the audio, both in chunks of ``chunk`` frames:

1. **Motion plan** (cheap, per-frame numbers only): Φ's poses and Ψ's codes. The ``(T, 7, S)`` audio windows are never
   built for the whole audio: :class:`AudioFrames` cuts the windows of one chunk from the wave on demand, and Φ's
   temporal convolutions get ``context_frames`` extra frames on each side of the chunk so the chunked result equals the
   unchunked one exactly (:func:`predict_poses`).
2. **Frames** (:func:`synthesize`): per chunk, the 3-D-aware render at each pose, the label maps, G in micro-batches;
   frames are yielded as they are made, and the caller encodes them at once.

What does grow with T is the plan — poses ``(T,6)``, codes ``(T,n)``, landmarks ``(T,68,3)``, about 1 KB per frame —
and the speech itself (held for the audio track); images and audio windows exist for one chunk at a time.
:class:`StageTimer` accumulates wall time per stage for the summary and the benchmark.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from ..errors import InputError

WINDOW_BEFORE = WINDOW_AFTER = 3  # frame t's window = chunks t−3 .. t+3 (docs/ARCHITECTURE.md)


class StageTimer:
    """Wall time and item counts per named stage: ``with timer("render", n=25): ...``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.items: dict[str, int] = {}

    @contextmanager
    def __call__(self, stage: str, n: int = 0):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
            self.items[stage] = self.items.get(stage, 0) + n

    def summary(self) -> dict[str, dict[str, float]]:
        """``{stage: {"seconds", "items", "fps"}}`` (fps = items per second where items were counted)."""
        out = {}
        for stage, s in self.seconds.items():
            n = self.items.get(stage, 0)
            out[stage] = {"seconds": round(s, 4), "items": n, "fps": round(n / s, 2) if n and s > 0 else None}
        return out


def chunk_ranges(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``[start, stop)`` ranges of at most ``size`` covering ``0..n``."""
    size = max(1, int(size))
    for start in range(0, n, size):
        yield start, min(n, start + size)


class AudioFrames:
    """A wave cut into T frames of S samples, giving the windows of any frame range on demand.

    Equal to :func:`rhythmhead.audio.windows.frame_windows` (zero-padded to T·S, windows edge-padded at the ends of the
    whole signal), without building ``(T, 7, S)``.

    Args:
        wave: ``(N,)`` mono float32 at the network's rate.
        n_frames: T.
        samples_per_frame: S.
    """

    def __init__(self, wave: np.ndarray, n_frames: int, samples_per_frame: int):
        self.n_frames, self.spf = int(n_frames), int(samples_per_frame)
        self.wave = np.asarray(wave, np.float32)  # no copy of a float32 wave: only chunk-sized pieces are made

    def windows(self, start: int, stop: int) -> np.ndarray:
        """``(stop − start, 7, S)`` float32 windows of frames ``start .. stop−1``."""
        s = self.spf
        c0, c1 = max(0, start - WINDOW_BEFORE), min(self.n_frames, stop + WINDOW_AFTER)
        seg = self.wave[c0 * s: c1 * s]
        if len(seg) < (c1 - c0) * s:  # the last frame's chunk is zero-padded
            seg = np.concatenate([seg, np.zeros((c1 - c0) * s - len(seg), np.float32)])
        chunks = seg.reshape(c1 - c0, s)
        offsets = np.arange(-WINDOW_BEFORE, WINDOW_AFTER + 1)
        index = np.clip(np.arange(start, stop)[:, None] + offsets[None], 0, self.n_frames - 1) - c0
        return chunks[index]


@torch.no_grad()
def predict_poses(net, weight: torch.Tensor, bias: torch.Tensor, audio: AudioFrames, chunk: int,
                  timer: StageTimer | None = None) -> np.ndarray:
    """Φ's extrapolation over all T frames, chunk by chunk → ``(T, 6)`` *normalised* poses.

    Each chunk's audio features are computed with ``net.audio_encoder.context_frames`` frames of context on both
    sides, so the result equals one unchunked call.
    """
    timer = timer or StageTimer()
    ctx = net.audio_encoder.context_frames
    device = weight.device
    out = np.zeros((audio.n_frames, 6), np.float32)
    for start, stop in chunk_ranges(audio.n_frames, chunk):
        with timer("phi", stop - start):
            lo, hi = max(0, start - ctx), min(audio.n_frames, stop + ctx)
            win = torch.from_numpy(audio.windows(lo, hi))[None].to(device)
            feats = net.audio_encoder(win)[:, start - lo: stop - lo]
            out[start:stop] = net.extrapolator(feats, weight, bias)[0].float().cpu().numpy()
    return out


@torch.no_grad()
def predict_codes(net, ref_code: np.ndarray, audio: AudioFrames, chunk: int, timer: StageTimer | None = None
                  ) -> np.ndarray:
    """Ψ on every frame, chunk by chunk → ``(T, n)`` PCA codes."""
    timer = timer or StageTimer()
    device = next(net.parameters()).device
    ref = torch.as_tensor(ref_code, dtype=torch.float32, device=device)[None]
    out = np.zeros((audio.n_frames, len(ref_code)), np.float32)
    for start, stop in chunk_ranges(audio.n_frames, chunk):
        with timer("psi", stop - start):
            win = torch.from_numpy(audio.windows(start, stop).reshape(stop - start, -1)).to(device)
            out[start:stop] = net(win, ref.expand(len(win), -1)).float().cpu().numpy()
    return out


@dataclass
class MotionPlan:
    """Per-frame motion of a whole generation (crop pixels; see :mod:`rhythmhead.inference.pipeline`).

    Attributes:
        poses: ``(T, 6)``; codes: ``(T, n)`` expression codes (None when expressions come from a driving video);
        frontal: ``(T, 68, 3)`` frontal landmarks; landmarks: ``(T, 68, 3)`` posed landmarks; closure: ``(T,)`` blinks.
    """

    poses: np.ndarray
    codes: np.ndarray | None
    frontal: np.ndarray
    landmarks: np.ndarray
    closure: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.poses)


def nearest_shots(shot_poses: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """For each target pose ``(N, 6)`` the index of the reference shot ``(K, 6)`` with the closest rotation."""
    diff = np.abs(poses[:, None, :3] - shot_poses[None, :, :3]).mean(-1)
    return diff.argmin(1)


@torch.no_grad()
def synthesize(prepared, plan: MotionPlan, *, chunk: int = 25, batch: int = 4, mouth_margin: float = 0.15,
               size: int = 256, full_resolution: bool = True, timer: StageTimer | None = None
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Generate the frames of ``plan`` for a prepared reference, chunk by chunk, at ``size``² (the crop's box).

    G runs at its own image size. With linear composition (the ``fast`` G) the frame is composed at ``size`` by
    :meth:`Generator.compose`: G's flows warp the references cropped at ``size`` from the source, G's render flow
    warps the 3-D render made at ``size`` from the key frame cropped at ``size``, and only G's synthesised image and its
    confidences are upsampled. A video's own mouths (and blinks) then replace G's mouth box, or, for a photo, the
    mouth synthesis network's mouths (:mod:`rhythmhead.inference.regions`). A non-linear G (the paper's composition) has no such split: its frames are
    upsampled to ``size`` (so are every G's with ``full_resolution=False``).

    Yields:
        ``(frames (n, size, size, 3) uint8, renders (n, g, g, 3) uint8 at G's size)`` per chunk of ``n ≤ chunk``
        frames, in order.
    """
    from ..geometry.labelmap import mouth_mask
    from ..geometry.mesh import deform_vertices, render_uv, sample_uv
    from .reference import CROP, label_maps, render_inputs
    from .regions import face_surface_weight, head_weight

    timer = timer or StageTimer()
    gen = prepared.generator
    device = prepared.ref_images.device
    g_size = prepared.image_size
    full = gen.composes_linearly and full_resolution
    sources = prepared.sources(size) if full else None
    for start, stop in chunk_ranges(plan.n_frames, chunk):
        n = stop - start
        poses = plan.poses[start:stop]
        with timer("render", n):
            render_images, render_labels, renders = render_inputs(prepared.mesh, prepared.key_frontal, poses, g_size,
                                                                  device)
            if prepared.colour is not None:
                render_images = prepared.colour.forward(render_images)
        with timer("labels", n):
            lmk = np.asarray(plan.landmarks[start:stop], np.float32)
            target_labels = label_maps(lmk, g_size).to(device)
            masks = mouth_mask(torch.from_numpy(lmk[..., :2] * (g_size / CROP)), g_size, mouth_margin).to(device)
            warp = torch.from_numpy(nearest_shots(prepared.shot_poses, poses)).to(device)
            warp_images = prepared.ref_images[0, warp]
            warp_labels = prepared.ref_labels[0, warp]
        frames = np.empty((n, size, size, 3), np.uint8)
        for b0 in range(0, n, batch):
            b1 = min(n, b0 + batch)
            with timer("generator", b1 - b0):
                out = gen.generate(prepared.embedding.expand(b1 - b0), target_labels[b0:b1], warp_images[b0:b1],
                                   warp_labels[b0:b1], render_images[b0:b1], render_labels[b0:b1],
                                   mouth_mask=masks[b0:b1], need_raw=False)
                if prepared.colour is not None:  # G's images back in the reference's colours
                    out = {**out, **{k: prepared.colour.inverse(out[k]) for k in ("raw", "image")
                                     if out.get(k) is not None}}
            with timer("compose", b1 - b0):
                if full:
                    # the key frame's mesh with the target expression, rendered at the output size from the key
                    # frame cropped at that size: the face surface itself, and (warped by G's render flow, as G's
                    # own render is) the render branch of the composition — the ring around the face is not
                    # deformed, so there it is G's render at full resolution
                    delta = torch.from_numpy(plan.frontal[start + b0:start + b1] - prepared.key_model_frontal)
                    verts = deform_vertices(prepared.mesh, prepared.deform_weights, delta)
                    # rasterised at G's size (uv is piecewise affine: resizing it loses nothing that shows)
                    d_uv, d_cover, d_face = render_uv(prepared.mesh, torch.from_numpy(poses[b0:b1]), g_size, verts,
                                                      scale=g_size / CROP)
                    face_hi = sample_uv(sources.texture, d_uv, d_cover, size, uv_scale=sources.texture.shape[0] / CROP,
                                        mode="bicubic", supersample=sources.supersample)
                    face_hi = face_hi.permute(0, 3, 1, 2).float().to(device) / 127.5 - 1.0
                    mask_hi = mouth_mask(torch.from_numpy(lmk[b0:b1, :, :2] * (size / CROP)), size,
                                         mouth_margin).to(device)
                    head = torch.from_numpy(head_weight(lmk[b0:b1] * (g_size / CROP), g_size))[:, None].to(device)
                    if size != g_size:
                        head = torch.nn.functional.interpolate(head, size=(size, size), mode="bilinear",
                                                               align_corners=False)
                    cover_hi = torch.nn.functional.interpolate(d_cover[:, None].float(), size=(size, size),
                                                               mode="bilinear", align_corners=False).to(device)
                    cover_hi = ((cover_hi - 0.5) * 2.0 + 0.5).clamp(0, 1) * (face_hi > -1).any(1, keepdim=True)
                    img = gen.compose(out, sources.shots[warp[b0:b1]], face_hi, mask_hi, synth_mask=head,
                                      render_cover=cover_hi)
                    w = face_surface_weight(d_face.cpu().numpy(), lmk[b0:b1] * (g_size / CROP))
                    w = torch.from_numpy(w)[:, None].to(device)
                    if size != g_size:
                        w = torch.nn.functional.interpolate(w, size=(size, size), mode="bilinear", align_corners=False)
                        w = w * cover_hi  # never the black outside the upsampled coverage
                    img = w * face_hi + (1 - w) * img
                else:
                    img = out["image"].float()
                    if g_size != size:
                        img = torch.nn.functional.interpolate(img, size=(size, size), mode="bilinear",
                                                              align_corners=False)
                if not torch.isfinite(img).all():  # a NaN would become black pixels without a word
                    raise InputError(f"the generator made non-finite pixels (NaN/inf) in frames {start + b0}–"
                                     f"{start + b1 - 1}: its weights or inputs are broken; nothing was written")
                img = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
                frames[b0:b1] = img.permute(0, 2, 3, 1).cpu().numpy()
        if sources is not None and sources.regions is not None:
            with timer("regions", n):
                for i in range(n):
                    t = start + i
                    frames[i] = sources.regions(frames[i], plan.landmarks[t], plan.frontal[t], float(plan.closure[t]))
        elif sources is not None and sources.mouth is not None:
            with timer("mouth", n):
                frames = sources.mouth(frames, lmk)
        yield frames, renders
