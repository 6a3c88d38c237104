"""Chunked generation helpers (rhythmhead.inference.stream): windows on demand, chunked Φ equal to unchunked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rhythmhead.audio.windows import frame_windows
from rhythmhead.inference.stream import (AudioFrames, StageTimer, chunk_ranges, nearest_shots, predict_codes,
                                         predict_poses)


def test_chunk_ranges_cover_everything_once():
    assert list(chunk_ranges(7, 3)) == [(0, 3), (3, 6), (6, 7)]
    assert list(chunk_ranges(0, 3)) == []


@pytest.mark.parametrize("n_samples", [1000, 1600, 2333])
def test_audio_frames_equal_frame_windows_on_any_range(n_samples):
    wave = np.random.default_rng(0).standard_normal(n_samples).astype(np.float32)
    n, spf = 13, 160
    full = frame_windows(wave, n, spf)
    frames = AudioFrames(wave, n, spf)
    for lo, hi in [(0, 13), (0, 4), (5, 9), (11, 13), (12, 13)]:
        np.testing.assert_array_equal(frames.windows(lo, hi), full[lo:hi])


def test_envelope_in_blocks_equals_the_whole_wave_at_once():
    from rhythmhead.audio.windows import envelope, has_sound

    wave = np.random.default_rng(4).standard_normal(16000 * 3 + 123).astype(np.float32) * 0.2
    whole = np.sqrt(np.mean(np.pad(wave.astype(np.float64), (0, 76 * 640 - len(wave))).reshape(76, 640) ** 2, 1))
    np.testing.assert_allclose(envelope(wave, 16000, block=7), whole, rtol=1e-6)  # every frame the wave reaches
    np.testing.assert_allclose(envelope(wave, 16000, 10, block=4), whole[:10], rtol=1e-6)
    assert has_sound(wave, 16000) and not has_sound(wave * 1e-3, 16000) and not has_sound(wave[:0], 16000)


def _tiny_motion():
    from rhythmhead.inference.random_bundle import TINY_MOTION
    from rhythmhead.models.motion import HeadMotionLearner

    torch.manual_seed(0)
    return HeadMotionLearner(**TINY_MOTION).eval()


def test_chunked_phi_equals_one_call():
    net = _tiny_motion()
    rng = np.random.default_rng(1)
    n, spf = 37, net.samples_per_frame
    wave = rng.standard_normal(n * spf).astype(np.float32) * 0.1
    with torch.no_grad():
        w, b = net.encode_reference(torch.from_numpy(frame_windows(wave, n, spf)[:10])[None],
                                    torch.from_numpy(rng.standard_normal((1, 10, 6)).astype(np.float32)))
        whole = net.extrapolate(torch.from_numpy(frame_windows(wave, n, spf))[None], w, b)[0].numpy()
    timer = StageTimer()
    for chunk in (5, 8, 37, 100):
        got = predict_poses(net, w, b, AudioFrames(wave, n, spf), chunk, timer)
        np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-5)
    assert timer.items["phi"] == 4 * n and timer.summary()["phi"]["fps"] > 0


def test_predict_codes_matches_per_frame_calls():
    from rhythmhead.inference.random_bundle import TINY_EXPRESSION
    from rhythmhead.models.expression import ExpressionLearner

    torch.manual_seed(0)
    net = ExpressionLearner(**TINY_EXPRESSION).eval()
    spf = TINY_EXPRESSION["audio_rate"] // 25
    n = 11
    wave = np.random.default_rng(2).standard_normal(n * spf).astype(np.float32) * 0.1
    ref = np.random.default_rng(3).standard_normal(20).astype(np.float32)
    codes = predict_codes(net, ref, AudioFrames(wave, n, spf), chunk=4)
    assert codes.shape == (n, 20) and np.isfinite(codes).all()
    with torch.no_grad():
        one = net(torch.from_numpy(frame_windows(wave, n, spf)[6].reshape(1, -1)), torch.from_numpy(ref)[None])
    np.testing.assert_allclose(codes[6], one[0].numpy(), rtol=1e-5, atol=1e-5)


def test_nearest_shots_picks_the_closest_rotation():
    shots = np.zeros((3, 6), np.float32)
    shots[1, 1], shots[2, 1] = 0.3, -0.3
    poses = np.zeros((3, 6), np.float32)
    poses[:, 1] = [0.25, -0.2, 0.01]
    poses[:, 4] = 50  # translation is ignored
    assert nearest_shots(shots, poses).tolist() == [1, 2, 0]
