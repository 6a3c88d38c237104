"""Flow network of G (REFERENCE.md §5.5, ``FlowGenerator``): predicts the backward flow that warps a source image (a
reference frame or the 3-D render) onto the target landmarks, and a confidence map.

Input: ``cat(target_label, source_label, source_image)`` = 5 channels. Architecture: 3×3 conv → ``n_downsample``
stride-2 convs (doubling width) → ``n_blocks`` residual blocks → ``n_downsample`` × (nearest ×2 + conv) → two heads:
flow (2 channels, ×20, in pixels of the input resolution; channel 0 = x, 1 = y) and confidence (1 channel, sigmoid).
``input_scale`` > 1 runs the network on inputs average-pooled by that factor and upsamples the flow (bilinear, values
× ``input_scale``) and confidence back — a cheaper variant for real-time presets.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .generator_blocks import ConvNormAct, ResBlock
from .util import assert_shape

FLOW_SCALE = 20.0  # the reference's output multiplier


class FlowNet(nn.Module):
    """Flow + confidence from (target label, source label, source image).

    Args:
        in_channels: input channels (5 = 1 + 1 + 3).
        ngf: width of the first layer.
        n_downsample: stride-2 levels (width doubles each, capped at ``max_channels``).
        n_blocks: residual blocks at the bottom.
        max_channels: cap on the width.
        norm: "batch" | "instance".
        spectral: spectral norm on the convs.
        input_scale: run at 1/input_scale resolution (1 = full).
    """

    def __init__(self, in_channels: int = 5, ngf: int = 32, n_downsample: int = 3, n_blocks: int = 6,
                 max_channels: int = 256, norm: str = "instance", spectral: bool = True, input_scale: int = 1):
        super().__init__()
        self.in_channels, self.input_scale = in_channels, input_scale
        ch = [min(ngf * 2 ** i, max_channels) for i in range(n_downsample + 1)]
        self.head = ConvNormAct(in_channels, ch[0], norm=norm, spectral=spectral)
        self.down = nn.ModuleList(ConvNormAct(ch[i], ch[i + 1], stride=2, norm=norm, spectral=spectral)
                                  for i in range(n_downsample))
        self.blocks = nn.Sequential(*[ResBlock(ch[-1], norm=norm, spectral=spectral) for _ in range(n_blocks)])
        self.up = nn.ModuleList(ConvNormAct(ch[i + 1], ch[i], norm=norm, spectral=spectral)
                                for i in reversed(range(n_downsample)))
        self.flow = nn.Conv2d(ch[0], 2, 3, 1, 1)
        self.conf = nn.Conv2d(ch[0], 1, 3, 1, 1)
        nn.init.normal_(self.flow.weight, std=1e-3)  # start near the identity warp
        nn.init.zeros_(self.flow.bias)

    def forward(self, target_label: torch.Tensor, source_label: torch.Tensor, source_image: torch.Tensor):
        """Args: ``target_label (B,1,H,W)``, ``source_label (B,1,H,W)``, ``source_image (B,3,H,W)`` in [−1,1].

        Returns: ``flow (B,2,H,W)`` backward flow in pixels, ``conf (B,1,H,W)`` in (0,1).
        """
        b, _, h, w = target_label.shape
        assert_shape(source_label, [b, 1, h, w], "source_label")
        assert_shape(source_image, [b, 3, h, w], "source_image")
        x = torch.cat([target_label, source_label, source_image], 1)
        if self.input_scale > 1:
            x = F.avg_pool2d(x, self.input_scale)
        x = self.head(x)
        skips = []
        for layer in self.down:
            skips.append(x)
            x = layer(x)
        x = self.blocks(x)
        for layer in self.up:
            x = layer(F.interpolate(x, size=skips.pop().shape[-2:], mode="nearest"))
        flow, conf = self.flow(x) * FLOW_SCALE, torch.sigmoid(self.conf(x))
        if self.input_scale > 1:
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False) * self.input_scale
            conf = F.interpolate(conf, size=(h, w), mode="bilinear", align_corners=False)
        return flow, conf
