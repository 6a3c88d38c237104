"""Per-reference preparation, computed ONCE per reference and reused for every frame (DESIGN.md §1).

From a prepared reference (:class:`rhythmhead.data.preprocess.Reference`: crops, landmarks, mesh, pose, frontal, key
frame) this module computes everything the per-frame loop needs:

* **K references for G** — frames spread over the reference's head poses (farthest-point sampling of the rotation
  vectors, starting from the most frontal frame), resized to G's image size, with their label maps; G's K-shot
  embedding (:meth:`Generator.embed_references`). A photo gives K = 1.
* **The textured mesh** of the key frame (:func:`rhythmhead.geometry.mesh.build_textured_mesh`), from the tracked
  MediaPipe mesh or from the unprojection network, and the key frame's frontal landmarks (the render's label).
* **Φ's extrapolating layer** ``W, b``: a video with speech encodes its own first τ frames of (smoothed, normalised)
  pose + audio; a photo (or a silent video) uses a *motion style* — another clip's pose + audio (``motion_style=CLIP``)
  or the bundle's default style. A style's extrapolated poses live at the style clip's head position, so they are
  re-centred (``recenter``): their mean over the generated frames is moved onto the reference's mean pose.
* **Ψ's reference code** and the reference's **identity offset** (closed-mouth frame of the reference's frontal
  landmarks, :class:`rhythmhead.data.pca.ExpressionPCA`), and the neutral code the expression scale pivots on.
* Optional **test-time fine-tuning** of a copy of G (and D) on the K references (:func:`rhythmhead.models.finetune.finetune`).
* The **region bank** of a video (:mod:`rhythmhead.inference.regions`: the frames that lend their mouth and blinking
  eyes) and, per output size, the **full-resolution sources** (:class:`OutputSources`: the K references, the key frame
  and the bank's frames cropped at that size from the source file), made once per size on first use.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from ..audio.windows import envelope, speech_frames
from ..common import CROP  # reference crops and all landmark/pose pixel units are in the 256² crop
from ..errors import InputError
from .controls import motion_amplitude, mouth_width, reference_openings

# the face surface of an output frame is looked up on a grid this many times finer, in the key frame cropped up to
# this many times larger from the source, and area-averaged (geometry.mesh.sample_uv): one bicubic lookup per pixel
# keeps ≈ 0.7 of a sharp photo's Laplacian variance under sub-pixel motion, 2 × 2 ≈ 1.0. Only where the source has the
# pixels (its face box at least 1.5× the output side): a key frame upscaled for it comes out softer, not sharper
# (0.35–0.67 of the detail, by the interpolation that upscales)
SUPERSAMPLE = 2


# The mean and std per channel (in [−1, 1]) of the bundled G's training references (its split's 50 training clips,
# 128², no augmentation): the colours G knows (see ColourStandard).
TRAINING_COLOUR_MEAN = (-0.123, -0.219, -0.248)
TRAINING_COLOUR_STD = (0.471, 0.393, 0.419)
# colour standardisation is used for a reference when it reconstructs the references this much better (relative L1)
COLOUR_GAIN = 0.15


@dataclass(frozen=True)
class ColourStandard:
    """G's inputs moved, channel by channel, from the references' colour statistics to those of G's training data, and
    G's synthesised images moved back.

    Why: the bundled G (BatchNorm, 50 training clips) is not colour-invariant. Before a saturated background — the red
    studio of pcavs_00086, one of its own training clips — its synthesis branch leaves its range: bright pink/white
    noise on the chin, neck and background wherever the composition takes it (G's raw image, L1 0.50 to the real frame
    against 0.16–0.31 on other clips). With the references' colours standardised the same frames come out right
    (L1 0.23). On most clips it changes little either way, so :func:`choose_colour` turns it on only for a reference
    whose own frames it reconstructs clearly better.
    """

    mean: torch.Tensor  # (1, 3, 1, 1) of the K references
    std: torch.Tensor

    @classmethod
    def of(cls, images: torch.Tensor) -> "ColourStandard":
        """From ``(…, 3, H, W)`` reference images in [−1, 1]."""
        x = images.reshape(-1, 3, *images.shape[-2:])
        return cls(x.mean((0, 2, 3)).view(1, 3, 1, 1), x.std((0, 2, 3)).clamp_min(0.02).view(1, 3, 1, 1))

    def _target(self, like: torch.Tensor):
        shape = (1,) * (like.ndim - 3) + (3, 1, 1)
        return (torch.tensor(TRAINING_COLOUR_MEAN, dtype=like.dtype, device=like.device).view(shape),
                torch.tensor(TRAINING_COLOUR_STD, dtype=like.dtype, device=like.device).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(…, 3, H, W)`` as G's training data would have shown them."""
        mu, sd = self._target(x)
        shape = (1,) * (x.ndim - 3) + (3, 1, 1)
        return (x - self.mean.view(shape).to(x)) / self.std.view(shape).to(x) * sd + mu

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """G's images back in the reference's colours."""
        mu, sd = self._target(x)
        shape = (1,) * (x.ndim - 3) + (3, 1, 1)
        return (x - mu) / sd * self.std.view(shape).to(x) + self.mean.view(shape).to(x)


