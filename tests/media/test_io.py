"""media/io.py: round trips through real encoders, audio loading at any rate/layout, bad inputs, atomic writes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile

from rhythmhead.errors import InputError
from rhythmhead.media import io

RATE = 16000


def _frames(n: int, h: int = 64, w: int = 80) -> np.ndarray:
    """Frames with a moving bright square and a per-frame red level, easy to tell apart after compression."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    for t in range(n):
        frames[t, :, :, 0] = (t * 7) % 256
        frames[t, 10:30, t % (w - 20):t % (w - 20) + 20, 1] = 255
    return frames


def _sine(seconds: float, rate: int = RATE, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _write_m4a(path: Path, wave: np.ndarray, rate: int, layout: str = "stereo") -> None:
    """An AAC .m4a written directly with PyAV (independent of io.VideoWriter)."""
    channels = 2 if layout == "stereo" else 1
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=rate, layout=layout)
        planar = np.ascontiguousarray(np.repeat(wave[None, :], channels, axis=0))
        for i in range(0, planar.shape[1], 1024):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, i:i + 1024]), format="fltp", layout=layout)
            f.sample_rate, f.pts, f.time_base = rate, i, Fraction(1, rate)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


@pytest.fixture(scope="module")
def av_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("io") / "sine.mp4"
    io.write_video(path, _frames(50), fps=25, audio=_sine(2.0), sample_rate=RATE)
    return path


def test_written_mp4_reads_back(av_file):
    info = io.probe(av_file)
    assert info.has_video and info.has_audio and not info.is_image
    assert (info.width, info.height, info.fps, info.n_frames) == (80, 64, 25.0, 50)
    assert abs(info.duration_s - 2.0) < 0.05 and info.sample_rate == RATE and info.channels == 1
    frames, fps = io.read_video(av_file)
    assert frames.shape == (50, 64, 80, 3) and frames.dtype == np.uint8 and fps == 25.0
    err = np.abs(frames.astype(int) - _frames(50).astype(int)).mean()
    assert err < 4, err  # crf 18 is near-lossless
    times = [t for _, t in io.iter_frames_with_times(av_file)]
    np.testing.assert_allclose(times, np.arange(50) / 25.0, atol=1e-6)
    assert io.read_video(av_file, max_frames=7)[0].shape[0] == 7


def test_written_audio_survives_aac(av_file):
    wave = io.load_audio(av_file)
    sine = _sine(2.0)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - len(sine)) <= 1024  # at most one AAC frame of difference
    n = min(len(wave), len(sine))
    assert np.corrcoef(wave[:n], sine[:n])[0, 1] > 0.9


def test_audio_longer_than_video_is_kept_whole(tmp_path):
    path = tmp_path / "long_audio.mp4"
    with io.VideoWriter(path, fps=25, audio=_sine(1.0), sample_rate=RATE) as w:
        for frame in _frames(10):  # 0.4 s of video
            w.write(frame)
        assert w.frames_written == 10
    assert abs(len(io.load_audio(path)) - RATE) <= 1024
    assert io.probe(path).n_frames == 10


def test_display_rotation_is_applied(tmp_path):
    """A phone video stored landscape with a 90° display matrix reads back upright (as ffmpeg's autorotate shows it)."""
    frame = np.zeros((64, 80, 3), np.uint8)
    frame[:10, :20, 0] = 255  # red block at the stored top-left
    path = tmp_path / "rot.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 80, 64, "yuv420p"
        s.set_display_rotation(90)  # counter-clockwise
        for i in range(3):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, 25)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    info = io.probe(path)
    assert (info.width, info.height) == (64, 80)
    frames, _ = io.read_video(path)
    assert frames.shape == (3, 80, 64, 3)
    ys, xs = np.nonzero(frames[0, :, :, 0] > 150)
    assert ys.min() >= 58 and xs.max() <= 11  # rotated counter-clockwise: the block is now at the bottom-left


def test_odd_frame_size_is_padded_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    io.write_video(path, _frames(5, h=33, w=45), fps=25)
    frames, _ = io.read_video(path)
    assert frames.shape == (5, 34, 46, 3)
    assert io.probe(path).has_audio is False


