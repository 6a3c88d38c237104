"""Reading and writing media files: the only module of rhythmhead that opens containers.

Video and compressed audio go through PyAV (FFmpeg's libraries, no ffmpeg binary needed); WAV/FLAC through soundfile;
still images through Pillow (which applies the EXIF orientation a phone photo carries). Every reader turns a missing,
empty, unreadable or corrupt file into one :class:`~rhythmhead.errors.InputError` line that names the file.

Conventions (docs/ARCHITECTURE.md): frames are ``(H, W, 3)`` uint8 RGB; audio is mono float32 in [-1, 1] at the
requested rate (16 kHz by default). Every output file of the project is written through :func:`atomic_path`: it goes to
a temporary name next to its destination and is renamed only when complete, so a failure never leaves a partial file.
"""
from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import soundfile
import soxr

from ..common import FPS, IMAGE_SUFFIXES, atomic_path
from ..errors import InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "MediaInfo",
    "probe",
    "read_image",
    "iter_frames",
    "iter_frames_with_times",
    "read_video",
    "load_audio",
    "write_wav",
    "atomic_path",
    "VideoWriter",
    "write_video",
]


_SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac"})
IMAGE_FPS = float(FPS)
"""The frame rate reported for a still image read as a 1-frame video (the project's frame rate)."""


@dataclass(frozen=True)
class MediaInfo:
    """What a media file holds. Fields of an absent stream are 0.

    Args:
        has_video: the file has a video stream (or is a still image).
        has_audio: the file has an audio stream.
        fps: average video frame rate (frames/s); ``IMAGE_FPS`` for a still image.
        width, height: frame size in pixels (after the rotation a phone video asks for).
        duration_s: container duration in seconds (0 for a still image).
        n_frames: number of video frames (1 for a still image; estimated from duration·fps where the container does not say).
        sample_rate: audio sample rate (Hz).
        channels: audio channels.
        is_image: the file is a still image.
    """

    has_video: bool
    has_audio: bool
    fps: float
    width: int
    height: int
    duration_s: float
    n_frames: int
    sample_rate: int
    channels: int
    is_image: bool = False


# --------------------------------------------------------------------------------------------------------------------
# input checks and opening


