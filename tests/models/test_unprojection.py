"""Tests for the PRNet-style unprojection network: shapes, gradients, determinism, round trip, loss weighting."""
from __future__ import annotations

import pytest
import torch

from rhythmhead.models.unprojection import UnprojectionNet, position_map_loss

TINY = {"image_size": 64, "base_channels": 2, "output": "sigmoid"}


def _inputs(b=2, size=64, seed=0):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_shapes_range_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = UnprojectionNet(**TINY)
    out = net(_inputs())
    assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    out.mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_linear_output_and_bad_arguments():
    net = UnprojectionNet(image_size=64, base_channels=2, output="linear").eval()
    assert (net(_inputs()) < 0).any()
    with pytest.raises(ValueError):
        UnprojectionNet(image_size=100)
    with pytest.raises(ValueError):
        UnprojectionNet(output="tanh")
    with pytest.raises(ValueError):
        net(torch.zeros(1, 3, 32, 32))


def test_deterministic_eval_and_state_dict_round_trip():
    torch.manual_seed(1)
    a = UnprojectionNet(**TINY).eval()
    torch.manual_seed(2)
    b = UnprojectionNet(**TINY).eval()
    x = _inputs()
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), a(x))


def test_weighted_loss_ignores_zero_weight_pixels():
    pred, target = torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8)
    target[:, :, :4] = 1.0  # error only in the top half
    w = torch.zeros(8, 8)
    w[4:] = 1.0
    assert float(position_map_loss(pred, target, w)) == 0.0
    w[:4] = 1.0
    assert abs(float(position_map_loss(pred, target, w)) - 1.5) < 1e-6  # 3 channels × 1 on half the pixels
    assert abs(float(position_map_loss(pred, target)) - 1.5) < 1e-6


def test_residual_output_starts_at_the_mean_map_and_learns():
    torch.manual_seed(0)
    net = UnprojectionNet(image_size=64, base_channels=2, output="residual")
    mean = torch.rand(3, 64, 64)
    net.set_mean_map(mean)
    x = _inputs()
    assert torch.allclose(net(x), mean.expand(2, -1, -1, -1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    target = mean + 0.1
    for _ in range(3):
        loss = position_map_loss(net(x), target.expand(2, -1, -1, -1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(position_map_loss(net(x), target.expand(2, -1, -1, -1))) < 0.03 * 0.99  # 3 × 0.1² at the start
    state = net.state_dict()
    assert torch.equal(state["mean_map"], mean)  # the base travels with the weights
    with pytest.raises(ValueError):
        net.set_mean_map(torch.zeros(3, 32, 32))
