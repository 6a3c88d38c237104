"""The mouth synthesis network: lips, teeth and mouth interior at the mouth crop's own resolution (issue: a real mouth).

G draws the whole face at 128², where a mouth is about 25 px wide: too few pixels for teeth or lip edges. A video
reference lends the person's own mouths (:mod:`rhythmhead.inference.regions`); a photo shows one closed mouth, so the
mouth must be synthesised. This network does that over the mouth crop of :mod:`rhythmhead.geometry.mouth` (128²,
the mouth about 50 px wide), conditioned on

* the reference's mouth brought onto the target's lip shape (identity, lip colour, skin, lighting), and
* the target's lip contours (the shape to make: how far the lips part, where the corners go),

and predicts the crop, which the pipeline blends in through the soft lip mask. A U-Net: ``n_down`` stride-2 conv
levels (instance norm, LeakyReLU) with skip connections, nearest upsampling + conv on the way up, a residual over the
warped reference (``clamp(reference + Δ, −1, 1)``, Δ = 0 at initialisation) so that what the reference
already explains — skin, lip colour — passes through sharp and only the opening is synthesised.

Shapes: ``reference (B, 3, S, S)`` in [−1, 1], ``label (B, 1, S, S)`` in [−1, 1] → ``(B, 3, S, S)`` in [−1, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .util import assert_shape


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.2))


class MouthNet(nn.Module):
    """See the module docstring. Constructor kwargs are exactly the ``model`` fields of the mouth config.

    Args:
        image_size: S, the mouth crop's side.
        ngf: channels of the first level (doubling per level, capped at ``max_channels``).
        n_down: stride-2 levels.
        max_channels: cap on the width.
    """

    def __init__(self, image_size: int = 128, ngf: int = 32, n_down: int = 4, max_channels: int = 256):
        super().__init__()
        if image_size % (2 ** n_down):
            raise ValueError(f"image_size {image_size} is not divisible by 2^n_down = {2 ** n_down}")
        self.image_size = image_size
        ch = [min(ngf * 2 ** i, max_channels) for i in range(n_down + 1)]
        self.inp = _block(4, ch[0])
        self.down = nn.ModuleList(_block(ch[i], ch[i + 1], stride=2) for i in range(n_down))
        self.mid = _block(ch[-1], ch[-1])
        self.up = nn.ModuleList(_block(ch[i + 1] + ch[i], ch[i]) for i in reversed(range(n_down)))
        self.out = nn.Conv2d(ch[0], 3, 3, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, reference: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        assert_shape(reference, [None, 3, s, s], "reference")
        assert_shape(label, [reference.shape[0], 1, s, s], "label")
        x = self.inp(torch.cat([reference, label], 1))
        skips = [x]
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        x = self.mid(x)
        for layer, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = layer(torch.cat([x, skip], 1))
        return (reference + self.out(x)).clamp(-1, 1)
