"""TalkingHeadPipeline: a reference clip or photo + speech → a talking-head video (DESIGN.md §1, REFERENCE.md §1).

Load once, call many times::

    pipe = TalkingHeadPipeline.load()                       # the bundled models (or models_dir=...)
    result = pipe(reference="me.mp4", audio="speech.wav")   # validated inputs, reference prepared once
    result.poses, result.landmarks                          # (T, 6), (T, 68, 2) — available before any frame
    result.save("talk.mp4")                                 # frames made and encoded chunk by chunk
    for frame in result.frames(): ...                       # or iterate lazily, (S, S, 3) uint8

Steps of one call:

1. **Reference** (once, :mod:`rhythmhead.inference.reference`): crops, landmarks, pose; K references spread over the
   reference's poses and G's K-shot embedding; the key frame's textured mesh; Φ's layer from the clip's first τ frames of
   pose + speech (a photo: from ``motion_style`` or the bundle's default style); Ψ's reference code and identity offset;
   optional test-time fine-tuning (``finetune_steps``).
2. **Audio** → per-frame windows, cut chunk by chunk (:class:`rhythmhead.inference.stream.AudioFrames`).
3. **Poses**: Φ's extrapolation (a style's poses re-centred on the reference's mean pose), or ``pose_from`` (a video → its tracked head motion, moved onto the reference's mean pose; a ``.npy`` ``(T, 6)`` of
   exact poses), or ``still``;
   then ``motion_scale`` about the reference's mean pose.
4. **Expression**: Ψ's codes (lightly smoothed), or ``expression_from`` (a video → its frontal landmarks → codes);
   ``expression_scale`` about the neutral face; decoded with the reference's identity offset; blinks (``blink``,
   seeded by ``seed``; not added to a driving video's own eyes); posed by the poses → 2-D landmarks → label maps.
5. **3-D render** of the key frame's mesh at each pose, 6. **G** per frame (micro-batches), 7. **encode** to H.264 +
   AAC with the input speech, chunk by chunk; ``paste_back`` puts each frame into the reference's original key frame.

Peak memory does not grow with the audio's length beyond the per-frame plan (~1 KB/frame) and the speech itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..common import FPS
from ..errors import InputError
from .options import GenerationControls
from .stream import AudioFrames, MotionPlan, StageTimer


@dataclass(frozen=True)
class InferenceSettings:
    """How the pipeline runs (not what it makes).

    Args:
        shots: K reference frames for G from a reference video (a photo has 1).
        chunk: frames per streamed chunk (render, G, encode).
        batch: frames per G call.
        code_smooth_taps: Hanning taps smoothing Ψ's per-frame codes over time (1 = none).
        crf: H.264 quality of the output (18 ≈ visually lossless).
        encoder_preset: x264 speed preset.
        full_resolution: compose a linear-composition G's frames at the output size from the source's own pixels
            (and a video's own mouths); False = upsample G's frames (what the pipeline did before; kept as the
            baseline row ``model_upsampled`` of ``evaluate end2end``).
    """

    shots: int = 8
    chunk: int = 25
    batch: int = 4
    code_smooth_taps: int = 1  # 3 taps cost the mel Ψ a fifth of its lip closures (k-fold closure rate 0.26 → 0.20)
    crf: int = 18
    encoder_preset: str = "veryfast"
    full_resolution: bool = True


PRESETS: dict[str, InferenceSettings] = {
    "fast": InferenceSettings(shots=4, chunk=32, batch=8),  # 8 frames a G call: 29.1 vs 26.9 frames/s with 4 (bench)
    "paper": InferenceSettings(shots=8, chunk=50, batch=8),
}


@dataclass
class Result:
    """One generation: the motion plan (available at once) and a lazy, re-iterable frame stream.

    Attributes:
        poses: ``(T, 6)`` head poses (rad, crop px); landmarks: ``(T, 68, 2)`` crop px; codes: ``(T, n)`` or None.
        prepared: the :class:`~rhythmhead.inference.reference.PreparedReference`.
        audio: the driving :class:`~rhythmhead.inference.inputs.AudioInput` (muxed into the video).
        timer: per-stage wall times (:class:`~rhythmhead.inference.stream.StageTimer`), growing as frames are made.
        notes: warnings for the user.
    """

    pipeline: "TalkingHeadPipeline"
    prepared: object
    plan: MotionPlan
    audio: object
    paste_back: bool = False
    size: int = 256
    max_size: int = 1280
    intermediates: Path | None = None
    timer: StageTimer = field(default_factory=StageTimer)
    notes: list[str] = field(default_factory=list)

    @property
    def poses(self) -> np.ndarray:
        return self.plan.poses

    @property
    def landmarks(self) -> np.ndarray:
        return self.plan.landmarks[..., :2]

    @property
    def codes(self) -> np.ndarray | None:
        return self.plan.codes

    @property
    def n_frames(self) -> int:
        return self.plan.n_frames

    def _chunks(self, on_renders: Callable | None = None) -> Iterator[np.ndarray]:
        from .stream import synthesize

        settings = self.pipeline.settings
        paster = None
        size = self.size
        if self.paste_back:
            from .paste import PasteBack, key_frame_source

            ref = self.prepared.reference
            with self.timer("paste"):
                paster = PasteBack(key_frame_source(ref), ref.boxes[ref.key_frame], max_size=self.max_size)
            size = paster.side  # frames are composed at the box's own resolution
        done = 0
        for frames, renders in synthesize(self.prepared, self.plan, chunk=settings.chunk, batch=settings.batch,
                                          mouth_margin=self.pipeline.bundle.generator.mouth_margin, size=size,
                                          full_resolution=settings.full_resolution, timer=self.timer):
            if on_renders is not None:
                on_renders(renders)
            if paster is not None:
                with self.timer("paste", len(frames)):
                    lmk = self.plan.landmarks[done:done + len(frames)]
                    frames = np.stack([paster(f, m) for f, m in zip(frames, lmk)])
            done += len(frames)
            yield frames

    def frames(self) -> Iterator[np.ndarray]:
        """The frames, made lazily chunk by chunk: ``(size, size, 3)`` uint8 (with paste-back the source frame's size,
        capped at ``max_size`` on the long side)."""
        for chunk in self._chunks():
            yield from chunk

    def save(self, path: str | Path, progress: Callable[[int, int], None] | None = None,
             on_frames: Callable[[np.ndarray], None] | None = None) -> Path:
        """Make every frame and encode it (H.264 + AAC of the driving speech) into ``path``, written atomically.

        ``progress(done, total)`` is called after each chunk, ``on_frames(chunk)`` with each chunk's frames
        ``(n, H, W, 3)`` uint8 once they are encoded (e.g. to stream them; an exception from either callback stops
        the save and leaves no file). With ``intermediates`` set, the files of
        :mod:`rhythmhead.inference.intermediates` are written too.
        """
        from contextlib import ExitStack

        from ..media.io import VideoWriter
        from ..audio.windows import envelope

        settings = self.pipeline.settings
        path = Path(path)
        done = 0
        with ExitStack() as stack:
            writer = stack.enter_context(VideoWriter(path, fps=FPS, audio=self.audio.wave, sample_rate=self.audio.rate,
                                                     crf=settings.crf, preset=settings.encoder_preset))
            on_renders = None
            if self.intermediates is not None:
                from .intermediates import IntermediatesWriter, staged_dir

                inter = IntermediatesWriter(stack.enter_context(staged_dir(self.intermediates)), self.n_frames, FPS)
                env = envelope(self.audio.wave, self.audio.rate, self.n_frames)
                inter.begin(self.plan, env, self.describe())
                stack.enter_context(inter)
                on_renders = inter.add_renders
            for chunk in self._chunks(on_renders):
                with self.timer("encode", len(chunk)):
                    for frame in chunk:
                        writer.write(frame)
                done += len(chunk)
                if on_frames is not None:
                    on_frames(chunk)
                if progress is not None:
                    progress(done, self.n_frames)
            if self.intermediates is not None:
                inter.info["timings"] = self.timer.summary()
        return path

    def describe(self) -> dict:
        """Settings of this generation, for summaries and ``info.json``."""
        p = self.prepared
        return {"frames": self.n_frames, "seconds": round(self.audio.seconds, 3), "reference": str(p.reference.source),
                "photo": bool(p.is_image), "shots": [int(i) for i in p.shots], "key_frame": int(p.reference.key_frame),
                "motion": self.plan.info.get("motion"), "expression": self.plan.info.get("expression"),
                "image_size": p.image_size, "finetune_steps": len(p.finetune_history), "paste_back": self.paste_back,
                "size": self.size, "max_size": self.max_size}


class TalkingHeadPipeline:
    """The talking-head pipeline (see the module docstring): networks loaded once, one call per generation.

    Args:
        bundle: a loaded :class:`rhythmhead.inference.bundle.Bundle`.
        device: torch device of every network.
        settings: :class:`InferenceSettings`.
    """

    def __init__(self, bundle, device: str | torch.device = "cpu", settings: InferenceSettings = InferenceSettings()):
        self.bundle = bundle
        self.device = torch.device(device)
        self.settings = settings

    @classmethod
    def load(cls, models_dir: str | Path | None = None, device: str | torch.device = "cpu",
             preset: str | None = None, **overrides) -> "TalkingHeadPipeline":
        """Load every export of a models folder once (default: the bundled models).

        Args:
            models_dir: a bundle folder (:mod:`rhythmhead.inference.bundle`); None = ``rhythmhead/models_bundled``.
            device: e.g. ``"cpu"``, ``"cuda"``.
            preset: ``"fast"`` or ``"paper"`` run settings (:data:`PRESETS`; default ``paper``'s K = 8) — and the
                bundle's ``<preset>/`` sub-folder when it has one.
            overrides: fields of :class:`InferenceSettings`.

        Raises:
            InputError: a missing folder, or a missing/corrupt/wrong-stage checkpoint.
        """
        from dataclasses import replace

        from .bundle import load_bundle
        from .options import check_device

        device = check_device(device)
        if preset is not None and preset not in PRESETS:
            raise InputError(f"unknown preset '{preset}' (known: {', '.join(PRESETS)})")
        settings = replace(PRESETS.get(preset, InferenceSettings()), **overrides)
        return cls(load_bundle(models_dir, device, preset), device, settings)

    # -- step 1 ------------------------------------------------------------------------------------------------------
    def prepare(self, reference, *, reference_audio: np.ndarray | None = None, motion_style=None,
                finetune_steps: int = 0, shots: int | None = None, unprojector: str = "mediapipe", seed: int = 0,
                notes: list[str] | None = None):
        """Prepare a reference once (a path, or a :class:`rhythmhead.data.preprocess.Reference`).

        ``reference_audio``: the reference clip's own speech at Φ's rate (default: read from the reference's file).
        Returns a :class:`~rhythmhead.inference.reference.PreparedReference`, reusable across calls.
        """
        from .inputs import clip_audio, load_reference
        from .reference import prepare

        notes = list(notes or [])
        if isinstance(reference, (str, Path)):
            reference, more = load_reference(reference)
            notes += more
        motion = self.bundle.motion
        if reference_audio is None and not reference.is_image and Path(reference.source).is_file():
            reference_audio = clip_audio(reference.source, motion.audio_rate, len(reference.frames), motion.fps)
        return prepare(self.bundle, reference, reference_wave=reference_audio,
                       shots=shots or self.settings.shots, motion_style=motion_style, finetune_steps=finetune_steps,
                       unprojector=unprojector, seed=seed, device=self.device, notes=notes)

    # -- steps 2–4 ---------------------------------------------------------------------------------------------------
    def plan(self, prepared, audio, *, pose_from=None, expression_from=None, controls: GenerationControls | None = None,
             timer: StageTimer | None = None, **values) -> MotionPlan:
        """Poses, expression codes and landmarks of every frame (see the module docstring, steps 2–4).

        Args:
            prepared: from :meth:`prepare`.
            audio: an :class:`~rhythmhead.inference.inputs.AudioInput`.
            pose_from: exact ``(T', 6)`` poses (array or ``.npy`` path), or a video path / ``PoseTrack`` whose motion is
                applied about the reference's mean pose; cut or ping-ponged to T.
            expression_from: a video path or a Reference whose frontal landmarks drive the expression.
            controls, values: :class:`~rhythmhead.inference.options.GenerationControls` (``values`` override it by
                name); this step reads ``still``, ``motion_scale``, ``expression_scale``, ``blink`` (random blinks
                seeded by ``seed`` added to Ψ's expression) and ``seed``.
        """
        from ..audio.windows import envelope, num_frames, samples_per_frame, speech_frames
        from ..data.pca import open_rate
        from ..geometry.pose import apply_pose
        from . import controls as shape
        from .inputs import PoseTrack, load_pose_track, load_reference, resample
        from .stream import predict_codes, predict_poses

        c = GenerationControls.from_values(values, controls)
        still, motion_scale, expression_scale, blink, seed = c.still, c.motion_scale, c.expression_scale, c.blink, c.seed
        timer = timer or StageTimer()
        n = num_frames(len(audio.wave), audio.rate, FPS)
        motion, expr = self.bundle.motion, self.bundle.expression
        waves: dict[int, AudioFrames] = {}

        def frames_at(rate: int) -> AudioFrames:
            if rate not in waves:
                waves[rate] = AudioFrames(resample(audio.wave, audio.rate, rate), n, samples_per_frame(rate, FPS))
            return waves[rate]

        info, notes = {}, []
        # 3. poses
        anchor = prepared.anchor_pose
        if pose_from is not None:
            source = "pose_from" if isinstance(pose_from, (np.ndarray, PoseTrack)) else f"pose_from:{pose_from}"
            if not isinstance(pose_from, (np.ndarray, PoseTrack)):
                pose_from = load_pose_track(pose_from)
            track = np.asarray(pose_from.poses if isinstance(pose_from, PoseTrack) else pose_from, np.float32)
            if track.ndim != 2 or track.shape[1] != 6 or len(track) == 0 or not np.isfinite(track).all():
                raise InputError(f"pose_from must be finite (T, 6) poses, got shape {track.shape}")
            poses = shape.fit_length(track, n)
            if len(track) < n:
                notes.append(f"--pose-from has {len(track)} poses for {n} frames of speech: they are played forth "
                             "and back to fill it")
            if isinstance(pose_from, PoseTrack) and pose_from.relative:  # a driving video's motion, about our pose
                poses = poses - track.mean(0) + anchor
            info["motion"] = source
        elif still:
            poses = shape.hold_pose(anchor, n)
            info["motion"] = "still"
        else:
            norm = predict_poses(motion.net, prepared.motion_weight, prepared.motion_bias, frames_at(motion.audio_rate),
                                 self.settings.chunk * 4, timer)
            # smoothed, and its amplitude matched to the reference's (or the style's) own motion: Φ says when and which
            # way the head moves, the reference how much (`rhythmhead evaluate motion`, row model_smoothed)
            poses = shape.shape_motion(norm * motion.pose_std + motion.pose_mean, prepared.motion_std,
                                          prepared.motion_speed)
            if prepared.recenter:  # a style's poses sit at the style clip's head position: move them onto ours
                poses = poses - poses.mean(0) + anchor
            info["motion"] = f"phi ({prepared.motion_source})"
        if motion_scale != 1.0:
            poses = shape.scale_motion(poses, anchor, motion_scale)
        poses = np.asarray(poses, np.float32)

        # 4. expression
        pca = expr.pca
        codes = None
        if expression_from is not None:
            driver = expression_from
            if isinstance(driver, (str, Path)):
                driver, _ = load_reference(driver)
            d_frontal = np.asarray(driver.frontal, np.float32)
            d_codes = pca.encode(d_frontal, pca.identity_offset(d_frontal))
            codes = shape.fit_length(np.asarray(d_codes, np.float32), n)
            if len(d_codes) < n:
                notes.append(f"--expression-from has {len(d_codes)} frames for {n} frames of speech: they are played "
                             "forth and back to fill it")
            info["expression"] = f"expression_from:{driver.source}"
        else:
            codes = predict_codes(expr.net, prepared.ref_code, frames_at(expr.audio_rate), self.settings.chunk * 4,
                                  timer)
            # the openings of the reference clip's own mouth (Ψ alone opens about half as wide and seldom closes),
            # its closed mouth in the pauses
            speech = speech_frames(envelope(frames_at(expr.audio_rate).wave, expr.audio_rate, n, FPS))
            codes = shape.shape_expression(codes, self.settings.code_smooth_taps,
                                              lambda c: open_rate(pca.decode(c, prepared.identity_offset)),
                                              prepared.reference_openings, prepared.neutral_code, speech)
            info["expression"] = "psi"
        if expression_scale != 1.0:
            codes = shape.scale_expression(codes, prepared.neutral_code, expression_scale)
        codes = np.asarray(codes, np.float32)
        frontal = np.asarray(pca.decode(codes, prepared.identity_offset), np.float32)
        closure = np.zeros(n, np.float32)
        if blink and expression_from is None:
            closure = shape.blink_curve(n, np.random.default_rng(seed), FPS)
            frontal = shape.apply_blinks(frontal, closure)
        landmarks = apply_pose(torch.from_numpy(frontal), torch.from_numpy(poses)).numpy()
        info.update(motion_scale=motion_scale, expression_scale=expression_scale, blink=bool(blink), seed=seed)
        if notes:
            info["notes"] = notes
        return MotionPlan(poses, codes, frontal, landmarks.astype(np.float32), closure, info)

    # -- the whole call ----------------------------------------------------------------------------------------------
    def __call__(self, reference, audio, *, pose_from=None, motion_style=None, expression_from=None,
                 save_intermediates=None, controls: GenerationControls | None = None, **values) -> Result:
        """Generate a talking head (see the module docstring). Nothing is rendered until the result is iterated/saved.

        Args:
            reference: a video or photo path, a :class:`rhythmhead.data.preprocess.Reference`, or a prepared
                reference from :meth:`prepare` (reused as is; ``motion_style``/``finetune_steps`` then ignored).
            audio: a speech file path or an :class:`~rhythmhead.inference.inputs.AudioInput`.
            pose_from, expression_from: see :meth:`plan`.
            motion_style: a clip (video with speech) whose motion style drives a photo (or overrides a video's own).
            save_intermediates: a folder for poses/landmarks/codes/renders/plots (written by :meth:`Result.save`).
            controls, values: the :class:`~rhythmhead.inference.options.GenerationControls` (``values`` override it
                by name, e.g. ``motion_scale=1.5, seed=3, size=512, paste_back=True``), checked as on the command line.

        Raises:
            InputError: unusable inputs or controls (one line naming the file or the control).
        """
        from .inputs import AudioInput, load_driving_audio
        from .reference import PreparedReference

        c = GenerationControls.from_values(values, controls)
        if pose_from is not None and c.still:
            raise InputError("--pose-from and --still exclude each other")
        if not isinstance(audio, AudioInput):
            audio = load_driving_audio(audio, max_seconds=c.max_seconds)
        timer = StageTimer()
        if isinstance(reference, PreparedReference):
            prepared = reference
        else:
            with timer("reference"):
                prepared = self.prepare(reference, motion_style=motion_style, finetune_steps=c.finetune_steps,
                                        unprojector=c.unprojector, seed=c.seed)
        plan = self.plan(prepared, audio, pose_from=pose_from, expression_from=expression_from, controls=c,
                         timer=timer)
        return Result(self, prepared, plan, audio, paste_back=c.paste_back, size=c.size, max_size=c.max_size,
                      intermediates=Path(save_intermediates) if save_intermediates else None, timer=timer,
                      notes=list(prepared.notes) + plan.info.get("notes", []))
