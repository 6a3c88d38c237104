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
