"""Ψ network (rhythmhead.models.expression): shapes, gradients, determinism, save/load, flatten sizes."""
from __future__ import annotations

import io

import pytest
import torch

from rhythmhead.models.expression import ExpressionLearner, LogMel, conv_output_length, mel_filterbank

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


MEL = dict(TINY, frontend="mel", n_mels=8, conv_channels=(6, 6), kernel_size=3, stride=1)  # 4 kHz: 7 frames of 25 ms


def test_mel_front_end_shapes_and_filters():
    fb = mel_filterbank(512, 16000, 40)
    peaks = fb.max(1).values  # triangles peak at 1 between FFT bins: every band sees at least one bin well
    assert fb.shape == (40, 257) and torch.all(fb >= 0) and torch.all((peaks > 0.5) & (peaks <= 1))
    centres = fb.argmax(1)
    assert torch.all(centres[1:] > centres[:-1])  # bands in increasing frequency
    mel = LogMel(16000, 40)
    x = torch.randn(2, 4480)
    assert mel(x).shape == (2, 40, mel.n_frames(4480)) == (2, 40, 25)
    net = ExpressionLearner(audio_rate=16000, frontend="mel", conv_channels=(64, 64, 128), kernel_size=3, stride=1,
                            feature_dim=128)
    assert net.flat_dim == 128 * 19 and net(torch.randn(3, 4480), torch.randn(3, 20)).shape == (3, 20)


def test_mel_front_end_follows_the_spectrum_not_the_gain():
    t = torch.arange(4480) / 16000
    low, high = torch.sin(2 * torch.pi * 300 * t)[None], torch.sin(2 * torch.pi * 3000 * t)[None]
    mel = LogMel(16000, 40)
    assert mel(low)[0].mean(1).argmax() < mel(high)[0].mean(1).argmax()  # a higher tone lights a higher band
    speech = low + 0.05 * torch.randn(1, 4480, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(mel(4.0 * speech), mel(speech), atol=1e-3, rtol=0)  # a gain shifts the mean: removed
    torch.manual_seed(0)
    net = ExpressionLearner(**MEL).eval()
    audio, ref = inputs()
    out = net(audio, ref)
    assert out.shape == (3, 5) and torch.isfinite(out).all()
    assert not torch.allclose(out, net(torch.flip(audio, [1]), ref))  # responds to the audio
    with pytest.raises(ValueError, match="frontend"):
        ExpressionLearner(**dict(MEL, frontend="mfcc"))


def test_mel_gradients_and_residual_output():
    torch.manual_seed(0)
    net = ExpressionLearner(**dict(MEL, residual=True))
    audio, ref = inputs()
    net(audio, ref).pow(2).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
    torch.testing.assert_close(net.eval()(audio, ref), ref)  # residual: the reference code + the head's output
