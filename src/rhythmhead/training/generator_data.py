"""Training samples for the generator G from one or more clip stores (REFERENCE.md §5.1, §5.10).

One sample = one target frame of one clip with everything G and its losses need:

* K reference frames drawn without replacement from the first ``ref_fraction`` (25 %) of the clip, the target from the
  rest;
* the warping reference: with probability ``worst_ref_prob`` (0.75) the reference whose pose differs most from the
  target's (largest mean |Δ rotation vector|), else a random one of the K;
* the 3-D-aware render: the key frame (the most frontal frame *of the reference pool*, so never a target) as a textured
  mesh (built once per clip, cached) rendered at the target's pose, and its label map = the key frame's frontal
  landmarks posed by the target pose;
* pseudo-ground-truth backward flows from the meshes (same topology): reference → target and render → target, each with
  its validity mask (pixels the target's mesh covers), which is also the face mask of the render warp loss;
* the target's mouth box mask (``--crop_ref``);
* augmentation applied consistently to every image, landmark set, flow and mask of the sample: horizontal flip (with
  the 68-point index permutation; flows mirrored), small random scale and shift, then the resize to ``image_size``.

Images are ``(3,H,W)`` float32 in [−1,1], label maps ``(1,H,W)`` in [−1,1], flows ``(2,H,W)`` in pixels of the output
size, masks ``(1,H,W)`` float32 in {0,1}. References come as ``(K,3,H,W)`` / ``(K,1,H,W)``.

Frames are decoded a whole clip at a time by :meth:`ClipStore.frames`; a small in-memory LRU keeps recent clips, and
``frame_cache_dir`` (when set) keeps every decoded clip as an ``.npy`` file that is memory-mapped afterwards, so random
access over many clips stays cheap.
"""
from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..config import bounded
from ..data.store import ClipStore, speaker_split
from ..common import CROP, atomic_path, index_affine, warp_crop  # store crops are 256²
from ..errors import InputError
from ..geometry.flow import mesh_flow
from ..geometry.labelmap import FLIP_68, draw_label_map, mouth_mask
from ..geometry.mesh import NUM_FACE_VERTICES, build_textured_mesh, face_triangles_tensor, render_textured
from ..geometry.pose import apply_pose, key_frame



@dataclass(frozen=True)
class GeneratorDataConfig:
    """Sampling and augmentation of generator training data."""

    image_size: int = 256  # network resolution (crops are resized when different)
    shots: int = 8  # K references per sample
    ref_fraction: float = bounded(0.25, ge=0, le=1)  # first fraction of a clip that forms the reference pool
    worst_ref_prob: float = bounded(0.75, ge=0, le=1)  # probability of warping from the most pose-different reference
    samples_per_clip: int = 500  # dataset items per clip (the sampler shuffles them)
    min_frames: int = 16  # clips shorter than this are skipped
    flip_prob: float = bounded(0.5, ge=0, le=1)
    scale_jitter: float = 0.1  # scale drawn from 1 ± this (x and y independently)
    shift_jitter: float = 0.05  # shift drawn from ± this × image width (x and y)
    mouth_margin: float = 0.15  # mouth box growth (fraction of the box size)
    val_fraction: float = bounded(0.2, ge=0, le=1)  # speaker-disjoint validation share
    extra_stores: tuple[str, ...] = ()  # more stores to train on (e.g. silent face videos)
    frame_cache_dir: str = ""  # where decoded clips are kept as .npy (empty: memory LRU only)
    cache_clips: int = 6  # clips kept in the in-memory LRU


class _FrameSource:
    """Decoded frames per clip: memory LRU + optional .npy cache on disk (memory-mapped)."""

    def __init__(self, cache_dir: str, capacity: int):
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.capacity = max(1, capacity)
        self._lru: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()

    def get(self, store: ClipStore, store_idx: int, clip_id: str) -> np.ndarray:
        key = (store_idx, clip_id)
        if key in self._lru:
            self._lru.move_to_end(key)
            return self._lru[key]
        frames = None
        if self.cache_dir is not None:
            tag = hashlib.sha1(str(store.root.resolve()).encode()).hexdigest()[:8]
            path = self.cache_dir / f"{tag}_{clip_id}.npy"
            if path.is_file():
                try:
                    frames = np.load(path, mmap_mode="r")
                except (OSError, ValueError):
                    frames = None
            if frames is None:
                frames = store.frames(clip_id)
                with atomic_path(path) as tmp:  # tempfile's names draw on its own RNG, not the global one
                    np.save(tmp, frames)
                frames = np.load(path, mmap_mode="r")
        else:
            frames = store.frames(clip_id)
        self._lru[key] = frames
        while len(self._lru) > self.capacity:
            self._lru.popitem(last=False)
        return frames