def _check_input(path: str | os.PathLike) -> Path:
    """``path`` as a Path after checking that it is an existing, non-empty, readable file."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file", p)
    if p.is_dir():
        raise InputError("is a directory, expected a media file", p)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", p) from None
    if size == 0:
        raise InputError("file is empty", p)
    if not os.access(p, os.R_OK):
        raise InputError("permission denied", p)
    return p


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES


def _ffmpeg_message(exc: Exception) -> str:
    """A short reason from a PyAV error (its strerror, without FFmpeg's errno prefix and the path)."""
    msg = getattr(exc, "strerror", None) or str(exc)
    return str(msg).strip().rstrip(".").lower() or type(exc).__name__


@contextlib.contextmanager
def _open_container(p: Path):
    """Open ``p`` with PyAV for reading; FFmpeg errors become an InputError naming the file."""
    try:
        container = av.open(str(p), mode="r")
    except av.FFmpegError as exc:
        raise InputError(f"not a readable media file ({_ffmpeg_message(exc)})", p) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot open ({exc})", p) from None
    try:
        yield container
    finally:
        container.close()


def _upright(img: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a frame's display rotation (degrees counter-clockwise, a multiple of 90, from its DISPLAYMATRIX)."""
    k = int(round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(img, k=k)) if k else img


def _frame_rotation(frame) -> int:
    try:
        return int(frame.rotation or 0)
    except Exception:  # noqa: BLE001 -- a malformed display matrix: show the frame as stored
        return 0


# --------------------------------------------------------------------------------------------------------------------
# probing


def _first_frame_rotation(container, stream, p: Path) -> int:
    """Decode the first frame of ``stream`` (proving the video is decodable) and return its display rotation."""
    try:
        for frame in container.decode(stream):
            return _frame_rotation(frame)
    except av.FFmpegError as exc:
        raise InputError(f"corrupt video data ({_ffmpeg_message(exc)})", p) from None
    raise InputError("video track has no decodable frames", p)


def probe(path: str | os.PathLike) -> MediaInfo:
    """Describe a video, audio or image file from its headers.

    Only the first video frame is decoded (to prove the video decodes and to read its display rotation); an image is
    decoded to read its upright size.

    Raises:
        InputError: missing path, empty file, not a media file, corrupt container.
    """
    p = _check_input(path)
    if _is_image(p):
        h, w, _ = read_image(p).shape
        return MediaInfo(True, False, IMAGE_FPS, w, h, 0.0, 1, 0, 0, is_image=True)
    with _open_container(p) as c:
        v = c.streams.video[0] if c.streams.video else None
        a = c.streams.audio[0] if c.streams.audio else None
        if v is None and a is None:
            raise InputError("has no video or audio stream", p)
        duration = float(c.duration / av.time_base) if c.duration is not None else 0.0
        fps, width, height, n_frames = 0.0, 0, 0, 0
        if v is not None:
            rate = v.average_rate or v.guessed_rate or v.base_rate
            fps = float(rate) if rate else 0.0
            width, height = int(v.codec_context.width), int(v.codec_context.height)
            if _first_frame_rotation(c, v, p) % 180:
                width, height = height, width
            if v.duration is not None and v.time_base is not None:
                duration = max(duration, float(v.duration * v.time_base))
            n_frames = int(v.frames) if v.frames else int(round(duration * fps))
        sample_rate = int(a.codec_context.sample_rate) if a is not None else 0
        channels = int(a.codec_context.channels) if a is not None else 0
        if a is not None and duration == 0.0 and a.duration is not None and a.time_base is not None:
            duration = float(a.duration * a.time_base)
    return MediaInfo(v is not None, a is not None, fps, width, height, duration, n_frames, sample_rate, channels)


# --------------------------------------------------------------------------------------------------------------------
# images and video frames


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A still image as ``(H, W, 3)`` uint8 RGB (EXIF orientation applied, alpha dropped, grey expanded).

    Raises:
        InputError: missing, empty or undecodable image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = _check_input(path)
    try:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except UnidentifiedImageError:
        raise InputError("not a readable image", p) from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated/corrupt data
        raise InputError(f"corrupt image ({exc})", p) from None


def iter_frames_with_times(path: str | os.PathLike) -> Iterator[tuple[np.ndarray, float]]:
    """Decode a video (or a still image) frame by frame.

    Yields:
        ``(frame, t)``: frame ``(H, W, 3)`` uint8 RGB and its presentation time in seconds from the stream start (an image
        yields one frame at t = 0). Use the times to resample a variable- or odd-rate video to 25 fps.

    Raises:
        InputError: missing/empty/corrupt file, no video stream, undecodable data.
    """
    p = _check_input(path)
    if _is_image(p):
        yield read_image(p), 0.0
        return
    with _open_container(p) as c:
        if not c.streams.video:
            raise InputError("has no video track", p)
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        start = stream.start_time if stream.start_time is not None else 0
        tb = stream.time_base or Fraction(1, 1)
        rate = stream.average_rate or stream.guessed_rate or 25
        index = 0
        try:
            for frame in c.decode(stream):
                if frame.pts is not None:
                    t = float((frame.pts - start) * tb)
                else:
                    t = index / float(rate)
                img = _upright(frame.to_ndarray(format="rgb24"), _frame_rotation(frame))
                index += 1
                yield img, t
        except av.FFmpegError as exc:
            raise InputError(f"corrupt video data after {index} frames ({_ffmpeg_message(exc)})", p) from None
        if index == 0:
            raise InputError("video track has no decodable frames", p)
        declared = int(stream.frames or 0)
        # FFmpeg decodes a cut-off file silently up to where its data ends; an edit list may hide a frame or two
        if declared and index < declared - max(1, declared // 100):
            raise InputError(f"truncated or corrupt: decoded {index} of {declared} video frames", p)


def iter_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Decode a video (or a still image) frame by frame as ``(H, W, 3)`` uint8 RGB arrays (see iter_frames_with_times)."""
    for frame, _ in iter_frames_with_times(path):
        yield frame


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a whole video (or a still image as one frame) into memory.

    Args:
        path: a video container or an image file.
        max_frames: stop after this many frames (None: all).

    Returns:
        ``(frames, fps)``: frames ``(T, H, W, 3)`` uint8 RGB, fps the stream's average frame rate (``IMAGE_FPS`` for an image).

    Raises:
        InputError: see :func:`iter_frames_with_times`.
    """
    p = _check_input(path)
    info = probe(p)
    if not info.has_video:
        raise InputError("has no video track", p)
    frames = []
    for frame in iter_frames(p):
        if max_frames is not None and len(frames) >= max_frames:
            break
        frames.append(frame)
    return np.stack(frames), float(info.fps or IMAGE_FPS)


# --------------------------------------------------------------------------------------------------------------------
# audio


def _decode_audio_pyav(p: Path) -> tuple[np.ndarray, int]:
    """All audio of the first audio stream as ``(N, C)`` float32 and its sample rate."""
    with _open_container(p) as c:
        if not c.streams.audio:
            raise InputError("has no audio track", p)
        stream = c.streams.audio[0]
        # planar float keeps every channel separate (C, n); rate and layout are kept, soxr resamples afterwards
        resampler = av.AudioResampler(format="fltp")
        chunks: list[np.ndarray] = []
        rate = int(stream.codec_context.sample_rate or 0)
        try:
            for frame in c.decode(stream):
                for out in resampler.resample(frame):
                    rate = int(out.sample_rate)
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
        except av.FFmpegError as exc:
            raise InputError(f"corrupt audio data ({_ffmpeg_message(exc)})", p) from None
        # the container's stream duration excludes the encoder's tail padding (AAC decodes whole 1024-sample frames)
        n_declared = 0
        if stream.duration and stream.time_base:
            n_declared = int(round(float(stream.duration * stream.time_base) * rate))
    if not chunks or rate <= 0:
        return np.zeros((0, 1), np.float32), max(rate, 1)
    channels = min(ch.shape[0] for ch in chunks)
    data = np.concatenate([ch[:channels] for ch in chunks], axis=1).T.astype(np.float32, copy=False)
    if 0 < n_declared < data.shape[0]:
        data = data[:n_declared]
    _check_complete(p, data.shape[0], n_declared, rate)
    return data, rate


def _check_complete(p: Path, n_decoded: int, n_declared: int, rate: int) -> None:
    """FFmpeg and libsndfile decode a cut-off file silently up to where its data ends: refuse audio that is more than
    a quarter of a second and 2 % shorter than its header says (as :func:`iter_frames_with_times` refuses video)."""
    missing = n_declared - n_decoded
    if missing > 0.25 * rate and missing > 0.02 * n_declared:
        raise InputError(f"truncated or corrupt: decoded {n_decoded / rate:.2f} s of the {n_declared / rate:.2f} s of "
                         "audio its header declares; re-export the file", p)


def _wav_declared_frames(p: Path) -> int:
    """The frame count a PCM .wav's header declares (libsndfile reports what is there instead); 0 if unknown."""
    import wave

    try:
        with wave.open(str(p), "rb") as w:
            n = w.getnframes()
    except (wave.Error, EOFError, OSError):
        return 0
    return n if 0 < n < 0x7FFFFFFF // 2 else 0  # streamed wavs leave the size at 0 or 0xFFFFFFFF


def load_audio(path: str | os.PathLike, rate: int = 16000) -> np.ndarray:
    """Load the audio of a file as mono float32 in [-1, 1] at ``rate`` Hz.

    WAV/FLAC are read with soundfile; mp3/m4a/aac/ogg and video containers with PyAV. Any input rate is resampled with
    soxr (high quality); stereo/multichannel is averaged to mono.

    Returns:
        ``(N,)`` float32.

    Raises:
        InputError: missing/empty/unreadable file, no audio stream ("...: has no audio track"), zero-length audio,
            audio cut short of its header's length, NaN or infinite samples.
    """
    p = _check_input(path)
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    data = None
    if p.suffix.lower() in _SOUNDFILE_SUFFIXES:
        try:
            data, src_rate = soundfile.read(str(p), dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, OSError):
            data = None  # an odd codec inside a .wav: let FFmpeg try
        if data is not None:
            _check_complete(p, data.shape[0], _wav_declared_frames(p) if p.suffix.lower() == ".wav" else 0, src_rate)
    if data is None:
        if _is_image(p):
            raise InputError("is an image, it has no audio track", p)
        data, src_rate = _decode_audio_pyav(p)
    if data.shape[0] == 0:
        raise InputError("audio track is empty (zero length)", p)
    if not np.isfinite(data).all():
        raise InputError("audio holds NaN or infinite samples; re-export it (e.g. as 16-bit PCM)", p)
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if src_rate != rate:
        mono = soxr.resample(mono, src_rate, rate, quality="HQ")
    if mono.shape[0] == 0:
        raise InputError("audio track is too short to resample", p)
    return np.clip(np.asarray(mono, dtype=np.float32), -1.0, 1.0)


# --------------------------------------------------------------------------------------------------------------------
# writing


def write_wav(path: str | os.PathLike, wave: np.ndarray, rate: int) -> None:
    """Write mono (N,) or multichannel (N, C) float audio in [-1, 1] as 16-bit PCM WAV, atomically."""
    wave = np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0)
    with atomic_path(path) as tmp:
        soundfile.write(str(tmp), wave, int(rate), subtype="PCM_16", format="WAV")


def _fps_fraction(fps: float | Fraction) -> Fraction:
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return Fraction(fps).limit_denominator(1001)


_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES})