def _reconstruction_error(generator, ref_images, ref_labels, renders, render_labels, masks, warp_from,
                          colour: ColourStandard | None) -> float:
    """Mean L1 of G remaking each reference from the others (its label, the nearest other shot warped, the render at
    its pose), in the reference's own colours."""
    images = ref_images if colour is None else colour.forward(ref_images)
    renders = renders if colour is None else colour.forward(renders)
    with torch.no_grad():
        emb = generator.embed_references(images, ref_labels)
        k = ref_images.shape[1]
        out = generator.generate(emb.expand(k), ref_labels[0],
                                 images[0, warp_from], ref_labels[0, warp_from], renders, render_labels,
                                 mouth_mask=masks, need_raw=False)
    made = out["image"].float() if colour is None else colour.inverse(out["image"].float())
    return float((made.clamp(-1, 1) - ref_images[0]).abs().mean())


def choose_colour(generator, ref, idx: np.ndarray, mesh, ref_images, ref_labels, mouth_margin: float, device
                  ) -> ColourStandard | None:
    """:class:`ColourStandard` for this reference if G remakes its K references more than :data:`COLOUR_GAIN` better
    (relative L1) with it than without, else None. A single shot (a photo) has nothing to remake it from: None."""
    from ..geometry.labelmap import mouth_mask

    k = ref_images.shape[1]
    if k < 2:
        return None
    rot = ref.pose[idx, :3]
    dist = np.abs(rot[:, None] - rot[None]).sum(-1) + np.eye(k) * 1e9
    warp_from = torch.from_numpy(dist.argmin(1)).to(device)
    renders, render_labels, _ = render_inputs(mesh, np.asarray(ref.frontal[int(ref.key_frame)], np.float32),
                                              ref.pose[idx], ref_images.shape[-1], device)
    size = ref_images.shape[-1]
    masks = mouth_mask(torch.from_numpy(np.asarray(ref.landmarks[idx], np.float32)[..., :2] * (size / CROP)), size,
                       mouth_margin).to(device)
    colour = ColourStandard.of(ref_images)
    plain = _reconstruction_error(generator, ref_images, ref_labels, renders, render_labels, masks, warp_from, None)
    standard = _reconstruction_error(generator, ref_images, ref_labels, renders, render_labels, masks, warp_from,
                                     colour)
    return colour if standard < (1 - COLOUR_GAIN) * plain else None


