"""audio/windows.py: exact window contents, edge padding, sizes at 16 and 50 kHz, envelope, onsets on a click train."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rhythmhead.audio import windows as W


def test_num_frames_and_samples_per_frame():
    assert W.samples_per_frame(16000) == 640 and W.samples_per_frame(50000) == 2000
    assert W.num_frames(16000, 16000) == 25
    assert W.num_frames(16001, 16000) == 26  # a partial last chunk still gets a frame
    assert W.num_frames(0, 16000) == 0
    assert W.num_frames(100000, 50000) == 50
    with pytest.raises(ValueError):
        W.samples_per_frame(44100, fps=30000 / 1001)


def test_windows_on_a_ramp_are_exact():
    s, t = 4, 6
    wave = np.arange(t * s, dtype=np.float32)  # chunk c holds values c*s .. c*s+s-1
    win = W.frame_windows(wave, t, s)
    assert win.shape == (t, 7, s) and win.dtype == np.float32
    for frame in range(t):
        for j, c in enumerate(range(frame - 3, frame + 4)):
            c = min(max(c, 0), t - 1)  # edge padding repeats the first/last chunk
            np.testing.assert_array_equal(win[frame, j], np.arange(c * s, c * s + s))
    # the centre of every window is the frame's own chunk
    np.testing.assert_array_equal(win[:, 3].reshape(-1), wave)
    # first window: chunk 0 four times then chunks 1..3; last window: chunks T-4..T-1 then T-1 three times
    assert [int(w[0]) // s for w in win[0]] == [0, 0, 0, 0, 1, 2, 3]
    assert [int(w[0]) // s for w in win[-1]] == [2, 3, 4, 5, 5, 5, 5]


def test_wave_is_padded_or_cut_to_t_times_s():
    s = 5
    short = np.ones(12, np.float32)  # 2.4 chunks for T = 3: the rest is zero
    win = W.frame_windows(short, 3, s)
    np.testing.assert_array_equal(win[2, 3], [1, 1, 0, 0, 0])
    long = np.arange(100, dtype=np.float32)
    win = W.frame_windows(long, 3, s)
    assert win.max() == 14  # samples beyond T·S are dropped


def test_single_frame_and_custom_context():
    win = W.frame_windows(np.arange(3, dtype=np.float32), 1, 3, before=2, after=1)
    assert win.shape == (1, 4, 3)
    assert (win == np.arange(3)).all()


@pytest.mark.parametrize("rate,s", [(16000, 640), (50000, 2000)])
def test_shapes_at_paper_and_code_rates(rate, s):
    wave = np.random.default_rng(0).uniform(-1, 1, int(2.3 * rate)).astype(np.float32)
    t = W.num_frames(len(wave), rate)
    assert W.samples_per_frame(rate) == s
    win = W.frame_windows(wave, t, s)
    assert win.shape == (58, 7, s)
    np.testing.assert_array_equal(win[10, 3], wave[10 * s:11 * s])
    np.testing.assert_array_equal(win[10, 0], wave[7 * s:8 * s])


def test_torch_input_keeps_type_and_matches_numpy():
    wave = np.random.default_rng(1).standard_normal(3000).astype(np.float32)
    ref = W.frame_windows(wave, 5, 640)
    out = W.frame_windows(torch.from_numpy(wave), 5, 640)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), ref)
    assert W.frame_windows(torch.from_numpy(wave).double(), 5, 640).dtype == torch.float64


def test_bad_window_arguments():
    with pytest.raises(ValueError):
        W.frame_windows(np.zeros((2, 3)), 1, 3)
    with pytest.raises(ValueError):
        W.frame_windows(np.zeros(10), 0, 3)


def test_envelope_follows_level():
    rate, s = 16000, 640
    t = np.arange(10 * s) / rate
    amp = np.repeat(np.linspace(0.0, 1.0, 10), s)
    wave = (amp * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)  # 1 kHz: whole periods per chunk
    env = W.envelope(wave, rate, 10)
    assert env.shape == (10,) and env.dtype == np.float32
    np.testing.assert_allclose(env, np.linspace(0, 1, 10) / np.sqrt(2), atol=1e-3)
    assert W.envelope(wave, rate, 12)[-2:].tolist() == [0.0, 0.0]


def _click_train(rate: int, seconds: float, period_s: float, first_s: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    wave = 0.001 * rng.standard_normal(int(seconds * rate))
    times = np.arange(first_s, seconds - 0.05, period_s)
    for t0 in times:
        i = int(t0 * rate)
        n = int(0.01 * rate)
        wave[i:i + n] += 0.8 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.002 * rate))
    return wave.astype(np.float32), times


@pytest.mark.parametrize("rate", [16000, 50000])
def test_onsets_on_a_click_train(rate):
    wave, times = _click_train(rate, 4.0, 0.37, 0.21)
    t = W.num_frames(len(wave), rate)
    onsets = W.onset_frames(wave, rate, t)
    expected = np.floor(times * 25).astype(int)
    assert onsets.dtype == np.int64 and len(onsets) == len(expected), (onsets, expected)
    assert np.abs(onsets - expected).max() <= 1


def test_no_onsets_in_silence_or_steady_tone():
    rate = 16000
    assert W.onset_frames(np.zeros(rate, np.float32), rate, 25).size == 0
    tone = 0.5 * np.sin(2 * np.pi * 220 * np.arange(2 * rate) / rate)
    ramp = np.minimum(1, np.arange(tone.size) / (0.005 * rate))  # one onset at the start, none after
    onsets = W.onset_frames((tone * ramp).astype(np.float32), rate, 50)
    assert onsets.tolist() in ([0], [])


def test_onsets_respect_n_frames():
    rate = 16000
    wave, _ = _click_train(rate, 4.0, 0.37, 0.21)
    assert W.onset_frames(wave, rate, 40).max() < 40
