"""The unprojection network: a PRNet-style encoder–decoder from a face crop to a UV position map (REFERENCE.md §4).

PRNet (Feng et al., ECCV 2018) regresses, for every pixel of a fixed UV layout, the 3-D position of that surface point in
the input image's coordinates. Here the UV layout is :func:`rhythmhead.geometry.uv.face_uv` (MediaPipe's 468-vertex
topology), positions are normalised by :func:`rhythmhead.geometry.uv.normalize_positions` (x/W, y/H, z/W + 0.5), and
the 468 vertices are read back with :func:`rhythmhead.geometry.uv.sample_vertices`.

Architecture (PRNet's, widths scaled by ``base_channels``; PRNet = 16):

- stem conv 4×4 → ``c``; ten bottleneck residual blocks (1×1 → k×k stride s → 1×1, projection shortcut when the shape
  changes, BN + ReLU after the sum) at widths 2c, 2c, 4c, 4c, 8c, 8c, 16c, 16c, 32c, 32c with stride 2 on the first of
  each pair: 256² → 8² × 32c;
- decoder: 17 transposed convolutions 4×4 (BN + ReLU), stride 2 at the five up-sampling steps (8² → 256²), widths
  32c, 16c×3, 8c×3, 4c×3, 2c×2, c×2, then 3, 3 and a 3-channel output with ``sigmoid`` (PRNet), no activation
  (``linear``), or ``residual``: the output is added to a fixed mean position map (a buffer the training task fills
  with the training set's mean face; the last layer starts at zero, so the untrained network *is* the mean shape and
  only learns the image-specific offset — much faster to train on small data than PRNet's absolute regression).

PyTorch note: a stride-1 transposed 4×4 convolution cannot keep the size with symmetric padding, so the stride-1 decoder
layers are 3×3 transposed convolutions (padding 1); the stride-2 ones are 4×4 with padding 1, as PRNet's "SAME" layers.
"""
from __future__ import annotations

import torch
from torch import nn

from .util import assert_shape


class ResBlock(nn.Module):
    """PRNet's bottleneck residual block: ``relu(bn(shortcut(x) + conv1x1(conv_kxk_s(conv1x1(x)))))``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 4):
        super().__init__()
        mid = out_channels // 2
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
                         if stride != 1 or in_channels != out_channels else nn.Identity())
        pad_total = kernel_size - 1
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            # asymmetric "same" padding for the even kernel, as TensorFlow's
            nn.ZeroPad2d((pad_total // 2, pad_total - pad_total // 2, pad_total // 2, pad_total - pad_total // 2)),
            nn.Conv2d(mid, mid, kernel_size, stride=stride, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1, bias=False),
        )
        self.post = nn.Sequential(nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``(B, C_in, H, W)`` → ``(B, C_out, H/s, W/s)``."""
        return self.post(self.shortcut(x) + self.body(x))


def _up(in_channels: int, out_channels: int, stride: int, act: bool = True) -> nn.Sequential:
    if stride == 2:
        conv = nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=not act)
    else:
        conv = nn.ConvTranspose2d(in_channels, out_channels, 3, stride=1, padding=1, bias=not act)
    layers: list[nn.Module] = [conv]
    if act:
        layers += [nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class UnprojectionNet(nn.Module):
    """Face crop → UV position map (normalised positions), PRNet-style.

    Args:
        image_size: input and output side in pixels (a power of two ≥ 64; the paper: 256).
        base_channels: width multiplier ``c`` (PRNet: 16; the ``fast`` preset narrower).
        output: ``"sigmoid"`` (PRNet; positions in [0, 1]), ``"linear"``, or ``"residual"`` (mean map + linear offset).
    """

    def __init__(self, image_size: int = 256, base_channels: int = 16, output: str = "sigmoid"):
        super().__init__()
        if image_size < 64 or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 64, got {image_size}")
        if output not in ("sigmoid", "linear", "residual"):
            raise ValueError(f"output must be 'sigmoid', 'linear' or 'residual', got {output!r}")
        self.image_size, self.output = image_size, output
        c = base_channels
        widths = [2 * c, 2 * c, 4 * c, 4 * c, 8 * c, 8 * c, 16 * c, 16 * c, 32 * c, 32 * c]
        enc: list[nn.Module] = [nn.ZeroPad2d((1, 2, 1, 2)), nn.Conv2d(3, c, 4, bias=False), nn.BatchNorm2d(c),
                                nn.ReLU(inplace=True)]
        in_ch = c
        for i, w in enumerate(widths):
            enc.append(ResBlock(in_ch, w, stride=2 if i % 2 == 0 else 1))
            in_ch = w
        self.encoder = nn.Sequential(*enc)
        plan = [(32 * c, 1), (16 * c, 2), (16 * c, 1), (16 * c, 1), (8 * c, 2), (8 * c, 1), (8 * c, 1), (4 * c, 2),
                (4 * c, 1), (4 * c, 1), (2 * c, 2), (2 * c, 1), (c, 2), (c, 1), (3, 1), (3, 1)]
        dec: list[nn.Module] = []
        for w, s in plan:
            dec.append(_up(in_ch, w, s))
            in_ch = w
        dec.append(_up(in_ch, 3, 1, act=False))
        self.decoder = nn.Sequential(*dec)
        if output == "residual":
            last = dec[-1][0]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            # the mean position map (normalised units); set with ``set_mean_map`` before training, saved in state_dict
            self.register_buffer("mean_map", torch.full((3, image_size, image_size), 0.5))

    @torch.no_grad()
    def set_mean_map(self, mean_map: torch.Tensor) -> None:
        """Set the ``residual`` output's base ``(3, S, S)`` normalised position map."""
        assert_shape(mean_map, [3, self.image_size, self.image_size], "mean_map")
        self.mean_map.copy_(mean_map)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Predict the position map.

        Args:
            image: ``(B, 3, S, S)`` RGB in [−1, 1], S = ``image_size``.
        Returns:
            ``(B, 3, S, S)`` normalised positions (x/S, y/S, z/S + 0.5) of the UV layout's surface points.
        """
        assert_shape(image, [None, 3, self.image_size, self.image_size], "image")
        out = self.decoder(self.encoder(image))
        if self.output == "sigmoid":
            return torch.sigmoid(out)
        if self.output == "residual":
            return out + self.mean_map
        return out


def position_map_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Squared position error of maps ``(B, 3, S, S)``, summed over xyz, averaged over pixels and batch.

    ``weights (S, S)``: a per-pixel weight (PRNet's region mask, or a 0/1 face mask for plain MSE on the face); the mean
    is then weighted, ``Σ w·e / Σ w``. ``None`` averages over every pixel.
    """
    err = (pred - target).pow(2).sum(1)  # (B,S,S)
    if weights is None:
        return err.mean()
    return (err * weights).sum((1, 2)).mean() / weights.sum().clamp(min=1e-8)
