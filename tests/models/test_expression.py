"""Ψ network (rhythmhead.models.expression): shapes, gradients, determinism, save/load, flatten sizes."""
from __future__ import annotations

import io

import pytest
import torch

from rhythmhead.models.expression import ExpressionLearner, conv_output_length

TINY = dict(audio_rate=4000, fps=25, conv_channels=(2, 3, 4), kernel_size=5, stride=2, feature_dim=8,
            n_components=5, dropout=0.2)  # window 7·160 = 1120 samples


def inputs(batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1120, generator=g), torch.randn(batch, 5, generator=g)


def make(seed=0):
    torch.manual_seed(seed)
    return ExpressionLearner(**TINY)


def test_output_shape_and_finite():
    out = make()(*inputs())
    assert out.shape == (3, 5)
    assert torch.isfinite(out).all()


def test_gradients_reach_every_parameter():
    net = make()
    net(*inputs()).pow(2).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_eval_is_deterministic_and_train_uses_dropout():
    net = make()
    x = inputs()
    net.eval()
    assert torch.equal(net(*x), net(*x))
    net.train()
    assert not torch.equal(net(*x), net(*x))


def test_state_dict_round_trip():
    net, other = make(0).eval(), make(1).eval()
    x = inputs()
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    assert not torch.allclose(net(*x), other(*x))
    buf.seek(0)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(net(*x), other(*x))


def test_reference_code_changes_output():
    net = make().eval()
    audio, ref = inputs()
    assert not torch.allclose(net(audio, ref), net(audio, ref + 1.0))


@pytest.mark.parametrize("rate,flat", [(16000, 512 * 16), (50000, 512 * 90)])
def test_paper_flatten_size_follows_the_audio_rate(rate, flat):
    # REFERENCE.md §3: 14000 samples → length 90 after the 7 convs (46 080); 4480 samples at 16 kHz → 16
    assert conv_output_length(7 * rate // 25, 7, 21, 2) * 512 == flat


def test_bad_inputs_raise():
    net = make()
    audio, ref = inputs()
    with pytest.raises(ValueError, match="audio"):
        net(audio[:, :1000], ref)
    with pytest.raises(ValueError, match="ref_code"):
        net(audio, ref[:, :4])
    with pytest.raises(ValueError, match="too short"):
        ExpressionLearner(audio_rate=4000, conv_channels=(2,) * 7, kernel_size=21)