def _affine(rng: np.random.Generator | None, cfg: GeneratorDataConfig) -> tuple[np.ndarray, bool]:
    """Continuous-coordinate affine ``(2,3)`` from the 256² crop to the output image, and whether it flips."""
    s_out = cfg.image_size / CROP
    flip = False
    sx = sy = 1.0
    tx = ty = 0.0
    if rng is not None:
        flip = bool(rng.random() < cfg.flip_prob)
        sx, sy = 1.0 + rng.uniform(-cfg.scale_jitter, cfg.scale_jitter, 2)
        tx, ty = rng.uniform(-cfg.shift_jitter, cfg.shift_jitter, 2) * CROP
    c = CROP / 2
    # p' = s_out · (S·F·(p − c) + c + shift)
    a = np.array([[sx * (-1.0 if flip else 1.0), 0.0], [0.0, sy]])
    b = c - a @ np.array([c, c]) + np.array([tx, ty])
    return np.concatenate([a, b[:, None]], 1) * s_out, flip


class GeneratorDataset(torch.utils.data.Dataset):
    """Map-style dataset of generator samples (see the module docstring).

    Args:
        stores: the clip stores (the first is the main one).
        clips: ``(store_index, clip_id)`` pairs to sample from.
        cfg: sampling/augmentation settings.
        seed: base seed; item ``i`` is a deterministic function of ``(seed, i)``.
        augment: random warping reference choice and augmentation (False: worst reference, no augmentation).
    """

    def __init__(self, stores: list[ClipStore], clips: list[tuple[int, str]], cfg: GeneratorDataConfig, seed: int = 0,
                 augment: bool = True):
        self.stores, self.cfg, self.seed, self.augment = stores, cfg, seed, augment
        self._tracks: dict[tuple[int, str], dict] = {}
        self.clips, self.skipped = [], []
        for c in clips:
            if stores[c[0]].record(c[1])["frames"] < max(cfg.min_frames, 2):
                continue
            try:
                self._track(c)
            except InputError as exc:  # a damaged clip must not stop training: skip it, say so
                self.skipped.append(str(exc))
                warnings.warn(f"skipping clip: {exc}")
                continue
            self.clips.append(c)
        if not self.clips:
            raise InputError(f"no usable clip with at least {cfg.min_frames} frames to train the generator on",
                             stores[0].root)
        self._frames = _FrameSource(cfg.frame_cache_dir, cfg.cache_clips)
        self._meshes: dict[tuple[int, str], object] = {}
        self._triangles = face_triangles_tensor()

    def __len__(self) -> int:
        return len(self.clips) * self.cfg.samples_per_clip

    # -- per-clip caches ------------------------------------------------------------------------------------------
    def _track(self, key):
        if key not in self._tracks:
            self._tracks[key] = self.stores[key[0]].track(key[1])
        return self._tracks[key]

    def _mesh(self, key, frames, track):
        if key not in self._meshes:
            self._meshes[key] = reference_mesh(frames, track, self.cfg.ref_fraction, self.cfg.shots)
        return self._meshes[key]

    # -- sampling ---------------------------------------------------------------------------------------------------
    def choose(self, index: int) -> dict:
        """The frame indices of item ``index``: clip key, references, warping reference, target."""
        key = self.clips[index % len(self.clips)]
        rng = np.random.default_rng([self.seed, index])
        track = self._track(key)
        t = track["pose"].shape[0]
        k = self.cfg.shots
        n_ref = reference_pool(t, self.cfg.ref_fraction, k)
        refs = rng.choice(n_ref, size=k, replace=n_ref < k)
        target = int(rng.integers(n_ref, t))
        worst = (not self.augment) or rng.random() < self.cfg.worst_ref_prob
        warp_slot = worst_reference(track["pose"], refs, target) if worst else int(rng.integers(k))
        return {"key": key, "refs": refs.astype(np.int64), "warp_slot": warp_slot, "target": target,
                "rng": rng if self.augment else None}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if torch.utils.data.get_worker_info() is not None and cv2.getNumThreads() != 1:
            cv2.setNumThreads(1)  # one OpenCV thread per DataLoader worker (workers × cores threads otherwise)
        pick = self.choose(index)
        key = pick["key"]
        track = self._track(key)
        frames = self._frames.get(self.stores[key[0]], key[0], key[1])
        mesh, key_index = self._mesh(key, frames, track)
        m, flip = _affine(pick["rng"], self.cfg)
        return make_sample(frames, track, mesh, key_index, pick["refs"], pick["warp_slot"], pick["target"],
                           image_size=self.cfg.image_size, mouth_margin=self.cfg.mouth_margin, affine=m, flip=flip,
                           triangles=self._triangles)


