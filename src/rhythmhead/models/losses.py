"""Losses of the generator stage (REFERENCE.md §5.8): hinge GAN, feature matching, warp and flow L1, reconstruction
(L1 + 1 − SSIM, with a differentiable SSIM), and an optional VGG19 perceptual loss on user-supplied weights.

All functions take images ``(B, C, H, W)`` in [−1, 1] and return scalar tensors. No weights are downloaded:
:class:`VGG19Features` loads a user ``state_dict`` (torchvision's ``vgg19`` layout, ``features.<i>.weight``; the
classifier keys are ignored) with ``torch.load(weights_only=True)`` or from a ``.safetensors`` file.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError


# -- GAN ---------------------------------------------------------------------------------------------------------------
def hinge_d(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: mean(relu(1 − D(real))) + mean(relu(1 + D(fake)))."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: −mean(D(fake))."""
    return -fake_logits.mean()


def feature_matching(real_feats: list[torch.Tensor], fake_feats: list[torch.Tensor]) -> torch.Tensor:
    """Mean over D's layers of the L1 distance between real (detached) and fake features."""
    return sum(F.l1_loss(f, r.detach()) for r, f in zip(real_feats, fake_feats)) / max(len(real_feats), 1)


# -- pixel losses ------------------------------------------------------------------------------------------------------
def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error over the pixels where ``mask (B,1,H,W)`` (bool or weights) is set; plain L1 without mask."""
    if mask is None:
        return F.l1_loss(pred, target)
    mask = mask.to(pred.dtype).expand_as(pred)
    return ((pred - target).abs() * mask).sum() / mask.sum().clamp_min(1.0)


def flow_l1(flow: torch.Tensor, gt_flow: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """L1 between predicted ``flow (B,2,H,W)`` and pseudo-ground-truth ``gt_flow`` where ``valid (B,1,H,W)`` is set
    (pixels; averaged over valid pixels and both components)."""
    return masked_l1(flow, gt_flow, valid)


def _gaussian_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 11, sigma: float = 1.5,
         data_range: float = 2.0) -> torch.Tensor:
    """Differentiable mean SSIM of ``a``, ``b`` ``(B, C, H, W)`` (Gaussian window, Wang et al. 2004 constants)."""
    c = a.shape[1]
    g = _gaussian_window(window, sigma, a)
    gx = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    gy = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, gx, groups=c), gy, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean()


def image_scores(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """SSIM and PSNR (dB) of ``pred`` against ``target`` ``(B, 3, H, W)`` in [−1, 1], as ``rhythmhead evaluate``
    reports them (:func:`rhythmhead.evaluation.metrics.ssim` / ``psnr``: on the [0, 1] scale, mean over images; equal
    to 1e-6), for training validation. (SSIM's luminance term depends on the images' offset: on the [−1, 1] scale,
    as :func:`reconstruction` uses it, it comes out lower.)"""
    a, b = (pred.float().clamp(-1, 1) + 1) / 2, (target.float().clamp(-1, 1) + 1) / 2
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return {"ssim": float(ssim(a, b, data_range=1.0)), "psnr": float((-10 * torch.log10(mse)).mean())}


def reconstruction(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 + (1 − SSIM) between ``pred`` and ``target`` ``(B, 3, H, W)`` in [−1, 1]."""
    return F.l1_loss(pred, target) + (1 - ssim(pred, target))


# -- perceptual --------------------------------------------------------------------------------------------------------
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)
_VGG_TAPS = {1: 1.0 / 32, 6: 1.0 / 16, 11: 1.0 / 8, 20: 1.0 / 4, 29: 1.0}  # relu1_1 … relu5_1 and their weights


class VGG19Features(nn.Module):
    """The convolutional part of VGG19 (torchvision index layout) up to relu5_1, frozen, returning the relu*_1 taps."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, 1, 1), nn.ReLU(inplace=False)]
                cin = v
        self.features = nn.Sequential(*layers[:max(_VGG_TAPS) + 1])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    @classmethod
    def from_file(cls, path: str | Path) -> "VGG19Features":
        """Load user-supplied VGG19 weights (``.pth``/``.pt`` state_dict or ``.safetensors``); InputError if unusable."""
        p = Path(path)
        if not p.is_file():
            raise InputError("VGG19 weights file not found", p)
        try:
            if p.suffix == ".safetensors":
                from safetensors.torch import load_file
                state = load_file(str(p))
            else:
                state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 — any unreadable file is one user error
            raise InputError(f"cannot read VGG19 weights ({type(exc).__name__})", p) from None
        if not isinstance(state, dict):
            raise InputError("VGG19 weights must be a state_dict", p)
        net = cls()
        own = net.features.state_dict()
        picked = {k.removeprefix("features."): v for k, v in state.items() if k.removeprefix("features.") in own}
        missing = sorted(set(own) - set(picked))
        if missing:
            raise InputError(f"not VGG19 weights: missing {', '.join(missing[:3])}…", p)
        try:
            net.features.load_state_dict(picked)
        except RuntimeError:
            raise InputError("VGG19 weights have the wrong shapes", p) from None
        return net.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x (B, 3, H, W)`` in [−1, 1] → the relu1_1 … relu5_1 activations."""
        x = ((x + 1) / 2 - self.mean) / self.std
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _VGG_TAPS:
                taps.append(x)
        return taps


