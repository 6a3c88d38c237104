"""The image discriminator D (REFERENCE.md §5.7): a PatchGAN with spectral norm and instance norm, hinge loss.

Input: ``cat(warping-reference label, warping-reference image, target label, image)`` = (1 + 3)·2 = 8 channels, built
with :func:`disc_input`. Layers: ``n_layers`` 4×4 stride-2 convs (``ndf``, 2·ndf, …), one 4×4 stride-1 conv to
``ndf·2^n_layers`` (capped), and a 4×4 stride-1 conv to one logit per patch. Every layer but the first and the last has
instance norm; all but the last have spectral norm and LeakyReLU(0.2). The intermediate activations are returned for the
feature-matching loss.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .util import assert_shape


def disc_input(warp_ref_label: torch.Tensor, warp_ref_image: torch.Tensor, target_label: torch.Tensor,
               image: torch.Tensor) -> torch.Tensor:
    """The 8-channel D input ``(B, 8, H, W)`` from label maps ``(B,1,H,W)`` and images ``(B,3,H,W)``."""
    return torch.cat([warp_ref_label, warp_ref_image, target_label, image], 1)


class Discriminator(nn.Module):
    """PatchGAN D.

    Args:
        in_channels: input channels (8).
        ndf: width of the first layer (32 in the paper).
        n_layers: stride-2 layers (4 in the paper).
        max_channels: cap on the width.
        spectral: spectral norm on the convs.
    """

    def __init__(self, in_channels: int = 8, ndf: int = 32, n_layers: int = 4, max_channels: int = 512,
                 spectral: bool = True):
        super().__init__()
        self.in_channels = in_channels
        wrap = spectral_norm if spectral else (lambda m: m)
        chans = [min(ndf * 2 ** i, max_channels) for i in range(n_layers + 1)]
        layers = [nn.Sequential(wrap(nn.Conv2d(in_channels, chans[0], 4, 2, 2)), nn.LeakyReLU(0.2))]
        for i in range(1, n_layers):
            layers.append(nn.Sequential(wrap(nn.Conv2d(chans[i - 1], chans[i], 4, 2, 2)),
                                        nn.InstanceNorm2d(chans[i], affine=True), nn.LeakyReLU(0.2)))
        layers.append(nn.Sequential(wrap(nn.Conv2d(chans[n_layers - 1], chans[n_layers], 4, 1, 2)),
                                    nn.InstanceNorm2d(chans[n_layers], affine=True), nn.LeakyReLU(0.2)))
        self.layers = nn.ModuleList(layers)
        self.out = nn.Conv2d(chans[n_layers], 1, 4, 1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x (B, in_channels, H, W)`` (see :func:`disc_input`) → ``(logits (B, 1, h, w), features)`` where
        ``features`` lists the activations of every layer before the output."""
        assert_shape(x, [None, self.in_channels, None, None], "discriminator input")
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return self.out(x), feats