@dataclass
class PreparedReference:
    """What the per-frame loop reads (see the module docstring). Arrays in crop pixels unless said otherwise.

    Attributes:
        reference: the :class:`~rhythmhead.data.preprocess.Reference` it was made from.
        shots: ``(K,)`` frame indices of the K references.
        shot_poses: ``(K, 6)`` their poses.
        ref_images: ``(1, K, 3, S, S)`` in [−1, 1] on the device (S = G's image size).
        ref_labels: ``(1, K, 1, S, S)``.
        embedding: G's K-shot embedding (B = 1).
        generator: the G to use (the bundle's, or a fine-tuned copy).
        mesh: the key frame's :class:`~rhythmhead.geometry.mesh.TexturedMesh`.
        key_frontal: ``(68, 3)`` frontal landmarks of the key frame (posed → the render's label).
        anchor_pose: ``(6,)`` the reference's mean pose (the pivot of ``motion_scale`` and the ``still`` pose).
        motion_weight, motion_bias: Φ's layer, ``(1, F, 6)`` and ``(1, 6)`` on the device.
        recenter: the extrapolated poses come from a style, not the reference's own motion: re-centre them on
            ``anchor_pose`` (:meth:`TalkingHeadPipeline.plan`).
        motion_source: "reference", "style:<file>" or "default style".
        motion_std: ``(6,)`` the motion amplitude inference gives Φ's poses (rad, px; :func:`controls.shape_motion`):
            the reference clip's own, the style clip's, or the default style's typical speaker's (None: an older
            style file without it — Φ's amplitude as is); motion_speed: ``(6,)`` its mean |Δ| per frame (the tempo
            the motion may reach, :func:`controls.shape_motion`), None likewise.
        reference_openings: the reference clip's inner-lip openings over its speech frames (crop px), whose
            distribution Ψ's openings are given (:func:`controls.map_openings`); for a photo a typical speaker's
            (the default style's ``opening_quantiles`` × the photo's mouth width), None without them.
        ref_code: ``(n,)`` Ψ's reference input; identity_offset ``(68, 3)``; neutral_code ``(n,)``.
        finetune_history: per-step losses when fine-tuned.
        notes: warnings for the user.
        regions: the video's :class:`~rhythmhead.inference.regions.RegionBank` (None for a photo).
        mouth_net: the bundle's mouth synthesis network, used where there is no region bank (None: G's mouth).
        deform_weights: ``(V, 68)`` how the key frame's mesh follows the landmarks
            (:func:`rhythmhead.geometry.mesh.landmark_weights`); key_model_frontal ``(68, 3)``: the key frame's frontal
            landmarks as the expression model reproduces them (the rest expression the plan's landmarks move from).
        colour: the :class:`ColourStandard` G's inputs (``ref_images`` among them) are moved by, None when G reads
            the reference's own colours.
    """

    reference: object
    shots: np.ndarray
    shot_poses: np.ndarray
    ref_images: torch.Tensor
    ref_labels: torch.Tensor
    embedding: object
    generator: torch.nn.Module
    mesh: object
    key_frontal: np.ndarray
    anchor_pose: np.ndarray
    motion_weight: torch.Tensor
    motion_bias: torch.Tensor
    recenter: bool
    motion_source: str
    motion_std: np.ndarray | None
    motion_speed: np.ndarray | None
    reference_openings: np.ndarray | None
    ref_code: np.ndarray
    identity_offset: np.ndarray
    neutral_code: np.ndarray
    finetune_history: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    regions: object = None
    mouth_net: object = None
    deform_weights: torch.Tensor | None = None
    key_model_frontal: np.ndarray | None = None
    colour: ColourStandard | None = None
    _sources: dict = field(default_factory=dict, repr=False)

    def sources(self, size: int) -> "OutputSources":
        """The full-resolution sources for output frames of ``size``² (made on first use, then kept)."""
        if size not in self._sources:
            self._sources[size] = output_sources(self, size)
        return self._sources[size]

    @property
    def image_size(self) -> int:
        return int(self.ref_images.shape[-1])

    @property
    def is_image(self) -> bool:
        return bool(self.reference.is_image)


@dataclass
class OutputSources:
    """What composing output frames at ``size``² reads (:meth:`PreparedReference.sources`).

    Attributes:
        size: the output side S.
        shots: ``(K, 3, S, S)`` float32 in [−1, 1], the K references (the warping sources).
        texture: ``(T, T, 3)`` uint8, the key frame (the 3-D render's texture), cropped at up to
            :data:`SUPERSAMPLE` × S as far as the source's own pixels go (T = S where they do not reach 1.5 S).
        supersample: the face surface is looked up ``n × n`` per output pixel (n = :data:`SUPERSAMPLE` where
            T ≥ 1.5 S, else 1).
        regions: a :class:`~rhythmhead.inference.regions.RegionTransfer` at S, or None (a photo).
        mouth: a :class:`~rhythmhead.inference.regions.MouthSynthesis` at S where there is no region bank and the
            bundle has a mouth network, else None.
    """

    size: int
    shots: torch.Tensor
    texture: torch.Tensor
    supersample: int = 1
    regions: object = None
    mouth: object = None