def perceptual(vgg: VGG19Features, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Weighted L1 between VGG19 relu*_1 features of ``pred`` and ``target`` (few-shot-vid2vid weighting)."""
    with torch.no_grad():
        real = vgg(target)
    fake = vgg(pred)
    return sum(w * F.l1_loss(f, r) for w, f, r in zip(_VGG_TAPS.values(), fake, real))


# -- the generator stage's objectives (shared by training and test-time fine-tuning) -----------------------------------
DEFAULT_WEIGHTS = {"gan": 1.0, "feat": 10.0, "vgg": 10.0, "flow": 10.0, "warp": 10.0, "rec": 1.0, "raw": 1.0}


def _d_inputs(batch: dict, images: list[torch.Tensor]) -> torch.Tensor:
    """D inputs for the real target followed by each image in ``images``, concatenated along the batch."""
    from .discriminator import disc_input

    wl, wi, tl = batch["warp_ref_label"], batch["warp_ref_image"], batch["target_label"]
    return torch.cat([disc_input(wl, wi, tl, batch["target_image"])] + [disc_input(wl, wi, tl, im) for im in images])


def generator_objective(out: dict, batch: dict, disc: nn.Module, weights: dict[str, float] | None = None,
                        vgg: VGG19Features | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """G's loss (REFERENCE.md §5.8) for one generator output ``out`` (see ``Generator.generate``) on ``batch``.

    Terms (each reported unweighted): ``gan`` hinge on the image and the raw image; ``feat`` feature matching (image);
    ``rec`` L1 + 1 − SSIM (image, and raw × ``raw``); ``vgg`` perceptual on both when ``vgg`` is given; ``warp`` L1 of
    the warped reference against the target and of the warped render against the target inside ``face_mask`` (both
    outside ``mouth_mask``); ``flow`` L1 of both flows against the pseudo-GT where it is valid. Terms whose inputs are
    absent (a branch switched off, no flow targets in the batch) are skipped. ``disc`` must not accumulate gradients
    here (the caller freezes it).

    Batch keys: ``target_image``, ``target_label``, ``warp_ref_image``, ``warp_ref_label``; optional ``mouth_mask``,
    ``face_mask``, ``flow_ref``, ``flow_ref_valid``, ``flow_render``, ``flow_render_valid``.
    """
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    target = batch["target_image"]
    image, raw = out["image"], out.get("raw")
    fakes = [image] + ([raw] if raw is not None and w["raw"] > 0 else [])
    logits, feats = disc(_d_inputs(batch, fakes))
    n = target.shape[0]
    split = lambda t: t.split(n)  # noqa: E731  real, fake, (raw)
    parts = split(logits)
    terms: dict[str, torch.Tensor] = {}
    terms["gan"] = hinge_g(parts[1]) + (w["raw"] * hinge_g(parts[2]) if len(parts) > 2 else 0.0)
    terms["feat"] = feature_matching([split(f)[0] for f in feats], [split(f)[1] for f in feats])
    terms["rec"] = reconstruction(image, target) + (w["raw"] * reconstruction(raw, target) if len(fakes) > 1 else 0.0)
    if vgg is not None:
        terms["vgg"] = perceptual(vgg, image, target) + (w["raw"] * perceptual(vgg, raw, target) if len(fakes) > 1
                                                          else 0.0)
    keep = 1 - batch["mouth_mask"] if batch.get("mouth_mask") is not None else torch.ones_like(target[:, :1])
    warp_terms = []
    if out.get("flow_ref") is not None:
        warp_terms.append(masked_l1(out["warped_ref"], target, keep))
    if out.get("flow_render") is not None:
        face = batch.get("face_mask")
        warp_terms.append(masked_l1(out["warped_render"], target, keep * face if face is not None else keep))
    if warp_terms:
        terms["warp"] = sum(warp_terms)
    flow_terms = [flow_l1(out[f], batch[f], batch[f + "_valid"]) for f in ("flow_ref", "flow_render")
                  if out.get(f) is not None and batch.get(f) is not None]
    if flow_terms:
        terms["flow"] = sum(flow_terms)
    total = sum(w[k] * v for k, v in terms.items())
    return total, {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in terms.items()}


def discriminator_objective(disc: nn.Module, batch: dict, out: dict, raw_weight: float = 1.0) -> torch.Tensor:
    """D's hinge loss on the real target vs the (detached) image and raw image of ``out``, in one D call."""
    fakes = [out["image"].detach()]
    if out.get("raw") is not None and raw_weight > 0:
        fakes.append(out["raw"].detach())
    logits, _ = disc(_d_inputs(batch, fakes))
    parts = logits.split(batch["target_image"].shape[0])
    loss = hinge_d(parts[0], parts[1])
    if len(parts) > 2:
        loss = loss + raw_weight * F.relu(1 + parts[2]).mean()
    return loss


def gan_step(out: dict, batch: dict, disc: nn.Module, optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
             weights: dict[str, float] | None = None, vgg: VGG19Features | None = None, *,
             autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> dict[str, float]:
    """One GAN step on a generator output ``out`` (shared by training and test-time fine-tuning): G's step on
    :func:`generator_objective` with D frozen, then D's step on :func:`discriminator_objective`.

    ``optimizers`` is ``(opt_g, opt_d)``. ``disc`` may be wrapped (DistributedDataParallel's ``.module``): G's terms
    run through the unwrapped D, whose parameters are frozen for them, so that DDP's hooks see D's own call only.
    ``autocast`` makes the context each objective runs in. Returns the loss terms (see :func:`generator_objective`)
    plus ``total`` (G's weighted loss) and ``disc`` (D's loss).
    """
    opt_g, opt_d = optimizers
    raw_disc = getattr(disc, "module", disc)
    raw_disc.requires_grad_(False)
    try:
        with autocast():
            loss_g, terms = generator_objective(out, batch, raw_disc, weights, vgg)
    finally:
        raw_disc.requires_grad_(True)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()

    with autocast():
        loss_d = discriminator_objective(disc, batch, out, {**DEFAULT_WEIGHTS, **(weights or {})}["raw"])
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return {**terms, "total": float(loss_g.detach()), "disc": float(loss_d.detach())}
