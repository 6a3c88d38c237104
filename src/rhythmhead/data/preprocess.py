"""Preprocessing of one clip into the store, and the same path for an inference reference (video or photo).

One code path (:func:`track_clip` → :func:`iter_crops` → :func:`clip_geometry`) serves both:

1. track the face on the source frames resampled to 25 fps (``face.track.FaceTracker``: MediaPipe mesh on a region
   around the face, detection when it is lost) → 478-point mesh per frame in source pixels; frames without a face are
   filled by interpolation, a clip without a face in most frames is an InputError;
2. the paper's eye-centred square crop per frame (side 205·d/90, smoothed), kept inside the frame, 256²;
3. the mesh and its 68 landmarks mapped into crop pixels; pose = Kabsch of the 27 stable landmarks onto the canonical
   face (``geometry.pose.estimate_pose``); frontal = R·l + t; key frame = the most frontal frame with open eyes and a closed mouth.

:func:`preprocess_clip` writes ``<out>/<clip_id>/{frames.mp4, audio.wav, track.npz, .done}`` (each file atomically, the
``.done`` marker last) and returns the manifest record; :func:`prepare_reference` keeps everything in memory and adds the
crop boxes for pasting the result back. A photo is a 1-frame clip.
"""
from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import InputError
from ..face.landmarks import canonical_68, mesh_to_68
from ..face.track import (CROP_SIZE, FPS, CropTrack, FaceTracker, crop_boxes, crop_frame, face_size, fill_missing,
                          integer_box, output_frame_count, resampled)
from ..geometry.pose import estimate_pose, frontalize, key_frame
from .store import AUDIO, DONE, FRAMES, TRACK, save_track

__all__ = ["Reference", "track_clip", "iter_crops", "clip_geometry", "preprocess_clip", "prepare_reference",
           "reference_crops",
           "MIN_FACE_PX", "MAX_MISSING"]

MIN_FACE_PX = 40.0  # smallest usable face (the paper's d, source pixels): below it the 256² crop is mostly upsampling
MAX_MISSING = 0.5  # a clip with no face in more than this fraction of its frames is refused


@dataclass(frozen=True)
class Reference:
    """A reference clip or photo prepared for inference (all at 25 fps, crop pixels as docs/ARCHITECTURE.md).

    Args:
        frames: ``(T, 256, 256, 3)`` uint8 crops.
        landmarks: ``(T, 68, 3)`` float32.
        mesh: ``(T, 478, 3)`` float32.
        pose: ``(T, 6)`` float32 rotation vector + translation (frontal = R·l + t).
        frontal: ``(T, 68, 3)`` float32.
        key_frame: the most frontal frame with open eyes and a closed mouth (:func:`rhythmhead.geometry.pose.key_frame`).
        boxes: ``(T, 3)`` int crop squares (x0, y0, side) in source pixels, as cut (for paste-back).
        found: ``(T,)`` bool, frames where a face was actually found (others interpolated).
        source: the input file.
        source_size: (height, width) of the source frames.
        is_image: the input was a still photo.
    """

    frames: np.ndarray
    landmarks: np.ndarray
    mesh: np.ndarray
    pose: np.ndarray
    frontal: np.ndarray
    key_frame: int
    boxes: np.ndarray
    found: np.ndarray
    source: Path
    source_size: tuple[int, int]
    is_image: bool
    fps: float = FPS


def _probe_video(path: Path):
    from ..media.io import probe

    info = probe(path)
    if not info.has_video:
        kind = "an audio-only file" if info.has_audio else "not a video"
        raise InputError(f"has no video track ({kind}); give a video or a photo of a face", path)
    return info