def output_sources(prepared: "PreparedReference", size: int) -> OutputSources:
    """Crop the references, the key frame and the region bank's frames at ``size`` from the source (once)."""
    from ..data.preprocess import crops_at
    from .regions import MouthSynthesis, RegionTransfer

    ref = prepared.reference
    key = int(ref.key_frame)
    bank = prepared.regions
    wanted = {key, *(int(i) for i in prepared.shots), *([] if bank is None else bank.frames.tolist())}
    texture_side = int(min(SUPERSAMPLE * size, float(ref.boxes[key][2])))
    supersample = SUPERSAMPLE if texture_side >= 1.5 * size else 1
    texture_side = texture_side if supersample > 1 else size
    at = crops_at(ref, {i: (size, texture_side) if i == key else (size,) for i in wanted})  # one decoding
    crops = {i: at[i, size] for i in wanted}
    texture = at[key, texture_side]
    device = prepared.ref_images.device
    shots = torch.from_numpy(np.stack([crops[int(i)] for i in prepared.shots])).permute(0, 3, 1, 2).float()
    regions = None if bank is None else RegionTransfer(bank, {i: crops[i] for i in bank.frames.tolist()}, size)
    mouth = None
    if regions is None and prepared.mouth_net is not None:
        # the reference mouth from the key frame at the texture's resolution: the network's same mouth crop, cut
        # from the source's sharper pixels where it has them (photo mouth detail at 256² 0.43 → 0.70 of the photo's)
        mouth = MouthSynthesis(prepared.mouth_net, texture, ref.landmarks[key] * (texture.shape[0] / CROP), size)
    return OutputSources(size, (shots / 127.5 - 1.0).to(device), torch.from_numpy(np.ascontiguousarray(texture)),
                         supersample, regions, mouth)


def slice_reference(ref, stop: int):
    """The first ``stop`` frames of a Reference as a Reference (key frame recomputed on them)."""
    from ..geometry.pose import key_frame

    if not 1 <= stop <= len(ref.frames):
        raise ValueError(f"stop must be in 1..{len(ref.frames)}, got {stop}")
    cut = {name: getattr(ref, name)[:stop] for name in ("frames", "landmarks", "mesh", "pose", "frontal", "boxes",
                                                          "found")}
    return dataclasses.replace(ref, **cut, key_frame=key_frame(torch.from_numpy(np.ascontiguousarray(cut["pose"])),
                                                        cut["frontal"]))


def choose_shots(pose: np.ndarray, k: int, start: int) -> np.ndarray:
    """K frame indices spread over head rotation: farthest-point sampling of the rotation vectors from ``start``.

    Fewer than K frames give all frames. The result is sorted.
    """
    n = len(pose)
    if n <= k:
        return np.arange(n)
    rot = np.asarray(pose[:, :3], np.float64)
    chosen = [int(start)]
    dist = np.abs(rot - rot[start]).sum(1)
    for _ in range(k - 1):
        nxt = int(dist.argmax())
        if dist[nxt] <= 0:  # every remaining frame has a chosen pose: spread over time instead
            rest = np.setdiff1d(np.arange(n), chosen)
            chosen += list(rest[np.linspace(0, len(rest) - 1, k - len(chosen)).astype(int)])
            break
        chosen.append(nxt)
        dist = np.minimum(dist, np.abs(rot - rot[nxt]).sum(1))
    return np.array(sorted(set(chosen)), dtype=np.int64)


def to_network_images(frames: np.ndarray, size: int) -> torch.Tensor:
    """``(N, S, S, 3)`` uint8 crops → ``(N, 3, size, size)`` float32 in [−1, 1], resized as G's training data is
    (:func:`rhythmhead.common.warp_crop`; at half the crop that is the 2 × 2 average)."""
    from ..common import warp_crop

    if frames.shape[1] != size:
        scale = size / frames.shape[1]
        affine = np.array([[scale, 0.0, 0.0], [0.0, scale, 0.0]])
        frames = np.stack([warp_crop(f, affine, size) for f in frames])
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def label_maps(landmarks: np.ndarray, size: int) -> torch.Tensor:
    """``(N, 68, 2|3)`` crop-pixel landmarks → ``(N, 1, size, size)`` label maps drawn at G's size."""
    from ..geometry.labelmap import draw_label_map

    return torch.from_numpy(draw_label_map(np.asarray(landmarks, np.float64)[..., :2] * (size / CROP), size))