def reference_pool(n_frames: int, ref_fraction: float, shots: int) -> int:
    """Number of leading frames that form the reference pool: ``round(T · ref_fraction)``, at least ``min(K, T − 1)``
    and at most ``T − 1`` (so a target remains)."""
    return min(max(int(round(n_frames * ref_fraction)), min(shots, n_frames - 1)), n_frames - 1)


def worst_reference(pose: np.ndarray, refs, target: int) -> int:
    """Slot in ``refs`` of the reference whose rotation differs most from the target's (max mean |Δ rotvec|)."""
    rot = np.asarray(pose)[:, :3]
    return int(np.abs(rot[np.asarray(refs)] - rot[target]).mean(-1).argmax())


def reference_key_frame(pose: np.ndarray, frontal: np.ndarray, n_pool: int) -> int:
    """The key frame of the 3-D render (:func:`rhythmhead.geometry.pose.key_frame`: the most frontal frame with open eyes
    and a closed mouth) over the reference pool, the first ``n_pool`` frames, so that it never is a target frame."""
    return key_frame(torch.from_numpy(np.ascontiguousarray(pose[:n_pool])), frontal[:n_pool])


def reference_mesh(frames: np.ndarray, track: dict, ref_fraction: float, shots: int):
    """``(textured mesh, key frame index)`` of a clip's reference key frame (see :func:`reference_key_frame`)."""
    n_pool = reference_pool(track["pose"].shape[0], ref_fraction, shots)
    k = reference_key_frame(track["pose"], track["frontal"], n_pool)
    return build_textured_mesh(np.array(frames[k]), track["mesh"][k], track["pose"][k]), k