def track_clip(path: str | Path, tracker: FaceTracker | None = None, crop_mode: str = "smooth") -> tuple[CropTrack, object]:
    """Track the face of a video or photo at 25 fps and compute its crop squares.

    Args:
        path: video or image file.
        tracker: a FaceTracker to reuse (it is reset; its mode must suit the input), or None to make one.
        crop_mode: ``"smooth"`` or ``"fixed"`` crop position (see ``face.track.crop_boxes``).

    Returns:
        ``(CropTrack, MediaInfo)``.

    Raises:
        InputError: no video, no face in most frames, a face too small to crop.
    """
    from ..media.io import iter_frames_with_times

    path = Path(path)
    info = _probe_video(path)
    is_image = bool(getattr(info, "is_image", False))
    duration = info.duration_s if info.duration_s and info.duration_s > 0 else info.n_frames / max(info.fps, 1e-6)
    n_out = 1 if is_image else output_frame_count(duration)
    own = tracker is None
    if own:
        tracker = FaceTracker(static_image_mode=is_image)
    else:
        tracker.reset()
    meshes: list[np.ndarray] = []
    times: list[float] = []

    def timed(frames):
        for frame, t in frames:
            times.append(t)
            yield frame, t

    try:
        last_index, last_mesh = -1, None
        for _k, index, frame in resampled(timed(iter_frames_with_times(path)), n_out):
            if index != last_index:
                last_mesh = tracker(frame)
                last_index = index
                size = frame.shape[:2]
            meshes.append(last_mesh if last_mesh is not None else np.full((478, 3), np.nan, np.float32))
        max_faces = tracker.max_faces
    finally:
        if own:
            tracker.close()
    if not meshes:
        raise InputError("has no decodable frames", path)
    if len(times) > 1:  # the container's duration can be the (longer) audio's: keep only the video's own length
        step = float(np.median(np.diff(times)))
        meshes = meshes[:output_frame_count(times[-1] - times[0] + step)]
    mesh = np.stack(meshes)
    found = ~np.isnan(mesh).any(axis=(1, 2))
    if not found.any():
        what = "the image" if len(mesh) == 1 else f"any of its {len(mesh)} frames"
        raise InputError(f"no face found in {what} (a visible human face is needed)", path)
    if found.mean() < 1 - MAX_MISSING:
        raise InputError(f"no face found in {100 * (1 - found.mean()):.0f}% of its {len(mesh)} frames", path)
    mesh, found = fill_missing(mesh)
    lm = mesh_to_68(mesh)
    d = float(np.median(face_size(lm)))
    if d < MIN_FACE_PX:
        raise InputError(f"the face is too small ({d:.0f} px across, need at least {MIN_FACE_PX:.0f} px)", path)
    if max_faces > 1:
        warnings.warn(f"{path}: {max_faces} faces seen; following the largest, most central one", stacklevel=2)
    return CropTrack(mesh_src=mesh.astype(np.float32), found=found, boxes=crop_boxes(lm, mode=crop_mode, frame_size=size),
                     max_faces=max_faces, source_size=size), info


def iter_crops(path: str | Path, track: CropTrack) -> Iterator[np.ndarray]:
    """Decode ``path`` again and yield its 256² crops at 25 fps for ``track`` (frame by frame, constant memory)."""
    from ..media.io import iter_frames_with_times

    n = len(track.boxes)
    for k, _index, frame in resampled(iter_frames_with_times(path), n):
        yield crop_frame(frame, track.boxes[k], CROP_SIZE)


def clip_geometry(track: CropTrack) -> dict:
    """Crop-pixel ``landmarks, mesh, pose, frontal`` (float32) and ``key_frame`` for a tracked clip."""
    mesh = track.mesh_crop()
    lm = mesh_to_68(mesh)
    lm64 = torch.from_numpy(lm).double()
    pose = estimate_pose(lm64, torch.from_numpy(canonical_68()).double())
    frontal = frontalize(lm64, pose)
    return {"landmarks": lm, "mesh": mesh, "pose": pose.float().numpy(), "frontal": frontal.float().numpy(),
            "key_frame": key_frame(pose, frontal.numpy())}


def _clip_audio(path: Path, info, n_frames: int, rate: int) -> np.ndarray | None:
    """The clip's mono audio at ``rate``, trimmed/zero-padded to ``n_frames`` 25 fps frames; None if absent or silent."""
    from ..media.io import load_audio

    if not info.has_audio:
        return None
    wave = load_audio(path, rate)
    from ..audio.windows import has_sound

    if not has_sound(wave, rate):
        return None
    n = int(round(n_frames * rate / FPS))
    return np.pad(wave[:n], (0, max(0, n - len(wave))))