def motion_reference_inputs(motion, pose: np.ndarray, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What Φ's reference encoder reads for a clip of raw poses ``(τ', 6)`` and its audio at Φ's rate: the audio
    windows ``(τ, 7, S)`` and the smoothed, normalised poses ``(τ, 6)`` float32 of its first ``τ = min(τ',
    motion.tau)`` frames — the same arrays as a training window of that clip starting at frame 0
    (:class:`rhythmhead.training.learner_data.MotionWindows`; test ``test_inference_feeds_phi_the_training_inputs``)."""
    from ..audio.windows import frame_windows, samples_per_frame
    from ..common import smooth

    tau = max(1, min(len(pose), motion.tau))
    spf = samples_per_frame(motion.audio_rate, motion.fps)
    windows = frame_windows(np.asarray(wave, np.float32), len(pose), spf)[:tau]
    norm = (smooth(np.asarray(pose, np.float32), motion.smooth_taps)[:tau] - motion.pose_mean) / motion.pose_std
    return windows, norm.astype(np.float32)


@torch.no_grad()
def encode_motion(motion, pose: np.ndarray, wave: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Φ's layer ``W (1, F, 6)``, ``b (1, 6)`` from :func:`motion_reference_inputs`."""
    windows, norm = motion_reference_inputs(motion, pose, wave)
    w, b = motion.net.encode_reference(torch.from_numpy(windows)[None].to(device), torch.from_numpy(norm)[None].to(device))
    return w, b


@dataclass(frozen=True)
class StyleClip:
    """A motion-style clip read ahead of time: its Reference and its speech ``wave`` at ``rate`` Hz."""

    reference: object
    wave: np.ndarray
    rate: int


def load_style_clip(path, rate: int = 16000) -> StyleClip:
    """Track a style clip and read its speech (InputError when it has no face or no speech)."""
    from .inputs import clip_audio, load_reference

    ref, _ = load_reference(path)
    wave = clip_audio(path, rate, len(ref.pose))
    if wave is None:
        raise InputError("the motion style clip needs speech (it has no audio track or only silence)", path)
    return StyleClip(ref, wave, rate)


# A photo's head moves with a typical speaker's rotation but half its translation: a photo shows one body, which G's
# flow must stretch when the head shifts, and the shifts of a typical speaker (std 6.6 px sideways and up/down in
# the 256² crop) tore the neck and collar of the packaged photo (looked at: a 12.7 px rise smeared the collar and
# the hair); rotations of 2–8° did not.
PHOTO_SHIFT = np.array([1.0, 1.0, 1.0, 0.5, 0.5, 0.5], np.float32)


def _style_from_clip(motion, clip, device):
    """``(W, b, (motion std, motion speed))`` of a style clip (a path or a :class:`StyleClip`) — its poses and its own speech."""
    from .inputs import resample

    style = clip if isinstance(clip, StyleClip) else load_style_clip(clip, motion.audio_rate)
    wave = resample(style.wave, style.rate, motion.audio_rate)
    pose = style.reference.pose
    w, b = encode_motion(motion, pose, wave, device)
    return w, b, motion_amplitude(pose, motion.smooth_taps)


