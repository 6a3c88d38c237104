"""Reading and checking the user's inputs for generation, before any model is loaded (fail fast, DESIGN.md §7).

Each loader turns a path into what the pipeline consumes and raises :class:`~rhythmhead.errors.InputError` — one line
naming the file and the problem — for anything unusable:

* :func:`load_driving_audio` — the speech: decodable, at least :data:`MIN_AUDIO_S`, at most ``max_seconds``
  (default :data:`MAX_AUDIO_S` = 10 min; ``max_seconds=0`` lifts the limit), not silent (some 40 ms frame must reach
  :data:`rhythmhead.audio.windows.SPEECH_DBFS`, −50 dBFS).
* :func:`load_reference` — a video or photo with one usable face (:func:`rhythmhead.data.preprocess.prepare_reference`);
  several faces are not an error: the largest, most central one is followed and a warning says so.
* :func:`load_pose_track` — ``--pose-from``: a ``(T, 6)`` ``.npy`` or a video whose poses are tracked.
* :func:`clip_audio` — the audio of a reference or style clip (None when absent or silent).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

AUDIO_RATE = 16000  # the rate of the output's audio track
MIN_AUDIO_S = 0.5  # shorter speech gives fewer than 13 frames: too short to carry any motion
MAX_AUDIO_S = 600.0  # 10 minutes; generation streams, so the limit is about run time, not memory


@dataclass(frozen=True)
class AudioInput:
    """Decoded speech: mono float32 ``wave (N,)`` at ``rate`` Hz, and where it came from."""

    wave: np.ndarray
    rate: int
    source: str = ""

    def __post_init__(self):
        if np.ndim(self.wave) != 1 or not np.isfinite(self.wave).all():
            raise InputError("audio must be a mono wave of finite samples", self.source or None)

    @property
    def seconds(self) -> float:
        return len(self.wave) / self.rate


def resample(wave: np.ndarray, src: int, dst: int) -> np.ndarray:
    """``wave`` from ``src`` Hz to ``dst`` Hz (soxr, high quality); the same array when the rates are equal."""
    if src == dst:
        return wave
    import soxr

    return np.asarray(soxr.resample(wave, src, dst, quality="HQ"), np.float32)


def check_speech(wave: np.ndarray, rate: int, source: object, max_seconds: float = MAX_AUDIO_S) -> None:
    """Length and silence checks of :func:`load_driving_audio` on an already decoded wave."""
    seconds = len(wave) / rate
    if seconds < MIN_AUDIO_S:
        raise InputError(f"audio is too short ({seconds:.2f} s; the minimum is {MIN_AUDIO_S} s)", source)
    if max_seconds and seconds > max_seconds:
        raise InputError(f"audio is {seconds / 60:.1f} min long, over the limit of {max_seconds / 60:g} min "
                         "(raise it with --max-seconds, 0 = no limit)", source)
    from ..audio.windows import SPEECH_DBFS, has_sound, loudest_dbfs

    if not has_sound(wave, rate):
        raise InputError(f"audio is silent (loudest 40 ms frame at {loudest_dbfs(wave, rate):.0f} dBFS, need "
                         f"≥ {SPEECH_DBFS:.0f} dBFS of speech)", source)


def load_driving_audio(path: str | Path, rate: int = AUDIO_RATE, max_seconds: float = MAX_AUDIO_S) -> AudioInput:
    """The driving speech as mono ``rate`` Hz, checked (see the module docstring)."""
    from ..media.io import load_audio

    wave = load_audio(path, rate)
    check_speech(wave, rate, path, max_seconds)
    return AudioInput(wave, rate, str(path))


def check_reference_file(path: str | Path, what: str = "reference") -> Path:
    """A readable video or image (headers only; the face is checked by :func:`load_reference`)."""
    from ..media.io import probe

    p = Path(path)
    info = probe(p)
    if not info.has_video:
        raise InputError(f"has no video track; the {what} must be a video or a photo of a face", p)
    return p


INPUT_FILES = ("reference", "audio", "pose_from", "expression_from", "motion_style")


def check_input_files(files: dict) -> PoseTrack | None:
    """The cheap checks (headers only) of a generation's input files, the same for ``rhythmhead generate``, its
    ``--jobs`` lines and ``rhythmhead serve``: ``files`` maps :data:`INPUT_FILES` names to paths (None or absent =
    not given; reference and audio are required). The reference, expression source and a video pose source must
    be videos or photos, the audio must have an audio track, a motion style must be a video with speech; a ``.npy``
    pose source is loaded and returned. The InputError raised carries ``field``, the name of the file it is about.
    """
    from ..media.io import IMAGE_SUFFIXES, probe

    def field(name):
        return _InputField(name)

    with field("reference"):
        check_reference_file(files["reference"])
    with field("audio"):
        if not probe(files["audio"]).has_audio:
            raise InputError("has no audio track; give a speech recording", files["audio"])
    pose = files.get("pose_from")
    if pose and Path(pose).suffix.lower() != ".npy":
        with field("pose_from"):
            check_reference_file(pose, "pose source")
    if files.get("expression_from"):
        with field("expression_from"):
            check_reference_file(files["expression_from"], "expression source")
    style = files.get("motion_style")
    if style:
        with field("motion_style"):
            if Path(style).suffix.lower() in IMAGE_SUFFIXES or not probe(style).has_audio:
                raise InputError("a motion style must be a video with speech", style)
    if pose and Path(pose).suffix.lower() == ".npy":
        with field("pose_from"):
            return load_pose_track(pose)
    return None


class _InputField:
    """Tags an InputError raised inside with ``field`` (the input file it is about)."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if isinstance(exc, InputError) and getattr(exc, "field", None) is None:
            exc.field = self.name
        return False


