"""Building blocks of the generator G (REFERENCE.md §5.2–§5.6): normalisation, spectral-norm conv layers, SPADE with
fixed or generated (adaptive) modulation weights, the multi-condition SPADE residual block used for the non-linear
composition, and the label embedder.

Conventions: feature maps ``(N, C, H, W)``; a *generated* 1×1 weight is a per-sample matrix ``(N, C_out, C_in)`` applied
with :func:`apply_generated`. ``norm`` is ``"batch"`` or ``"instance"`` (BatchNorm layers can be turned into SyncBatchNorm
by the training task under DDP).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

NORMS = ("batch", "instance")


def make_norm(kind: str, channels: int, affine: bool) -> nn.Module:
    """A 2-D normalisation layer of ``kind`` ("batch" | "instance")."""
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=affine)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=affine)
    raise ValueError(f"unknown norm '{kind}' (expected one of {NORMS})")


def sn(module: nn.Module, enabled: bool) -> nn.Module:
    """Wrap ``module`` in spectral normalisation when ``enabled``."""
    return spectral_norm(module) if enabled else module


def apply_generated(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample 1×1 convolution: ``weight (N, C_out, C_in)`` on ``x (N, C_in, H, W)`` → ``(N, C_out, H, W)``."""
    n, c, h, w = x.shape
    return torch.bmm(weight, x.reshape(n, c, h * w)).reshape(n, weight.shape[1], h, w)