def make_sample(frames: np.ndarray, track: dict, mesh, key_index: int, refs, warp_slot: int, target: int, *,
                image_size: int,
                mouth_margin: float = 0.15, affine: np.ndarray | None = None, flip: bool = False,
                triangles: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One generator sample (the dict of the module docstring) from a clip's frames and track.

    Args:
        frames: ``(T, 256, 256, 3)`` uint8 (or any indexable of frames).
        track: the clip's track (``landmarks``, ``mesh``, ``pose``, ``frontal``).
        mesh, key_index: the textured mesh of the reference key frame and that frame's index (:func:`reference_mesh`;
            the key frame's frontal landmarks, posed, give the render's label map).
        refs: K reference frame indices; ``warp_slot`` the slot of the warping reference; ``target`` the target index.
        image_size: output side.
        affine: ``(2, 3)`` continuous-coordinate affine from the crop to the output (default: plain resize);
            ``flip`` whether it mirrors (landmark indices are then permuted).
        triangles: the 468-vertex face triangles (cached by callers).
    """
    s = image_size
    refs = [int(r) for r in refs]
    warp_idx = refs[warp_slot]
    if affine is None:
        affine = np.array([[s / CROP, 0.0, 0.0], [0.0, s / CROP, 0.0]])
    m = np.asarray(affine, np.float64)
    mi = index_affine(m)
    tris = face_triangles_tensor() if triangles is None else triangles

    # 3-D render at the target pose, its label landmarks, and the pseudo-GT flows (all in crop pixels).
    pose_t = torch.from_numpy(np.asarray(track["pose"][target], np.float32))
    render, _render_mask = render_textured(mesh, pose_t, CROP)
    render_lmk = apply_pose(torch.from_numpy(np.asarray(track["frontal"][key_index], np.float32)), pose_t).numpy()
    meshes = torch.from_numpy(np.asarray(track["mesh"][:, :NUM_FACE_VERTICES], np.float32))
    render_verts = apply_pose(mesh.vertices[:NUM_FACE_VERTICES], pose_t)
    src = torch.stack([meshes[warp_idx], render_verts])
    dst = meshes[target].expand(2, -1, -1)
    flows, valid = mesh_flow(src, dst, tris, CROP)  # (2,H,W,2), (2,H,W)

    def img(x):
        return warp_crop(x, m, s)

    def to_img(x):
        return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1).float() / 127.5 - 1.0

    def lmk(points):
        p = np.asarray(points, np.float64)[..., :2] @ m[:, :2].T + m[:, 2]
        return p[..., list(FLIP_68), :] if flip else p

    ref_frames = np.stack([img(frames[i]) for i in refs])
    target_img = img(frames[target])
    render_img = cv2.warpAffine(render.numpy(), mi, (s, s), flags=cv2.INTER_LINEAR, borderValue=0)
    landmarks = np.asarray(track["landmarks"])
    lmks = lmk(np.concatenate([landmarks[refs], landmarks[[target]], render_lmk[None]], 0))
    labels = draw_label_map(lmks, s)  # (K+2,1,s,s)
    out_flows, out_valid = [], []
    for f, v in zip(flows.numpy(), valid.numpy()):
        fw = cv2.warpAffine(f, mi, (s, s), flags=cv2.INTER_LINEAR, borderValue=0) @ m[:, :2].T
        vw = cv2.warpAffine(v.astype(np.uint8), mi, (s, s), flags=cv2.INTER_NEAREST, borderValue=0)
        out_flows.append(torch.from_numpy(np.ascontiguousarray(fw.transpose(2, 0, 1))).float())
        out_valid.append(torch.from_numpy(vw[None].astype(np.float32)))
    return {
        "ref_images": torch.stack([to_img(x) for x in ref_frames]),
        "ref_labels": torch.from_numpy(labels[:-2]),
        "target_image": to_img(target_img),
        "target_label": torch.from_numpy(labels[-2]),
        "warp_ref_image": to_img(ref_frames[warp_slot]),
        "warp_ref_label": torch.from_numpy(labels[warp_slot]),
        "render_image": to_img(render_img),
        "render_label": torch.from_numpy(labels[-1]),
        "mouth_mask": torch.from_numpy(mouth_mask(lmks[-2], s, mouth_margin)),
        "flow_ref": out_flows[0], "flow_ref_valid": out_valid[0],
        "flow_render": out_flows[1], "flow_render_valid": out_valid[1],
        "face_mask": out_valid[0],
    }


def open_stores(data_dir: str, extra: tuple[str, ...] = ()) -> list[ClipStore]:
    """The main store and any extra ones (missing extra stores are an InputError naming them)."""
    return [ClipStore(data_dir)] + [ClipStore(p) for p in extra]


def split_clips(stores: list[ClipStore], val_fraction: float, seed: int) -> tuple[list[tuple[int, str]],
                                                                                list[tuple[int, str]]]:
    """Speaker-disjoint (train, val) ``(store_index, clip_id)`` lists over all stores (speakers named per store)."""
    records = []
    for i, st in enumerate(stores):
        for r in st.manifest():
            records.append({**r, "id": f"{i}/{r['id']}", "speaker": r["speaker"]})
    train, val = speaker_split(records, val_fraction, seed)

    def unpack(ids):
        return [(int(x.split("/", 1)[0]), x.split("/", 1)[1]) for x in ids]

    return unpack(train), unpack(val)


__all__ = ["GeneratorDataConfig", "GeneratorDataset", "make_sample", "reference_mesh", "reference_pool",
           "worst_reference", "reference_key_frame", "open_stores", "split_clips"]