def load_reference(path: str | Path, crop_mode: str = "smooth"):
    """Prepare a reference video or photo (crops, landmarks, mesh, pose, key frame, boxes).

    Returns:
        ``(Reference, warnings)``: :class:`rhythmhead.data.preprocess.Reference` and the warning lines (e.g. several
        faces seen, the largest followed).

    Raises:
        InputError: unreadable file, no face, a face too small.
    """
    from ..data.preprocess import prepare_reference

    check_reference_file(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = prepare_reference(path, crop_mode=crop_mode)
    notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return ref, notes


@dataclass(frozen=True)
class PoseTrack:
    """``--pose-from``: ``poses (T, 6)``; ``relative`` marks a driving video's head motion, which the pipeline applies
    about the reference's own pose (another head's place and angle in its own crop mean nothing for this reference),
    while a ``.npy`` holds exact poses (e.g. saved by ``--save-intermediates``) that are replayed as they are."""

    poses: np.ndarray
    relative: bool


def load_pose_track(path: str | Path) -> PoseTrack:
    """``--pose-from``: ``(T, 6)`` float32 poses from a ``.npy`` file (exact) or tracked from a video (relative)."""
    p = Path(path)
    if p.suffix.lower() == ".npy":
        if not p.is_file():
            raise InputError("no such file", p)
        try:
            pose = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"not a readable .npy file ({str(exc).splitlines()[0][:80]})", p) from None
        if pose.ndim != 2 or pose.shape[1] != 6 or len(pose) == 0:
            raise InputError(f"poses must be a (T, 6) array (rotation vector rad + translation px), got {pose.shape}",
                             p)
        if not np.isfinite(pose).all():
            raise InputError("poses hold NaN or inf", p)
        return PoseTrack(pose.astype(np.float32), relative=False)
    ref, _ = load_reference(p)
    return PoseTrack(ref.pose.astype(np.float32), relative=True)


def clip_audio(path: str | Path, rate: int, n_frames: int, fps: float = 25.0) -> np.ndarray | None:
    """A clip's own audio at ``rate``, cut/zero-padded to ``n_frames`` video frames; None if absent or silent."""
    from ..audio.windows import fit_length, has_sound
    from ..media.io import IMAGE_SUFFIXES, load_audio, probe

    p = Path(path)
    if p.suffix.lower() in IMAGE_SUFFIXES or not probe(p).has_audio:
        return None
    wave = load_audio(p, rate)
    if not has_sound(wave, rate):
        return None
    return fit_length(wave, int(round(n_frames * rate / fps)))