class ConvNormAct(nn.Sequential):
    """Spectral-norm conv → norm → LeakyReLU(0.2) (the "SPADEConv2d" layer of the reference encoders)."""

    def __init__(self, cin: int, cout: int, *, kernel: int = 3, stride: int = 1, norm: str = "instance",
                 spectral: bool = True):
        super().__init__(sn(nn.Conv2d(cin, cout, kernel, stride, kernel // 2), spectral),
                         make_norm(norm, cout, affine=True), nn.LeakyReLU(0.2))


class ResBlock(nn.Module):
    """Residual block: two 3×3 spectral-norm convs with norm and LeakyReLU, identity shortcut (C → C)."""

    def __init__(self, channels: int, *, norm: str = "instance", spectral: bool = True):
        super().__init__()
        self.body = nn.Sequential(
            sn(nn.Conv2d(channels, channels, 3, 1, 1), spectral), make_norm(norm, channels, affine=True),
            nn.LeakyReLU(0.2), sn(nn.Conv2d(channels, channels, 3, 1, 1), spectral),
            make_norm(norm, channels, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` → ``(N, C, H, W)``."""
        return x + self.body(x)


class SPADEModulation(nn.Module):
    """γ/β of SPADE from one condition: fixed (a conv on the condition's shared hidden activation, see
    :class:`SPADEResBlock`) or adaptive (a generated per-sample 1×1 weight ``(N, 2·C, C_cond)`` applied to the condition
    features themselves, plus a learned bias)."""

    def __init__(self, channels: int, in_channels: int, *, adaptive: bool, kernel: int = 1):
        super().__init__()
        self.channels, self.in_channels, self.adaptive = channels, in_channels, adaptive
        if adaptive:
            self.bias = nn.Parameter(torch.zeros(2 * channels))
        else:
            self.gamma_beta = nn.Conv2d(in_channels, 2 * channels, kernel, 1, kernel // 2)

    def weight_shape(self) -> tuple[int, int]:
        """Shape ``(rows, cols)`` of the generated weight this modulation needs (adaptive only)."""
        return 2 * self.channels, self.in_channels

    def forward(self, normed: torch.Tensor, cond: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``normed (N, C, H, W)`` (already normalised); ``cond (N, C_in, H, W)`` — the condition features (adaptive)
        or their shared hidden activation (fixed); ``weight (N, 2C, C_in)`` when adaptive → ``(N, C, H, W)``."""
        if self.adaptive:
            gb = apply_generated(weight, cond) + self.bias[None, :, None, None]
        else:
            gb = self.gamma_beta(cond)
        gamma, beta = gb.chunk(2, dim=1)
        return torch.addcmul(normed + beta, normed, gamma)  # normed · (1 + γ) + β with one temporary less


class SPADEResBlock(nn.Module):
    """SPADE residual block over one or more conditions (REFERENCE.md §5.4, §5.6).

    With one condition it is the plain SPADE ResBlock of the decoder. With several (target landmarks, warped reference,
    warped render) it is the non-linear composition block: the input is normalised once, modulated by a separate SPADE
    branch per condition, each branch goes through LeakyReLU, the branches are concatenated along channels and a conv
    follows; twice, then the shortcut (landmark-conditioned SPADE + 1×1 conv when the width changes) is added. Only the
    first condition (the landmarks) may use generated (adaptive) weights. Each fixed condition's SPADE hidden
    activation (conv → ReLU on the condition map) is computed once per block and shared by its γ/β convs.
    """

    def __init__(self, fin: int, fout: int, cond_channels: Sequence[int], *, adaptive: bool, norm: str = "instance",
                 spectral: bool = True, spade_hidden: int = 64, spade_kernel: int = 1):
        super().__init__()
        fmid = min(fin, fout)
        self.n_cond = len(cond_channels)
        self.adaptive = adaptive
        self.learned_shortcut = fin != fout
        self.norm_0 = make_norm(norm, fin, affine=False)
        self.norm_1 = make_norm(norm, fmid, affine=False)
        pad = spade_kernel // 2
        self.shared = nn.ModuleList(
            nn.Identity() if (adaptive and j == 0) else
            nn.Sequential(nn.Conv2d(cc, spade_hidden, spade_kernel, 1, pad), nn.ReLU())
            for j, cc in enumerate(cond_channels))

        def modulation(ch, j):
            is_adaptive = adaptive and j == 0
            return SPADEModulation(ch, cond_channels[0] if is_adaptive else spade_hidden, adaptive=is_adaptive,
                                   kernel=spade_kernel)

        self.spade_0 = nn.ModuleList(modulation(fin, j) for j in range(self.n_cond))
        self.spade_1 = nn.ModuleList(modulation(fmid, j) for j in range(self.n_cond))
        self.conv_0 = sn(nn.Conv2d(self.n_cond * fin, fmid, 3, 1, 1), spectral)
        self.conv_1 = sn(nn.Conv2d(self.n_cond * fmid, fout, 3, 1, 1), spectral)
        if self.learned_shortcut:
            self.norm_s = make_norm(norm, fin, affine=False)
            self.spade_s = modulation(fin, 0)
            self.conv_s = sn(nn.Conv2d(fin, fout, 1, bias=False), spectral)

    def weight_shapes(self) -> dict[str, tuple[int, int]]:
        """Generated-weight shapes this block needs for its adaptive landmark branch, by name."""
        if not self.adaptive:
            return {}
        shapes = {"spade_0": self.spade_0[0].weight_shape(), "spade_1": self.spade_1[0].weight_shape()}
        if self.learned_shortcut:
            shapes["spade_s"] = self.spade_s.weight_shape()
        return shapes

    def _branches(self, spades, normed, hidden, weight):
        outs = []
        for j, (spade, h) in enumerate(zip(spades, hidden)):
            if h is None:  # a dropped condition (the "raw" image): its branch contributes zeros
                outs.append(torch.zeros_like(normed))
            else:
                outs.append(F.leaky_relu(spade(normed, h, weight if j == 0 else None), 0.2, inplace=True))
        return torch.cat(outs, 1) if len(outs) > 1 else outs[0]

    def forward(self, x: torch.Tensor, conds: Sequence[torch.Tensor | None],
                weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``x (N, fin, H, W)``; ``conds`` one map per condition ``(N, C_j, h, w)`` (resized to H×W here; None drops
        a non-landmark branch); ``weights`` the generated weights named as in :meth:`weight_shapes` →
        ``(N, fout, H, W)``."""
        weights = weights or {}
        hidden = []
        for shared, cond in zip(self.shared, conds):
            if cond is not None and cond.shape[-2:] != x.shape[-2:]:
                cond = F.interpolate(cond, size=x.shape[-2:], mode="nearest")
            hidden.append(None if cond is None else shared(cond))
        h = self.conv_0(self._branches(self.spade_0, self.norm_0(x), hidden, weights.get("spade_0")))
        h = self.conv_1(self._branches(self.spade_1, self.norm_1(h), hidden, weights.get("spade_1")))
        if self.learned_shortcut:
            x = self.conv_s(self.spade_s(self.norm_s(x), hidden[0], weights.get("spade_s")))
        return x + h


class LabelEmbedder(nn.Module):
    """Multi-scale embedding of a condition image (REFERENCE.md §5.4, §5.6).

    Encoder: 3×3 conv to ``channels[0]`` at full resolution, then a stride-2 conv per further level. On the first
    ``n_adaptive`` levels a generated per-sample 1×1 weight ``(N, C_i, C_i)`` mixes the features (residually) — the
    label-embedding conv weights that the few-shot weight generator predicts. With ``decoder=True`` the features go back
    up (nearest ×2 + 3×3 conv + encoder skip), giving the SPADE condition maps of every decoder level; with
    ``decoder=False`` (the warped-image embedders of the composition) the encoder features themselves are returned.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], *, n_adaptive: int = 0, decoder: bool = True,
                 norm: str = "instance", spectral: bool = True):
        super().__init__()
        self.channels, self.n_adaptive, self.decoder = list(channels), n_adaptive, decoder
        self.down = nn.ModuleList(
            [ConvNormAct(in_channels, channels[0], norm=norm, spectral=spectral)]
            + [ConvNormAct(channels[i - 1], channels[i], stride=2, norm=norm, spectral=spectral)
               for i in range(1, len(channels))])
        if decoder:
            self.up = nn.ModuleList(ConvNormAct(channels[i + 1], channels[i], norm=norm, spectral=spectral)
                                    for i in range(len(channels) - 1))

    def weight_shapes(self) -> dict[str, tuple[int, int]]:
        """Generated weights needed: ``level<i>`` → ``(C_i, C_i)`` for i < n_adaptive."""
        return {f"level{i}": (self.channels[i], self.channels[i]) for i in range(self.n_adaptive)}

    def forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor] | None = None) -> list[torch.Tensor]:
        """``x (N, C_in, H, W)`` → features per level i ``(N, channels[i], H/2^i, W/2^i)``."""
        feats = []
        for i, layer in enumerate(self.down):
            x = layer(x)
            if i < self.n_adaptive:
                x = x + F.leaky_relu(apply_generated(weights[f"level{i}"], x), 0.2)
            feats.append(x)
        if not self.decoder:
            return feats
        out = [None] * len(feats)
        out[-1] = y = feats[-1]
        for i in range(len(feats) - 2, -1, -1):
            y = self.up[i](F.interpolate(y, scale_factor=2, mode="nearest")) + feats[i]
            out[i] = y
        return out
