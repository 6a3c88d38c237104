import numpy as np
import pytest

from rhythmhead.face.landmarks import canonical_68
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


def test_match_amplitude_gives_the_target_spread_and_bounds_excursions():
    rng = np.random.default_rng(0)
    motion = np.cumsum(rng.normal(0, 1, (2000, 2)), 0)
    motion = motion - np.convolve(motion[:, 0], np.ones(200) / 200, "same")[:, None]  # wandering, roughly Gaussian
    track = np.concatenate([0.01 * motion, np.zeros((2000, 1))], 1).astype(np.float32)
    target = np.array([0.05, 0.01, 0.2])
    out = controls.match_amplitude(track, target)
    robust = 1.4826 * np.median(np.abs(out[:, :2] - np.median(out[:, :2], 0)), 0)
    np.testing.assert_allclose(robust, target[:2], rtol=0.15)  # the spread asked for (the soft limit trims a little)
    np.testing.assert_array_equal(out[:, 2], track[:, 2])  # a channel that does not move stays still
    assert np.corrcoef(out[:, 0], track[:, 0])[0, 1] > 0.98  # the same motion, louder (soft-limited peaks)
    spiky = track.copy()
    spiky[1000, 0] += 50 * track[:, 0].std()  # one wild excursion of Φ
    out = controls.match_amplitude(spiky, target)
    assert np.abs(out[:, 0] - np.median(out[:, 0])).max() <= 3.0 * target[0] + 1e-6  # bounded at 3 σ
    np.testing.assert_allclose(np.delete(out[:, 0], 1000), np.delete(controls.match_amplitude(track, target)[:, 0],
                                                                     1000), atol=0.02 * target[0])  # gain kept
    capped = controls.match_amplitude(track, np.array([100.0, 0.01, 0.0]), max_gain=4.0, limit=1e9)
    np.testing.assert_allclose(capped[:, 0] - np.median(capped[:, 0]), 4.0 * (track[:, 0] - np.median(track[:, 0])),
                               rtol=1e-4, atol=1e-7)
    assert controls.match_amplitude(track, None) is track


def test_shape_motion_smooths_then_restores_the_reference_amplitude():
    rng = np.random.default_rng(0)
    slow = np.cumsum(rng.normal(0, 1, (600, 6)), 0)
    slow = controls.smooth(slow - slow.mean(0), 25) * np.array([0.004, 0.003, 0.002, 0.3, 0.2, 0.1])
    damped = (0.2 * slow + rng.normal(0, 0.0005, slow.shape)).astype(np.float32)  # Φ: a damped, jittery copy
    target = 1.4826 * np.median(np.abs(slow - np.median(slow, 0)), 0)
    out = controls.shape_motion(damped, target)
    robust = 1.4826 * np.median(np.abs(out - np.median(out, 0)), 0)
    np.testing.assert_allclose(robust, target, rtol=0.15)
    assert np.abs(np.diff(out, axis=0)).mean() < np.abs(np.diff(damped / 0.2, axis=0)).mean()  # jitter smoothed
    smoothed_only = controls.shape_motion(damped, None)
    assert smoothed_only.std(0)[0] < 0.5 * slow.std(0)[0]  # smoothing alone keeps Φ's damped amplitude


def test_shape_motion_slows_a_quick_motion_to_the_persons_tempo():
    rng = np.random.default_rng(1)
    t = np.arange(400)
    scale = np.array([0.01, 0.01, 0.01, 1.0, 1.0, 1.0])
    quick = ((np.sin(t / 2.0) + 0.5 * np.sin(t / 30.0 + 1.0))[:, None] * scale
             + rng.normal(0, 1e-4, (400, 6))).astype(np.float32)  # Φ: a slow drift under a fast wobble
    slow = np.sin(t / 25.0)[:, None] * np.array([0.05, 0.05, 0.05, 5.0, 5.0, 5.0])  # the person: slow turns
    target_std, target_speed = slow.std(0), np.abs(np.diff(slow, axis=0)).mean(0)
    free = controls.shape_motion(quick, target_std)
    held = controls.shape_motion(quick, target_std, target_speed)
    speed = lambda p: np.mean(np.abs(np.diff(p, axis=0)).mean(0) / target_speed)  # noqa: E731
    assert speed(free) > 1.5 >= speed(held) or speed(held) < 0.5 * speed(free)
    robust = 1.4826 * np.median(np.abs(held - np.median(held, 0)), 0)
    assert (robust > 0.3 * target_std).all()  # still the person's amplitude, not smoothed to a standstill