def _refuse_write_error(exc: BaseException, path: Path) -> None:
    """A full disk, a file-size limit or a read-only folder while writing: one InputError line naming the output."""
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
        raise InputError(f"cannot write the video ({os.strerror(exc.errno)}); nothing was left there — free some "
                         "space or choose another output", path) from None


class VideoWriter:
    """Stream frames into an H.264 (yuv420p) mp4, with an optional AAC audio track, written atomically.

    Use as a context manager::

        with VideoWriter("out.mp4", fps=25, audio=wave, sample_rate=16000) as w:
            for frame in frames:
                w.write(frame)          # (H, W, 3) uint8 RGB

    The file goes to a temporary name next to ``path`` and is renamed to ``path`` on a clean exit; on an exception the
    temporary file is removed, so no partial output is ever left under ``path``. The audio (given whole, up front) is
    encoded interleaved with the video, up to the time of the frames written so far; what remains is written at close,
    so the audio track keeps its full length even if it is longer than the video. Odd frame sizes are padded by
    repeating the last row/column (H.264 with yuv420p needs even sizes).

    Args:
        path: output .mp4 (or .mov/.mkv) path.
        fps: frame rate (frames/s).
        audio: mono ``(N,)`` or ``(N, C)`` float audio in [-1, 1] at ``sample_rate``; None for a silent video.
        sample_rate: audio sample rate (Hz).
        crf: H.264 constant rate factor (0 lossless .. 51 worst; 18 is visually lossless).
        preset: x264 speed preset.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 25, audio: np.ndarray | None = None,
                 sample_rate: int = 16000, crf: int = 18, preset: str = "medium"):
        self.path = Path(path)
        self.fps = _fps_fraction(fps)
        self.sample_rate = int(sample_rate)
        self.crf = int(crf)
        self.preset = preset
        self.audio = None
        if audio is not None:
            a = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
            if a.ndim == 2:
                a = a.mean(axis=1)
            if a.ndim != 1:
                raise ValueError(f"audio must be (N,) or (N, C), got shape {np.shape(audio)}")
            self.audio = a if a.size else None
        self.frames_written = 0
        self._atomic = None
        self._container = None
        self._vstream = None
        self._astream = None
        self._audio_pos = 0
        self._size = None  # (H, W) of the input frames

    # -- context management
    def __enter__(self) -> "VideoWriter":
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        try:
            # faststart: the index goes before the data, so that browsers can play the file while it downloads
            self._container = av.open(str(tmp), mode="w", options={"movflags": "+faststart"})
            if self.audio is not None:
                self._astream = self._container.add_stream("aac", rate=self.sample_rate, layout="mono")
                self._astream.codec_context.time_base = Fraction(1, self.sample_rate)
        except BaseException:
            exc_info = __import__("sys").exc_info()
            self._close_container(ok=False)
            self._atomic.__exit__(*exc_info)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        import sys

        ok = exc_type is None
        try:
            if ok:
                self._finish()
            self._close_container(ok=ok)
        except BaseException as failure:
            self._close_container(ok=False)
            self._atomic.__exit__(*sys.exc_info())
            _refuse_write_error(failure, self.path)
            raise
        self._atomic.__exit__(exc_type, exc, tb)
        if exc is not None:
            _refuse_write_error(exc, self.path)
        return False

    # -- writing
    def write(self, frame: np.ndarray) -> None:
        """Append one ``(H, W, 3)`` uint8 RGB frame (all frames must have the size of the first)."""
        if self._container is None:
            raise RuntimeError("VideoWriter.write called outside its 'with' block")
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        if self._vstream is None:
            self._open_video(frame.shape[0], frame.shape[1])
        elif frame.shape[:2] != self._size:
            raise ValueError(f"frame size {frame.shape[:2]} differs from the first frame's {self._size}")
        h, w = self._size
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.frames_written
        vf.time_base = 1 / self.fps
        self._mux(self._vstream.encode(vf))
        self.frames_written += 1
        # interleave: audio up to the end of the frames written so far
        self._write_audio_until(float(self.frames_written / self.fps))

    def _open_video(self, h: int, w: int) -> None:
        self._size = (h, w)
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height = w + w % 2, h + h % 2
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / self.fps
        stream.options = {"crf": str(self.crf), "preset": self.preset}
        self._vstream = stream

    def _write_audio_until(self, t_end: float | None) -> None:
        if self._astream is None:
            return
        n = len(self.audio)
        stop = n if t_end is None else min(n, int(round(t_end * self.sample_rate)))
        chunk = 1024  # the AAC frame size
        while self._audio_pos < stop and (t_end is None or self._audio_pos + chunk <= stop):
            part = self.audio[self._audio_pos:self._audio_pos + chunk]
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(part[None, :]), format="fltp", layout="mono")
            af.sample_rate = self.sample_rate
            af.pts = self._audio_pos
            af.time_base = Fraction(1, self.sample_rate)
            self._mux(self._astream.encode(af))
            self._audio_pos += len(part)

    def _mux(self, packets) -> None:
        for packet in packets:
            self._container.mux(packet)

    def _finish(self) -> None:
        if self._vstream is None:
            raise ValueError(f"{self.path}: no frames were written")
        self._mux(self._vstream.encode(None))
        self._write_audio_until(None)
        if self._astream is not None:
            self._mux(self._astream.encode(None))

    def _close_container(self, ok: bool) -> None:
        if self._container is not None:
            container, self._container = self._container, None
            try:
                container.close()
            except Exception:  # noqa: BLE001
                if ok:
                    raise


def write_video(path: str | os.PathLike, frames, fps: float, audio: np.ndarray | None = None,
                sample_rate: int = 16000, crf: int = 18) -> None:
    """Write ``frames`` (``(T, H, W, 3)`` uint8 or an iterable of ``(H, W, 3)``) as an H.264 mp4 with optional AAC audio."""
    with VideoWriter(path, fps=fps, audio=audio, sample_rate=sample_rate, crf=crf) as writer:
        for frame in frames:
            writer.write(frame)