def test_non_integer_fps(tmp_path):
    path = tmp_path / "ntsc.mp4"
    io.write_video(path, _frames(30), fps=30000 / 1001)
    info = io.probe(path)
    assert abs(info.fps - 29.97) < 0.01 and info.n_frames == 30


@pytest.mark.parametrize("rate,channels", [(16000, 1), (44100, 2), (8000, 1), (48000, 2)])
def test_load_wav_any_rate_and_layout(tmp_path, rate, channels):
    wave = _sine(1.5, rate=rate, hz=300)
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    path = tmp_path / f"s{rate}_{channels}.wav"
    soundfile.write(path, data, rate)
    out = io.load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - 1.5 * RATE) <= 2
    ref = _sine(1.5, rate=RATE, hz=300)
    assert np.corrcoef(out[100:-100], ref[100:len(out) - 100])[0, 1] > 0.99
    assert out.max() <= 1.0 and out.min() >= -1.0


def test_stereo_is_averaged(tmp_path):
    left, right = _sine(1.0, hz=200), np.zeros(RATE, np.float32)
    path = tmp_path / "lr.wav"
    soundfile.write(path, np.stack([left, right], axis=1), RATE, subtype="FLOAT")
    np.testing.assert_allclose(io.load_audio(path), left / 2, atol=1e-6)


def test_load_m4a_at_16k(tmp_path):
    path = tmp_path / "speech.m4a"
    _write_m4a(path, _sine(1.2, rate=44100, hz=500), 44100)
    out = io.load_audio(path, rate=RATE)
    assert abs(len(out) / RATE - 1.2) < 0.03
    ref = _sine(1.2, rate=RATE, hz=500)
    n = min(len(out), len(ref))
    assert np.corrcoef(out[:n], ref[:n])[0, 1] > 0.9
    assert io.probe(path).has_audio and not io.probe(path).has_video