def test_shape_motion_eases_in_and_out():
    rng = np.random.default_rng(2)
    raw = np.cumsum(rng.normal(0, 1, (200, 6)), 0).astype(np.float32) * 0.01
    raw[:3] += 0.5  # Φ's start transient
    out = controls.shape_motion(raw, np.full(6, 0.05), np.full(6, 0.01))
    center = np.median(out, 0)
    assert np.abs(out[0] - center).max() < 0.2 * np.abs(out[20:-20] - center).max()
    assert np.abs(out[-1] - center).max() < 0.2 * np.abs(out[20:-20] - center).max()


def test_map_openings_gives_the_reference_distribution_and_closes_the_lips():
    """Quantile mapping about the closed mouth: every frame keeps its rank and its mouth shape (the direction from
    the rest code), the openings take the reference's distribution — its closed frames included — and no mouth
    opens more than OPEN_MAX_GAIN times Ψ's."""
    rng = np.random.default_rng(3)
    rest = np.array([0.0, 0.0, 0.0])
    t = np.arange(300)
    # Ψ-like: a mouth that never closes (2 … 4 px), the real one closes a fifth of the time and opens to 5 px
    codes = np.stack([3.0 + np.sin(t / 3.0), 0.3 * np.cos(t / 5.0), 0.1 * rng.normal(size=300)], 1)
    opening = lambda c: np.abs(c[:, 0])  # noqa: E731  (an opening that is a distance: 0 at the rest code)
    real = np.concatenate([np.zeros(60), rng.uniform(1.0, 3.6, 240)])
    out = controls.map_openings(codes, rest, opening, real)
    o_in, o_out = opening(codes), opening(out)
    assert np.all(np.diff(o_out[np.argsort(o_in)]) >= -1e-6)  # ranks kept
    assert np.mean(o_out < 0.1) == pytest.approx(0.2, abs=0.03)  # the reference's share of closed frames
    assert np.all(o_out <= controls.OPEN_MAX_GAIN * o_in + 1e-6)
    ratio = (out - rest) / (codes - rest)
    np.testing.assert_allclose(ratio[:, 1], ratio[:, 0], rtol=1e-5)  # one factor per frame: the same shape
    assert controls.map_openings(codes, rest, opening, None) is codes  # a photo: Ψ's own openings


def test_reference_openings_are_the_speech_frames_openings():
    from rhythmhead.data.pca import open_rate

    frontal = np.repeat(np.asarray(canonical_68(), np.float64)[None], 20, 0)
    frontal[:, 57, 1] += np.linspace(0, 5, 20)  # the lower inner lip drops
    speech = np.arange(20) >= 8
    got = controls.reference_openings(frontal, speech)
    np.testing.assert_allclose(got, open_rate(frontal)[speech])
    np.testing.assert_allclose(controls.reference_openings(frontal, None), open_rate(frontal))
    assert controls.reference_openings(frontal[:1]) is None


def test_rest_in_silence_closes_the_mouth_in_pauses_only():
    codes = np.ones((60, 3), np.float32)
    speech = np.ones(60, bool)
    speech[20:45] = False
    out = controls.rest_in_silence(codes, np.zeros(3), speech)
    np.testing.assert_array_equal(out[speech], codes[speech])  # speech untouched
    assert (out[26:39] == 0).all()  # inside the pause: the rest shape
    assert 0 < out[21, 0] < 1 and 0 < out[43, 0] < 1  # eased in and out
    assert np.all(np.diff(out[20:33, 0]) <= 0)
    assert controls.rest_in_silence(codes, None, speech) is codes