def prepare(bundle, reference, *, reference_wave: np.ndarray | None = None, shots: int = 8,
            motion_style=None, finetune_steps: int = 0, unprojector: str = "mediapipe", seed: int = 0,
            device: str | torch.device = "cpu", notes: list[str] | None = None) -> PreparedReference:
    """Prepare one reference (see the module docstring).

    Args:
        bundle: a loaded :class:`rhythmhead.inference.bundle.Bundle`.
        reference: a :class:`rhythmhead.data.preprocess.Reference`.
        reference_wave: the reference clip's own speech at Φ's rate, covering its frames (None: none usable).
        shots: K for a video (a photo has 1).
        motion_style: None (own motion, else the default style), or a clip (path or :class:`StyleClip`) whose pose
            + speech set the style.
        finetune_steps: test-time fine-tuning steps of a copy of G on the K references (0: none).
        unprojector: ``"mediapipe"`` (the tracked mesh) or ``"network"`` (the bundle's unprojection network).
        seed: fine-tuning draws.
        device: where the tensors live.
        notes: warnings gathered so far (appended to).
    """
    from ..geometry.mesh import build_textured_mesh, landmark_weights, unproject

    notes = list(notes or [])
    ref = reference
    gen_model = bundle.generator
    size = gen_model.image_size
    n_frames = len(ref.frames)
    key = int(ref.key_frame)

    # 1. K references for G, spread over the poses.
    idx = choose_shots(ref.pose, 1 if ref.is_image else max(1, shots), key)
    ref_images = to_network_images(ref.frames[idx], size)[None].to(device)
    ref_labels = label_maps(ref.landmarks[idx], size)[None].to(device)

    # 2. Textured mesh of the key frame.
    if unprojector == "network":
        if bundle.unprojection is None:
            raise InputError("--unprojector network needs unprojection.safetensors in the models folder", bundle.root)
        vertices = unproject(ref.frames[key], "network", bundle.unprojection)
    elif unprojector == "mediapipe":
        vertices = ref.mesh[key]
    else:
        raise ValueError(f"unknown unprojector {unprojector!r}")
    mesh = build_textured_mesh(np.ascontiguousarray(ref.frames[key]), vertices, ref.pose[key]).to(device)

    # 3. Φ's layer: own motion, a style clip, or the bundle's default style.
    motion = bundle.motion
    anchor = ref.pose.mean(0).astype(np.float32)
    if motion_style is not None:
        w, b, amplitude = _style_from_clip(motion, motion_style, device)
        name = motion_style.reference.source if isinstance(motion_style, StyleClip) else motion_style
        source = f"style:{name}"
    elif reference_wave is not None and not ref.is_image and n_frames >= 2:
        w, b = encode_motion(motion, ref.pose, reference_wave, device)
        amplitude = motion_amplitude(ref.pose, motion.smooth_taps)
        source = "reference"
    else:
        if bundle.style is None:
            raise InputError("a photo (or a silent reference video) needs a motion style: pass --motion-style CLIP, "
                             "--pose-from, or --still (the models folder has no motion_style.npz)", bundle.root)
        w = torch.from_numpy(bundle.style.weight)[None].to(device)
        b = torch.from_numpy(bundle.style.bias)[None].to(device)
        amplitude = (bundle.style.pose_std, bundle.style.pose_speed)
        if ref.is_image and amplitude[0] is not None:  # a typical speaker's turns, half its shifts (see PHOTO_SHIFT)
            amplitude = tuple(None if a is None else a * PHOTO_SHIFT for a in amplitude)
        source = "default style"
        if not ref.is_image:
            notes.append(f"{ref.source}: the reference video has no usable speech; its head motion comes from the "
                         "default motion style")

    # 4. Expression: Ψ's reference code, identity offset, neutral code.
    pca = bundle.expression.pca
    frontal = np.asarray(ref.frontal, np.float32)
    identity = np.asarray(pca.identity_offset(frontal), np.float32)
    ref_code = np.asarray(pca.reference_code(frontal, keep_identity=bundle.expression.keep_identity), np.float32)
    neutral = pca.neutral_code
    openings = None
    if not ref.is_image:
        speech = None
        if reference_wave is not None:
            speech = speech_frames(envelope(reference_wave, motion.audio_rate, n_frames, motion.fps))
        openings = reference_openings(frontal, speech)
    elif bundle.style is not None and bundle.style.opening_quantiles is not None:
        # a photo: a typical speaker's openings, at the photo's mouth width
        openings = bundle.style.opening_quantiles.astype(np.float64) * mouth_width(frontal)

    # 5. G: optional fine-tuning of a copy, then the K-shot embedding (once).
    generator = gen_model.frozen if gen_model.frozen is not None else gen_model.net
    history: list = []
    if finetune_steps > 0:
        history, tuned = _finetune(gen_model, ref, idx, mesh, ref_images, ref_labels, finetune_steps, seed, device)
        generator = gen_model.freeze(tuned)
    colour = None if history else choose_colour(generator, ref, idx, mesh, ref_images, ref_labels,
                                                gen_model.mouth_margin, device)
    if colour is not None:
        ref_images = colour.forward(ref_images)  # what G reads; the full-resolution sources keep their colours
    with torch.no_grad():
        embedding = generator.embed_references(ref_images, ref_labels)
    from .regions import region_bank

    key_frontal = np.asarray(ref.frontal[key], np.float32)

    return PreparedReference(
        reference=ref, shots=idx, shot_poses=ref.pose[idx].astype(np.float32), ref_images=ref_images,
        ref_labels=ref_labels, embedding=embedding, generator=generator, mesh=mesh,
        key_frontal=key_frontal, anchor_pose=anchor, motion_weight=w, motion_bias=b,
        recenter=source != "reference", motion_source=source, motion_std=amplitude[0], motion_speed=amplitude[1],
        reference_openings=openings, ref_code=ref_code, identity_offset=identity,
        neutral_code=neutral, finetune_history=history, notes=notes, colour=colour,
        regions=None if ref.is_image else region_bank(np.asarray(ref.frontal), np.asarray(ref.landmarks)),
        mouth_net=bundle.mouth, deform_weights=landmark_weights(mesh, torch.from_numpy(key_frontal)),
        key_model_frontal=np.asarray(pca.decode(pca.encode(key_frontal[None], identity), identity)[0], np.float32))