def test_write_wav_round_trip(tmp_path):
    path = tmp_path / "w.wav"
    io.write_wav(path, _sine(0.5), RATE)
    np.testing.assert_allclose(io.load_audio(path), _sine(0.5), atol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["w.wav"]


def test_read_image(tmp_path):
    from PIL import Image

    img = _frames(1)[0]
    Image.fromarray(img).save(tmp_path / "a.png")
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.png"), img)
    frames, fps = io.read_video(tmp_path / "a.png")
    assert frames.shape == (1, 64, 80, 3) and fps == io.IMAGE_FPS
    info = io.probe(tmp_path / "a.png")
    assert info.is_image and (info.width, info.height, info.n_frames) == (80, 64, 1)
    Image.fromarray(img).convert("LA").save(tmp_path / "grey.png")
    assert io.read_image(tmp_path / "grey.png").shape == (64, 80, 3)


# ---------------------------------------------------------------------------------------------------- bad inputs
def _write_mp4_index_at_end(path: Path, frames: np.ndarray) -> None:
    """An mp4 with its index (moov) after the data, as most cameras write it (io writes it first: faststart)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, 25)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def _bad_files(tmp: Path, av_file: Path) -> dict[str, Path]:
    files = {"missing": tmp / "nope.mp4", "empty": tmp / "empty.mp4", "text": tmp / "text.mp4",
             "text_wav": tmp / "text.wav", "truncated": tmp / "trunc.mp4", "truncated_end_index": tmp / "trunc2.mp4",
             "bad_png": tmp / "bad.png"}
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not a video\n" * 50)
    files["text_wav"].write_text("this is not a sound\n" * 50)
    data = av_file.read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    full = tmp / "full.mp4"
    _write_mp4_index_at_end(full, _frames(20))
    data = full.read_bytes()
    files["truncated_end_index"].write_bytes(data[: len(data) // 2])
    files["bad_png"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    return files


_BAD_KINDS = ["missing", "empty", "text", "text_wav", "truncated", "truncated_end_index", "bad_png"]


# a cut-off file with its index first ("truncated") probes fine (probe reads only the index); decoding finds the cut
@pytest.mark.parametrize("kind,reader", [(k, r) for k in _BAD_KINDS for r in ("probe", "read_video", "load_audio")
                                         if (k, r) != ("truncated", "probe")])
def test_bad_inputs_raise_input_error(tmp_path, av_file, kind, reader):
    path = _bad_files(tmp_path, av_file)[kind]
    with pytest.raises(InputError) as info:
        getattr(io, reader)(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg


def test_directory_is_input_error(tmp_path):
    with pytest.raises(InputError, match="directory"):
        io.probe(tmp_path)


def test_audio_only_file_as_video(tmp_path):
    path = tmp_path / "voice.m4a"
    _write_m4a(path, _sine(0.5), RATE, layout="mono")
    with pytest.raises(InputError, match="has no video track") as info:
        io.read_video(path)
    assert str(path) in str(info.value)
    with pytest.raises(InputError, match="has no video track"):
        next(io.iter_frames(path))


def test_video_without_audio_to_load_audio(tmp_path):
    path = tmp_path / "silent.mp4"
    io.write_video(path, _frames(3), fps=25)
    with pytest.raises(InputError, match=r"silent\.mp4: has no audio track"):
        io.load_audio(path)


def test_zero_length_wav(tmp_path):
    path = tmp_path / "zero.wav"
    soundfile.write(path, np.zeros(0, np.float32), RATE)
    with pytest.raises(InputError, match="empty"):
        io.load_audio(path)


@pytest.mark.media
def test_media_dir_clip(media_dir):
    clip = media_dir / "talking_video" / "hdtf_radio10_clip0.mp4"  # 2.1 s, 29.97 fps, 16 kHz mono AAC
    info = io.probe(clip)
    assert info.has_video and info.has_audio and abs(info.fps - 29.97) < 0.01
    frames, fps = io.read_video(clip)
    assert frames.shape[1:] == (info.height, info.width, 3) and fps == info.fps
    assert abs(frames.shape[0] - info.n_frames) <= 1  # this clip's last packet does not decode to a frame
    times = [t for _, t in io.iter_frames_with_times(clip)]
    assert np.all(np.diff(times) > 0) and abs(times[-1] + 1 / fps - info.duration_s) < 0.1
    wave = io.load_audio(clip)
    assert abs(len(wave) / RATE - info.duration_s) < 0.1 and 0.01 < np.abs(wave).max() <= 1


@pytest.mark.media
def test_media_dir_stereo_44k_and_m4a(media_dir):
    clip = media_dir / "talking_video" / "vr_aoc.mp4"  # aac 44.1 kHz stereo
    info = io.probe(clip)
    assert info.sample_rate == 44100 and info.channels == 2
    assert abs(len(io.load_audio(clip)) / RATE - info.duration_s) < 0.1
    m4a = media_dir / "speech" / "sp_dt_acknowledgement_english.m4a"
    wave = io.load_audio(m4a)
    assert abs(len(wave) / RATE - io.probe(m4a).duration_s) < 0.1
    assert not io.probe(m4a).has_video


# ---------------------------------------------------------------------------------------------------- atomic writes
def test_exception_mid_write_leaves_nothing(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with io.VideoWriter(path, fps=25, audio=_sine(1.0)) as w:
            for frame in _frames(10):
                w.write(frame)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_only_on_success(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("old")
    with pytest.raises(ValueError):
        with io.atomic_path(path) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".txt" and tmp != path
            tmp.write_text("half")
            raise ValueError
    assert path.read_text() == "old" and len(list(tmp_path.iterdir())) == 1
    with io.atomic_path(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and len(list(tmp_path.iterdir())) == 1
    assert os.stat(path).st_mode & 0o044  # readable like a normal file, not mkstemp's 0600


def test_unwritable_destination_is_input_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write here"):
        io.write_wav(blocker / "sub" / "a.wav", _sine(0.1), RATE)  # a parent that is a file
    with pytest.raises(InputError, match="is a directory"):
        io.write_video(tmp_path, _frames(2), fps=25)


def test_killed_mid_write_leaves_no_output(tmp_path):
    path = tmp_path / "killed.mp4"
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from rhythmhead.media import io
        with io.VideoWriter({str(path)!r}, fps=25) as w:
            frame = np.zeros((64, 64, 3), np.uint8)
            for i in range(100000):
                w.write(frame)
                if i == 5:
                    print("writing", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not path.exists()
