"""Test-time fine-tuning of G (with D) on the K reference frames of one person (REFERENCE.md §1 item 6).

Only G's weight-generator FC heads (``weight_gen.*``, the paper's ``fc*``), its output conv (``conv_img``) and its decoder
blocks (``up.*``) are trained, together with the whole of D. Each step draws a small batch of references as targets
(their own label maps as target labels), with another reference as the warping reference, and applies the training
objective through :func:`~rhythmhead.models.losses.gan_step`, the GAN step training uses too (without flow supervision:
the batch carries no flow targets).

The encoders are frozen, so the per-shot codes are computed once and only the weight heads run again per step. G stays
in eval mode (its normalisation statistics are not changed by the tiny batches); D is in train mode while it trains.
Inference imports this module (it lives in ``models/``, not ``training/``).
"""
from __future__ import annotations

import torch

from .generator import Generator, RefEmbedding
from .losses import VGG19Features, gan_step

FINETUNE_PREFIXES = ("weight_gen.", "conv_img.", "up.")


def finetune_parameters(generator: Generator) -> list[torch.nn.Parameter]:
    """G's parameters that fine-tuning updates (names starting with :data:`FINETUNE_PREFIXES`)."""
    return [p for n, p in generator.named_parameters() if n.startswith(FINETUNE_PREFIXES)]


def finetune(generator: Generator, discriminator: torch.nn.Module, references: dict[str, torch.Tensor],
             steps: int = 70, *, batch_size: int = 4, lr_g: float = 1e-4, lr_d: float = 4e-4,
             betas: tuple[float, float] = (0.0, 0.999), weights: dict[str, float] | None = None,
             vgg: VGG19Features | None = None, seed: int = 0) -> list[dict[str, float]]:
    """Fine-tune ``generator`` and ``discriminator`` in place on one reference set.

    Args:
        generator, discriminator: the trained networks (on the device of the tensors).
        references: ``ref_images (1, K, 3, H, W)``, ``ref_labels (1, K, 1, H, W)``; ``render_images`` /
            ``render_labels`` ``(1, K, ·, H, W)`` (the 3-D render at each reference's pose) when the generator uses
            the render branch; optional ``mouth_masks (1, K, 1, H, W)`` and ``poses (1, K, 6)`` (the warping reference
            is then the most pose-different other reference, as in inference).
        steps: optimisation steps (70 in the reference code's ``finetune()``; max(20, 5·K) in ``finetune_call``).
        batch_size: targets per step (drawn from the K references).
        lr_g, lr_d, betas: Adam settings.
        weights: loss weights (see ``losses.DEFAULT_WEIGHTS``; flow terms are unused here).
        vgg: optional perceptual network.
        seed: target/warp-reference draws.

    Returns: the per-step loss terms.
    """
    ref_images, ref_labels = references["ref_images"], references["ref_labels"]
    if ref_images.ndim != 5 or ref_images.shape[0] != 1:
        raise ValueError(f"ref_images: expected (1, K, 3, H, W), got {tuple(ref_images.shape)}")
    k = ref_images.shape[1]
    if generator.use_render and ("render_images" not in references or "render_labels" not in references):
        raise ValueError("this generator uses the 3-D render: pass render_images and render_labels per reference")
    gen = torch.Generator().manual_seed(seed)
    was_training = generator.training, discriminator.training
    grad_state = {n: p.requires_grad for n, p in generator.named_parameters()}
    generator.eval()
    discriminator.train()
    for p in generator.parameters():
        p.requires_grad_(False)
    params = finetune_parameters(generator)
    for p in params:
        p.requires_grad_(True)
    opt_g = torch.optim.Adam(params, lr=lr_g, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr_d, betas=betas)
    with torch.no_grad():
        base = generator.embed_references(ref_images, ref_labels)
    poses = references.get("poses")
    history = []
    try:
        for _ in range(steps):
            b = min(batch_size, k)
            targets = torch.randperm(k, generator=gen)[:b]
            if poses is not None:
                diff = (poses[0, :, None, :3] - poses[0, None, :, :3]).abs().mean(-1)  # (K, K)
                warp = diff[targets].argmax(1).cpu()
            else:
                warp = (targets + torch.randint(1, max(k, 2), (b,), generator=gen)) % k if k > 1 else targets
            pick = lambda name, idx: references[name][0, idx.to(references[name].device)]  # noqa: E731
            batch = {"target_image": pick("ref_images", targets), "target_label": pick("ref_labels", targets),
                     "warp_ref_image": pick("ref_images", warp), "warp_ref_label": pick("ref_labels", warp)}
            if "mouth_masks" in references:
                batch["mouth_mask"] = pick("mouth_masks", targets)
            render_image = pick("render_images", targets) if generator.use_render else None
            render_label = pick("render_labels", targets) if generator.use_render else None
            emb = RefEmbedding(base.bottleneck, generator.generate_weights(base.codes), base.keys).expand(b)
            out = generator.generate(emb, batch["target_label"], batch["warp_ref_image"], batch["warp_ref_label"],
                                     render_image, render_label, mouth_mask=batch.get("mouth_mask"), need_raw=True)
            history.append(gan_step(out, batch, discriminator, (opt_g, opt_d), weights, vgg))
    finally:
        for n, p in generator.named_parameters():
            p.requires_grad_(grad_state[n])
        generator.train(was_training[0])
        discriminator.train(was_training[1])
    return history