def render_inputs(mesh, key_frontal: np.ndarray, poses: np.ndarray, size: int, device
                  ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The 3-D-aware render of the key-frame mesh at ``poses (N, 6)`` and its label maps, at G's size.

    The mesh is rasterised at G's size itself and looked up bilinearly in the 256² key frame: inside the face that
    is the 2×2 average the 256² render resized to G's size gives (what G's training data does), only the silhouette's
    pixels differ (measured: 0.5–1.0 grey levels on average) — at a quarter of the rasterisation.

    Returns ``render_images (N, 3, S, S)`` in [−1, 1], ``render_labels (N, 1, S, S)`` (on ``device``) and the
    renders ``(N, S, S, 3)`` uint8.
    """
    from ..geometry.mesh import render_textured
    from ..geometry.pose import apply_pose

    pose_t = torch.from_numpy(np.ascontiguousarray(poses, dtype=np.float32)).to(mesh.vertices.device)
    images, _ = render_textured(mesh, pose_t, size, scale=size / CROP)
    images = images.cpu().numpy()
    lmk = apply_pose(torch.from_numpy(key_frontal).to(pose_t), pose_t).cpu().numpy()
    return to_network_images(images, size).to(device), label_maps(lmk, size).to(device), images


def _finetune(gen_model, ref, idx, mesh, ref_images, ref_labels, steps, seed, device):
    """Fine-tune a copy of G (and D) on the K references; returns ``(history, fine-tuned G)``."""
    from ..geometry.labelmap import mouth_mask
    from ..models.finetune import finetune

    if gen_model.discriminator() is None:
        raise InputError("test-time fine-tuning needs the discriminator, which this generator export lacks",
                         gen_model.path)
    size = gen_model.image_size
    generator, disc = copy.deepcopy(gen_model.net), copy.deepcopy(gen_model.disc)
    render_images, render_labels, _ = render_inputs(mesh, np.asarray(ref.frontal[ref.key_frame], np.float32),
                                                    ref.pose[idx], size, device)
    masks = mouth_mask(torch.from_numpy(np.asarray(ref.landmarks[idx], np.float32)[..., :2] * (size / CROP)), size,
                       gen_model.mouth_margin)
    references = {"ref_images": ref_images, "ref_labels": ref_labels, "render_images": render_images[None],
                  "render_labels": render_labels[None], "mouth_masks": masks[None].to(device),
                  "poses": torch.from_numpy(ref.pose[idx].astype(np.float32))[None].to(device)}
    history = finetune(generator, disc, references, steps=steps, seed=seed)
    return history, generator.eval()
