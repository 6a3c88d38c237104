"""Hybrid attention of G's K-shot embedding (REFERENCE.md §5.3, ``EncoderSelfAtten`` + ``AttenGen``).

Two parts, split by when they run:

* :class:`ShotFusion` (once per reference set) — at the attention level of the reference encoders: cross-modal fusion
  of each shot's image and landmark features, self-attention across the K shots (per pixel, dot-product attention over
  the shot axis, so any K works), and re-fusion of each stream with the fused features plus its self-attention term.
* :class:`TargetAttention` — the keys of the reference label maps (once per reference set) and, per frame, the query
  of the target label map: per-pixel energy = scaled dot product over channels, softmax over the K shots.

Shapes: per-shot features ``(B, K, C, h, w)``; attention ``(B, K, h, w)`` (sums to 1 over K).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .generator_blocks import ConvNormAct, ResBlock, sn


class ShotFusion(nn.Module):
    """Cross-modal fusion + self-attention across shots + re-fusion, for image and landmark streams of width C."""

    def __init__(self, channels: int, *, attn_channels: int = 32, norm: str = "instance", spectral: bool = True):
        super().__init__()
        c = channels
        self.fuse = nn.Sequential(ConvNormAct(2 * c, c, norm=norm, spectral=spectral),
                                  ResBlock(c, norm=norm, spectral=spectral))
        self.query = nn.Conv2d(c, attn_channels, 1)
        self.key = nn.Conv2d(c, attn_channels, 1)
        self.value_img = nn.Conv2d(c, c, 1)
        self.value_lmk = nn.Conv2d(c, c, 1)
        self.refuse_img = sn(nn.Conv2d(2 * c, c, 3, 1, 1), spectral)
        self.refuse_lmk = sn(nn.Conv2d(2 * c, c, 3, 1, 1), spectral)
        self.attn_channels = attn_channels

    def forward(self, img: torch.Tensor, lmk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``img``, ``lmk`` ``(B, K, C, h, w)`` → re-fused ``(img', lmk')`` of the same shape."""
        b, k, c, h, w = img.shape
        flat = lambda t: t.reshape(b * k, *t.shape[2:])  # noqa: E731
        unflat = lambda t: t.reshape(b, k, *t.shape[1:])  # noqa: E731
        fused = self.fuse(torch.cat([flat(img), flat(lmk)], 1))  # (BK, C, h, w)
        q, key = unflat(self.query(fused)), unflat(self.key(fused))  # (B, K, A, h, w)
        energy = torch.einsum("bkahw,bjahw->bkjhw", q, key) / math.sqrt(self.attn_channels)
        attn = energy.softmax(dim=2)  # over the attended shots j
        v_img, v_lmk = unflat(self.value_img(flat(img))), unflat(self.value_lmk(flat(lmk)))
        self_img = torch.einsum("bkjhw,bjchw->bkchw", attn, v_img)
        self_lmk = torch.einsum("bkjhw,bjchw->bkchw", attn, v_lmk)
        img2 = unflat(self.refuse_img(torch.cat([flat(img), fused], 1))) + self_img
        lmk2 = unflat(self.refuse_lmk(torch.cat([flat(lmk), fused], 1))) + self_lmk
        return img2, lmk2


class LabelEncoder(nn.Sequential):
    """Label map ``(N, 1, H, W)`` → ``(N, widths[-1], H/2^n, W/2^n)``: 3×3 conv to ``widths[0]`` then a stride-2 conv
    per further width (n = len(widths) − 1; growing widths keep the full-resolution layer cheap)."""

    def __init__(self, widths: list[int], *, norm: str = "instance", spectral: bool = True):
        layers = [ConvNormAct(1, widths[0], norm=norm, spectral=spectral)]
        layers += [ConvNormAct(widths[i - 1], widths[i], stride=2, norm=norm, spectral=spectral)
                   for i in range(1, len(widths))]
        super().__init__(*layers)


class TargetAttention(nn.Module):
    """Target–reference attention: keys from reference label maps, query from the target label map, each through a
    :class:`LabelEncoder` of the given widths (the encoder widths up to the attention level)."""

    def __init__(self, widths: list[int], *, norm: str = "instance", spectral: bool = True):
        super().__init__()
        self.key_net = LabelEncoder(widths, norm=norm, spectral=spectral)
        self.query_net = LabelEncoder(widths, norm=norm, spectral=spectral)
        self.channels = widths[-1]

    def keys(self, ref_labels: torch.Tensor) -> torch.Tensor:
        """``ref_labels (B, K, 1, H, W)`` → keys ``(B, K, C, h, w)`` (once per reference set)."""
        b, k = ref_labels.shape[:2]
        out = self.key_net(ref_labels.reshape(b * k, *ref_labels.shape[2:]))
        return out.reshape(b, k, *out.shape[1:])

    def forward(self, keys: torch.Tensor, target_label: torch.Tensor) -> torch.Tensor:
        """``keys (B, K, C, h, w)``, ``target_label (B, 1, H, W)`` → attention ``(B, K, h, w)``, softmax over K."""
        query = self.query_net(target_label)  # (B, C, h, w)
        energy = torch.einsum("bchw,bkchw->bkhw", query, keys) / math.sqrt(self.channels)
        return energy.softmax(dim=1)
