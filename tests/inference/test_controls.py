import numpy as np

from rhythmhead.inference import controls


def test_scale_motion_zero_holds_anchor_and_one_is_identity():
    rng = np.random.default_rng(0)
    pose = rng.normal(size=(20, 6)).astype(np.float32)
    anchor = pose.mean(0)
    np.testing.assert_allclose(controls.scale_motion(pose, anchor, 0.0), np.repeat(anchor[None], 20, 0), atol=1e-6)
    np.testing.assert_allclose(controls.scale_motion(pose, anchor, 1.0), pose, atol=1e-6)
    doubled = controls.scale_motion(pose, anchor, 2.0)
    np.testing.assert_allclose(doubled.std(0), 2 * pose.std(0), rtol=1e-5)


def test_fit_length_ping_pong_has_no_jump():
    track = np.arange(10, dtype=np.float32)[:, None]
    out = controls.fit_length(track, 35)
    assert out.shape == (35, 1)
    assert np.abs(np.diff(out[:, 0])).max() <= 1.0
    np.testing.assert_array_equal(controls.fit_length(track, 4), track[:4])


def test_smooth_keeps_constant_and_reduces_noise():
    const = np.full((30, 3), 2.5, np.float32)
    np.testing.assert_allclose(controls.smooth(const, 7), const, atol=1e-6)
    noise = np.random.default_rng(1).normal(size=(200, 2)).astype(np.float32)
    assert controls.smooth(noise, 7).std() < 0.7 * noise.std()
    assert controls.smooth(noise, 7).shape == noise.shape


def test_blinks_close_eyes_at_random_times():
    closure = controls.blink_curve(25 * 20, np.random.default_rng(3))
    assert closure.max() > 0.95 and closure.min() == 0.0
    starts = np.flatnonzero((closure[1:] > 0) & (closure[:-1] == 0))
    assert 2 <= len(starts) <= 15  # about one blink every 4 s over 20 s
    face = np.zeros((len(closure), 68, 3), np.float32)
    face[:, [37, 38, 43, 44], 1] = 90.0  # upper lids
    face[:, [41, 40, 47, 46], 1] = 100.0  # lower lids
    out = controls.apply_blinks(face, closure)
    gap = out[:, 41, 1] - out[:, 37, 1]
    assert gap[closure.argmax()] < 1.5 and gap[closure == 0].min() == 10.0


def test_expression_scale():
    codes = np.random.default_rng(2).normal(size=(5, 20)).astype(np.float32)
    neutral = np.zeros(20, np.float32)
    np.testing.assert_allclose(controls.scale_expression(codes, neutral, 0.5), codes * 0.5, atol=1e-6)


def test_match_amplitude_gives_the_target_std_and_keeps_the_timing():
    t = np.arange(200)
    track = np.stack([0.01 * np.sin(t / 7.0), 0.3 + 0.02 * np.cos(t / 11.0), np.zeros(200)], 1).astype(np.float32)
    out = controls.match_amplitude(track, np.array([0.05, 0.01, 0.2]))
    np.testing.assert_allclose(out[:, :2].std(0), [0.05, 0.01], rtol=1e-4)
    np.testing.assert_allclose(out.mean(0)[:2], track.mean(0)[:2], atol=1e-6)  # about its own mean
    np.testing.assert_array_equal(out[:, 2], track[:, 2])  # a channel that does not move stays still
    assert np.corrcoef(out[:, 0], track[:, 0])[0, 1] > 0.999  # the same motion, louder
    capped = controls.match_amplitude(track, np.array([100.0, 0.01, 0.0]), max_gain=4.0)
    np.testing.assert_allclose(capped[:, 0].std(), 4.0 * track[:, 0].std(), rtol=1e-4)
    assert controls.match_amplitude(track, None) is track


def test_shape_motion_smooths_then_restores_the_reference_amplitude():
    rng = np.random.default_rng(0)
    t = np.arange(300)
    slow = np.sin(t / 20.0)[:, None] * np.array([0.04, 0.03, 0.02, 3.0, 2.0, 1.0])
    damped = (0.2 * slow + rng.normal(0, 0.002, slow.shape)).astype(np.float32)  # Φ: a damped, jittery copy
    target = slow.std(0)
    out = controls.shape_motion(damped, target)
    np.testing.assert_allclose(out.std(0), target, rtol=1e-3)
    assert np.abs(np.diff(out, axis=0)).mean() < np.abs(np.diff(damped / 0.2, axis=0)).mean()  # jitter smoothed
    smoothed_only = controls.shape_motion(damped, None)
    assert smoothed_only.std(0)[0] < 0.5 * target[0]  # smoothing alone keeps Φ's damped amplitude
