"""Φ networks (rhythmhead.models.motion): shapes, gradients, determinism, save/load, inference path == training path."""
from __future__ import annotations

import io

import pytest
import torch

from rhythmhead.models.motion import HeadMotionLearner, MotionDiscriminator, motion_statistics

TINY = dict(audio_rate=2000, fps=25, conv_channels=(2, 3), conv_strides=(2, 2), hidden_channels=8, feature_dim=8,
            pose_hidden=8, encoder_channels=8, dropout=0.1)  # S = 80 samples per frame


def inputs(batch=2, frames=20, tau=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 7, 80, generator=g), torch.randn(batch, tau, 6, generator=g)


def make(seed=0):
    torch.manual_seed(seed)
    return HeadMotionLearner(**TINY)


def test_output_shape_and_finite():
    net = make()
    audio, ref = inputs()
    out = net(audio, ref)
    assert out.shape == (2, 12, 6)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("tau", [1, 3, 12, 13, 40])
def test_any_reference_length(tau):
    net = make().eval()
    audio, ref = inputs(frames=tau + 5, tau=tau)
    assert net(audio, ref).shape == (2, 5, 6)


def test_gradients_reach_every_parameter():
    net, disc = make(), MotionDiscriminator()
    audio, ref = inputs()
    loss = net(audio, ref).pow(2).mean() + disc(net(audio, ref)).mean()
    loss.backward()
    for module in (net, disc):
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_eval_is_deterministic_and_train_uses_dropout():
    net = make()
    audio, ref = inputs()
    net.eval()
    assert torch.equal(net(audio, ref), net(audio, ref))
    net.train()
    assert not torch.equal(net(audio, ref), net(audio, ref))


def test_state_dict_round_trip():
    net = make(0).eval()
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    other = make(1).eval()
    audio, ref = inputs()
    assert not torch.allclose(net(audio, ref), other(audio, ref))
    buf.seek(0)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(net(audio, ref), other(audio, ref))


def test_reference_encoded_once_then_extrapolated_equals_forward():
    net = make().eval()
    audio, ref = inputs(frames=30, tau=10)
    weight, bias = net.encode_reference(audio[:, :10], ref)
    assert weight.shape == (2, 8, 6) and bias.shape == (2, 6)
    full = net(audio, ref)
    torch.testing.assert_close(net.extrapolate(audio[:, 10:], weight, bias), full)
    # chunked extrapolation (bounded memory for long audio) gives the same poses in eval mode
    torch.testing.assert_close(net.extrapolate(audio[:, 10:], weight, bias, chunk_frames=6), full)


def test_bad_shapes_raise():
    net = make()
    audio, ref = inputs()
    with pytest.raises(ValueError, match="audio_windows"):
        net(audio[..., :50], ref)
    with pytest.raises(ValueError, match="tau"):
        net(audio[:, :8], ref)
    with pytest.raises(ValueError):
        HeadMotionLearner(audio_rate=16001)


def test_motion_statistics_known_values():
    pose = torch.zeros(1, 4, 6)
    pose[0, :, 0] = torch.tensor([0.0, 1.0, 2.0, 3.0])  # ramp: mean 1.5, velocity 1 with zero spread
    stats = motion_statistics(pose)
    assert stats.shape == (1, 24)
    assert stats[0, 0] == pytest.approx(1.5)
    assert stats[0, 6] == pytest.approx(1.25 ** 0.5, abs=1e-4)  # population std of 0..3
    assert stats[0, 12] == pytest.approx(1.0)
    assert stats[0, 18] == pytest.approx(0.0, abs=1e-2)
    disc = MotionDiscriminator()
    assert disc(pose).shape == (1,)
    with pytest.raises(ValueError):
        disc(pose[:, :1])