def preprocess_clip(src: str | Path, out_dir: str | Path, clip_id: str, speaker: str, tracker: FaceTracker | None = None,
                    crop_mode: str = "smooth", audio_rate: int = 16000) -> dict:
    """Preprocess one video into ``out_dir/clip_id`` and return its manifest record.

    Writes frames.mp4 (256², 25 fps), audio.wav (mono ``audio_rate``; absent for videos without audio or with digital
    silence), track.npz and finally the ``.done`` marker holding the record. A failure leaves no clip folder behind.

    Returns:
        ``{"id", "source", "frames", "seconds", "has_audio", "speaker"}``.

    Raises:
        InputError: bad or unusable input (see :func:`track_clip`).
    """
    from ..media.io import VideoWriter, atomic_path, write_wav

    src = Path(src)
    clip_dir = Path(out_dir) / clip_id
    track, info = track_clip(src, tracker=tracker, crop_mode=crop_mode)
    geo = clip_geometry(track)
    n = len(track.boxes)
    wave = _clip_audio(src, info, n, audio_rate)
    if clip_dir.exists():
        shutil.rmtree(clip_dir)  # a partial (not .done) earlier attempt
    clip_dir.mkdir(parents=True)
    try:
        written = 0
        with VideoWriter(clip_dir / FRAMES, fps=FPS, preset="veryfast") as writer:
            for crop in iter_crops(src, track):
                writer.write(crop)
                written += 1
        if written != n:
            raise InputError(f"decoded {written} frames on the second pass, {n} on the first", src)
        if wave is not None:
            write_wav(clip_dir / AUDIO, wave, audio_rate)
        save_track(clip_dir / TRACK, **geo, fps=FPS)
        record = {"id": clip_id, "source": str(src.resolve()), "frames": n, "seconds": round(n / FPS, 3),
                  "has_audio": wave is not None, "speaker": speaker}
        with atomic_path(clip_dir / DONE) as tmp:
            tmp.write_text(json.dumps(record, sort_keys=True) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(clip_dir, ignore_errors=True)
        raise
    return record


def prepare_reference(path: str | Path, tracker: FaceTracker | None = None, crop_mode: str = "smooth") -> Reference:
    """Prepare a reference video or photo for inference: crops, landmarks, mesh, pose, frontal, key frame, crop boxes.

    The same code as :func:`preprocess_clip`, kept in memory (a photo gives T = 1).
    """
    path = Path(path)
    track, info = track_clip(path, tracker=tracker, crop_mode=crop_mode)
    frames = np.stack(list(iter_crops(path, track)))
    if len(frames) != len(track.boxes):
        raise InputError(f"decoded {len(frames)} frames on the second pass, {len(track.boxes)} on the first", path)
    geo = clip_geometry(track)
    boxes = np.array([integer_box(b) for b in track.boxes], dtype=np.int64)
    return Reference(frames=frames, landmarks=geo["landmarks"], mesh=geo["mesh"], pose=geo["pose"],
                     frontal=geo["frontal"], key_frame=geo["key_frame"], boxes=boxes, found=track.found, source=path,
                     source_size=track.source_size, is_image=bool(getattr(info, "is_image", False)))


def reference_crops(reference: Reference, indices, size: int) -> dict[int, np.ndarray]:
    """Crops of the reference frames ``indices`` at ``size``² from the source file itself (the boxes the 256² crops were
    cut with; area-averaged when shrinking), for composing output frames at full resolution: ``{index: (size, size,
    3) uint8}``. At 256 these are the reference's own crops."""
    crops = crops_at(reference, {int(i): (size,) for i in indices})
    return {i: crops[i, size] for i in sorted({int(i) for i in indices})}


def crops_at(reference: Reference, wanted: dict[int, tuple[int, ...]]) -> dict[tuple[int, int], np.ndarray]:
    """:func:`reference_crops` of several sizes in one decoding of the source: ``wanted`` maps a frame index to the
    sides it is wanted at → ``{(index, side): (side, side, 3) uint8}``."""
    from ..media.io import IMAGE_SUFFIXES, iter_frames_with_times, read_image

    out: dict[tuple[int, int], np.ndarray] = {}
    todo = {int(i): tuple(int(s) for s in sizes) for i, sizes in wanted.items()}
    for i, sizes in list(todo.items()):  # the 256² crops are the reference's own
        for s in sizes:
            if s == CROP_SIZE:
                out[i, s] = reference.frames[i]
        todo[i] = tuple(s for s in sizes if s != CROP_SIZE)
    todo = {i: sizes for i, sizes in todo.items() if sizes}
    if not todo:
        return out
    src = Path(reference.source)
    if reference.is_image or src.suffix.lower() in IMAGE_SUFFIXES:
        image = read_image(src)
        out.update({(i, s): crop_frame(image, reference.boxes[i], s) for i, sizes in todo.items() for s in sizes})
        return out
    for k, _index, frame in resampled(iter_frames_with_times(src), len(reference.boxes)):
        if k in todo:
            out.update({(k, s): crop_frame(frame, reference.boxes[k], s) for s in todo.pop(k)})
            if not todo:
                break
    if todo:
        raise InputError(f"frames {sorted(todo)[:3]} not found on decoding again", src)
    return out
