"""The discriminator D and the generator-stage losses (rhythmhead.models.discriminator, rhythmhead.models.losses)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from rhythmhead.errors import InputError
from rhythmhead.models import losses
from rhythmhead.models.discriminator import Discriminator, disc_input


def test_patchgan_shapes_features_and_gradients():
    torch.manual_seed(0)
    d = Discriminator(ndf=8, n_layers=4, max_channels=64)
    x = torch.randn(2, 8, 64, 64, requires_grad=True)
    logits, feats = d(x)
    assert logits.shape[:2] == (2, 1) and logits.shape[-1] >= 2  # a map of patches, not one score
    assert len(feats) == 5 and [f.shape[1] for f in feats] == [8, 16, 32, 64, 64]
    losses.hinge_d(logits[:1], logits[1:]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters())
    assert x.grad is not None
    with pytest.raises(ValueError, match="discriminator input"):
        d(torch.randn(1, 7, 64, 64))


def test_disc_input_order():
    a, b, c, d = (torch.full((1, n, 4, 4), float(v)) for n, v in ((1, 1), (3, 2), (1, 3), (3, 4)))
    x = disc_input(a, b, c, d)
    assert x.shape == (1, 8, 4, 4) and x[0, :, 0, 0].tolist() == [1, 2, 2, 2, 3, 4, 4, 4]


def test_hinge_values():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert losses.hinge_d(real, fake).item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert losses.hinge_g(fake).item() == pytest.approx(1.0)


def test_ssim_matches_scikit_image_and_is_differentiable():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (1, 3, 48, 48)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.3, a.shape), -1, 1).astype(np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b).requires_grad_(True)
    ours = losses.ssim(ta, tb)
    ref = structural_similarity(a[0].transpose(1, 2, 0), b[0].transpose(1, 2, 0), channel_axis=2, data_range=2.0,
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ours.item() == pytest.approx(ref, abs=0.03)
    assert losses.ssim(ta, ta).item() == pytest.approx(1.0, abs=1e-5)
    (1 - ours).backward()
    assert tb.grad.abs().sum() > 0
    assert losses.reconstruction(ta, ta).item() == pytest.approx(0.0, abs=1e-5)


def test_masked_l1_and_feature_matching():
    a, b = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    b[..., 2:, :] = 5  # outside the mask: ignored
    assert losses.masked_l1(a, b, mask).item() == pytest.approx(1.0)
    assert losses.masked_l1(a, b, torch.zeros_like(mask)).item() == 0.0
    f = [torch.ones(2, 3), torch.zeros(4)]
    assert losses.feature_matching(f, [t + 2 for t in f]).item() == pytest.approx(2.0)


def test_vgg_weights_are_user_files_only(tmp_path):
    with pytest.raises(InputError, match="not found"):
        losses.VGG19Features.from_file(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read"):
        losses.VGG19Features.from_file(bad)
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, wrong)
    with pytest.raises(InputError, match="not VGG19"):
        losses.VGG19Features.from_file(wrong)


def test_vgg_round_trip_and_perceptual(tmp_path):
    torch.manual_seed(0)
    net = losses.VGG19Features()
    path = tmp_path / "vgg19.pth"
    torch.save({"features." + k: v for k, v in net.features.state_dict().items()} | {"classifier.0.weight":
                                                                                     torch.zeros(2, 2)}, path)
    loaded = losses.VGG19Features.from_file(path)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert all(torch.equal(a, b) for a, b in zip(net(x), loaded(x)))
    assert len(loaded(x)) == 5
    assert losses.perceptual(loaded, x, x).item() == 0.0
    assert losses.perceptual(loaded, x, -x).item() > 0
