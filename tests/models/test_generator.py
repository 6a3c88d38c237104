"""The generator G (rhythmhead.models.generator): shapes, gradients, ablation switches, determinism, save/load, the
once-per-reference split, and test-time fine-tuning."""
from __future__ import annotations

import pytest
import torch

from rhythmhead.inference.random_bundle import TINY_GENERATOR
from rhythmhead.models.discriminator import Discriminator
from rhythmhead.models.finetune import FINETUNE_PREFIXES, finetune
from rhythmhead.models.generator import ABLATIONS, Generator, apply_ablation

S, K, B = 64, 2, 2
TINY = {**TINY_GENERATOR, "composition": "nonlinear"}  # 64², 3 levels, every branch on (the paper's composition)


def inputs(seed=0, b=B, k=K):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g) * 2 - 1  # noqa: E731
    mouth = torch.zeros(b, 1, S, S)
    mouth[:, :, 40:50, 22:42] = 1
    return dict(ref_images=r(b, k, 3, S, S), ref_labels=r(b, k, 1, S, S), target_label=r(b, 1, S, S),
                warp_ref_image=r(b, 3, S, S), warp_ref_label=r(b, 1, S, S), render_image=r(b, 3, S, S),
                render_label=r(b, 1, S, S), mouth_mask=mouth)


def make(ablation="none", seed=0, **kw):
    torch.manual_seed(seed)
    return Generator(**apply_ablation({**TINY, **kw}, ablation))


@pytest.mark.parametrize("ablation", list(ABLATIONS))
def test_shapes_finite_and_gradients_reach_every_parameter(ablation):
    g = make(ablation)
    out = g(**inputs())
    assert out["image"].shape == (B, 3, S, S) and torch.isfinite(out["image"]).all()
    assert out["image"].abs().max() <= 1
    assert out["ref_idx"].shape == (B,) and out["attention"].shape == (B, K)
    torch.testing.assert_close(out["attention"].sum(1), torch.ones(B))
    for name in ("flow_ref", "flow_render"):
        if out[name] is not None:
            assert out[name].shape == (B, 2, S, S)
            assert out[name.replace("flow", "conf")].shape == (B, 1, S, S)
            assert out[name.replace("flow", "warped")].shape == (B, 3, S, S)
    # a loss on what training uses: images and flows (not the attention mass)
    loss = out["image"].square().mean() + out["raw"].square().mean()
    for name in ("flow_ref", "flow_render", "conf_ref", "conf_render"):
        if out[name] is not None:
            loss = loss + out[name].square().mean()
    loss.backward()
    missing = [n for n, p in g.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"{ablation}: no gradient for {missing[:5]}"


def test_ablations_do_not_create_unused_modules():
    full = make()
    assert all(hasattr(full, m) for m in ("fusion", "target_attn", "flow_ref", "flow_render", "embed_ref",
                                            "embed_render"))
    base = make("baseline")
    assert not any(hasattr(base, m) for m in ("fusion", "target_attn", "flow_ref", "flow_render", "embed_ref",
                                              "embed_render"))
    assert not hasattr(make("no_attention"), "fusion")
    nw = make("no_warp")
    assert not hasattr(nw, "flow_ref") and hasattr(nw, "embed_render")
    nr = make("no_render3d")
    assert not hasattr(nr, "flow_render") and not hasattr(nr, "embed_render") and hasattr(nr, "flow_ref")
    lin = make("linear_composition")
    assert not hasattr(lin, "embed_ref") and hasattr(lin, "flow_render")
    assert sum(p.numel() for p in base.parameters()) < sum(p.numel() for p in full.parameters())


def test_linear_composition_is_a_convex_blend_and_baseline_is_raw():
    g = make("linear_composition").eval()
    with torch.no_grad():
        out = g(**inputs())
    blend = out["raw"] * out["conf_render"] + out["warped_render"] * (1 - out["conf_render"])
    torch.testing.assert_close(out["image"], blend * out["conf_ref"] + out["warped_ref"] * (1 - out["conf_ref"]))
    base = make("baseline").eval()
    with torch.no_grad():
        out = base(**inputs())
    torch.testing.assert_close(out["image"], out["raw"])


def test_mouth_box_is_masked_in_the_warped_inputs():
    g = make().eval()
    x = inputs()
    with torch.no_grad():
        out = g(**x)
    inside = x["mouth_mask"].bool().expand(-1, 3, -1, -1)
    assert (out["warped_ref"][inside] == -1).all() and (out["warped_render"][inside] == -1).all()
    assert (out["warped_ref"][~inside] != -1).float().mean() > 0.9


def test_deterministic_and_seeded():
    x = inputs()
    g1, g2 = make(seed=3).eval(), make(seed=3).eval()
    with torch.no_grad():
        a, b, c = g1(**x)["image"], g1(**x)["image"], g2(**x)["image"]
    assert torch.equal(a, b) and torch.equal(a, c)
    with torch.no_grad():
        assert not torch.equal(a, make(seed=4).eval()(**x)["image"])


def test_state_dict_round_trip(tmp_path):
    g = make(seed=1)
    g(**inputs())  # a train-mode pass updates norm statistics / spectral-norm vectors
    g.eval()
    torch.save(g.state_dict(), tmp_path / "g.pt")
    h = make(seed=2)
    h.load_state_dict(torch.load(tmp_path / "g.pt", weights_only=True))
    h.eval()
    x = inputs(5)
    with torch.no_grad():
        assert torch.equal(g(**x)["image"], h(**x)["image"])


def test_embed_once_then_generate_equals_forward_and_any_k():
    g = make().eval()
    x = inputs(2, k=3)
    with torch.no_grad():
        full = g(**x)
        emb = g.embed_references(x["ref_images"], x["ref_labels"])
        assert emb.shots == 3
        per = g.generate(emb, x["target_label"], x["warp_ref_image"], x["warp_ref_label"], x["render_image"],
                         x["render_label"], mouth_mask=x["mouth_mask"])
        for key in ("image", "raw", "flow_ref", "warped_render"):
            torch.testing.assert_close(per[key], full[key])
        # a second target on the same embedding; K = 1 works too
        other = inputs(3, k=3)
        assert not torch.equal(g.generate(emb, other["target_label"], other["warp_ref_image"], other["warp_ref_label"],
                                          other["render_image"], other["render_label"])["image"], per["image"])
        one = g(**inputs(4, k=1))
        assert one["image"].shape == (B, 3, S, S) and (one["ref_idx"] == 0).all()


def test_attention_depends_on_the_target_and_picks_ref_idx():
    g = make().eval()
    x = inputs(6, b=1, k=3)
    with torch.no_grad():
        emb = g.embed_references(x["ref_images"], x["ref_labels"])
        att = [g.generate(emb, x["ref_labels"][:, i], x["warp_ref_image"], x["warp_ref_label"], x["render_image"],
                          x["render_label"]) for i in range(3)]
    assert not torch.equal(att[0]["attention"], att[1]["attention"])
    for a in att:
        assert a["ref_idx"].item() == a["attention"].argmax().item()
    mean = make("no_attention").eval()
    with torch.no_grad():
        out = mean(**x)
    torch.testing.assert_close(out["attention"], torch.full((1, 3), 1 / 3))


def test_bad_shapes_and_settings_raise():
    g = make()
    x = inputs()
    x["target_label"] = x["target_label"][:, :, :32]
    with pytest.raises(ValueError, match="target_label"):
        g(**x)
    with pytest.raises(ValueError):
        Generator(**{**TINY, "attention": "bogus"})
    with pytest.raises(ValueError):
        apply_ablation(TINY, "no_such_ablation")


def test_finetune_trains_only_the_named_parts_and_d():
    g = make().eval()
    d = Discriminator(ndf=4, n_layers=2, max_channels=16)
    x = inputs(7, b=1, k=3)
    refs = {"ref_images": x["ref_images"], "ref_labels": x["ref_labels"],
            "render_images": x["ref_images"], "render_labels": x["ref_labels"],
            "poses": torch.randn(1, 3, 6)}
    before_g = {n: p.detach().clone() for n, p in g.named_parameters()}
    before_d = [p.detach().clone() for p in d.parameters()]
    hist = finetune(g, d, refs, steps=2, batch_size=2)
    assert len(hist) == 2 and all(torch.isfinite(torch.tensor(h["total"])) for h in hist)
    for n, p in g.named_parameters():
        changed = not torch.equal(p, before_g[n])
        if n.startswith(FINETUNE_PREFIXES):
            continue
        assert not changed, f"{n} changed"
    assert any(not torch.equal(p, before_g[n]) for n, p in g.named_parameters() if n.startswith("weight_gen."))
    assert any(not torch.equal(a, b) for a, b in zip(d.parameters(), before_d))
    assert all(p.requires_grad for p in g.parameters()) and not g.training
    with pytest.raises(ValueError, match="render"):
        finetune(g, d, {"ref_images": x["ref_images"], "ref_labels": x["ref_labels"]}, steps=1)


@pytest.mark.parametrize("ablation", ["none", "linear_composition"])
def test_fold_for_inference_keeps_the_images(ablation):
    """Folding spectral norm and BatchNorm (with real running statistics) into the convs, plus channels-last memory,
    changes no image beyond float rounding; the folded copy has no spectral norm or conv-following BatchNorm left, and
    a network in training mode is refused."""
    from torch.nn.utils import parametrize

    from rhythmhead.models.util import fold_for_inference

    g = make(ablation, norm="batch")
    with torch.no_grad():
        for seed in range(3):  # running statistics away from their (0, 1) start
            g(**inputs(seed + 10))
    g.eval()
    with pytest.raises(ValueError, match="eval mode"):
        fold_for_inference(make(ablation, norm="batch"))
    folded = make(ablation, norm="batch", seed=1)
    folded.load_state_dict(g.state_dict())
    folded = fold_for_inference(folded.eval())
    assert not any(parametrize.is_parametrized(m) for m in folded.modules())
    seqs = [m for m in folded.modules() if isinstance(m, torch.nn.Sequential)]
    assert not any(isinstance(a, torch.nn.Conv2d) and isinstance(b, torch.nn.BatchNorm2d)
                   for s in seqs for a, b in zip(s, list(s)[1:]))
    assert any(parametrize.is_parametrized(m) for m in g.modules())  # the original keeps its spectral norm
    with torch.no_grad():
        want, got = g(**inputs(), need_raw=False)["image"], folded(**inputs(), need_raw=False)["image"]
    assert (want - got).abs().max() < 1e-4 and (want - make(ablation, norm="batch", seed=5).eval()(
        **inputs(), need_raw=False)["image"]).abs().max() > 1e-2


def test_linear_composition_fades_out_of_the_mouth_box():
    """Inside the mouth box the linear composition takes the synthesised image only; its confidence stays high in a
    thin ring around the box and falls back to the flow network's far from it."""
    from rhythmhead.models.generator import feathered

    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 10:20, 8:24] = 1
    soft = feathered(mask, 2)
    assert (soft[mask.bool()] == 1).all() and soft.min() == 0
    assert 0 < soft[0, 0, 21, 16] < 1 and soft[0, 0, 28, 16] == 0  # the ring just below the box, then nothing
    g = make("linear_composition").eval()
    x = inputs()
    with torch.no_grad():
        out = g(**x)
    inside = x["mouth_mask"].bool()
    assert (out["conf_ref"][inside] == 1).all() and (out["conf_render"][inside] == 1).all()
    torch.testing.assert_close(out["image"].masked_select(inside.expand(-1, 3, -1, -1)),
                               out["raw"].masked_select(inside.expand(-1, 3, -1, -1)))


def _old_finetune(generator, discriminator, references, steps, *, batch_size=4, lr_g=1e-4, lr_d=4e-4,
                  betas=(0.0, 0.999), weights=None, vgg=None, seed=0):
    """The oracle: models.finetune.finetune as it was before the GAN step moved to models.losses.gan_step (verbatim,
    less the argument checks)."""
    from rhythmhead.models.finetune import finetune_parameters
    from rhythmhead.models.generator import RefEmbedding
    from rhythmhead.models.losses import discriminator_objective, generator_objective

    ref_images, ref_labels = references["ref_images"], references["ref_labels"]
    k = ref_images.shape[1]
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
            discriminator.requires_grad_(False)
            loss_g, terms = generator_objective(out, batch, discriminator, weights, vgg)
            discriminator.requires_grad_(True)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            loss_d = discriminator_objective(discriminator, batch, out, (weights or {}).get("raw", 1.0))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            history.append({**terms, "total": float(loss_g.detach()), "disc": float(loss_d.detach())})
    finally:
        for n, p in generator.named_parameters():
            p.requires_grad_(grad_state[n])
        generator.train(was_training[0])
        discriminator.train(was_training[1])
    return history


@pytest.mark.parametrize("weights", [None, {"raw": 0.5, "feat": 3.0}])
def test_finetune_matches_the_old_inline_gan_step_bit_for_bit(weights):
    """finetune through the shared models.losses.gan_step gives the very losses and weights of the inline
    G-step/D-step it replaced, over 3 steps (with mouth masks, with and without poses)."""
    x = inputs(7, b=1, k=3)
    refs = {"ref_images": x["ref_images"], "ref_labels": x["ref_labels"], "render_images": x["ref_images"],
            "render_labels": x["ref_labels"], "mouth_masks": x["mouth_mask"][:, None].expand(1, 3, 1, S, S)}
    if weights is not None:
        refs["poses"] = torch.randn(1, 3, 6, generator=torch.Generator().manual_seed(3))
    runs = []
    for fn in (finetune, _old_finetune):
        g = make().eval()
        torch.manual_seed(1)
        d = Discriminator(ndf=4, n_layers=2, max_channels=16)
        torch.manual_seed(2)
        runs.append((fn(g, d, refs, steps=3, batch_size=2, weights=weights), g, d))
    (new, g_new, d_new), (old, g_old, d_old) = runs
    assert new == old and len(new) == 3 and "flow" not in new[0] and {"gan", "warp", "total", "disc"} <= set(new[0])
    for a, b in ((g_new, g_old), (d_new, d_old)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_gan_step_freezes_the_unwrapped_d_for_g_only():
    """G's terms go through the raw D under a DDP-style ``.module`` wrapper, and G's backward leaves D without
    gradients; D's step goes through the wrapper with D trainable, and D stays trainable when G's objective fails."""
    from rhythmhead.models.losses import gan_step

    class Wrapper(torch.nn.Module):  # stands in for DistributedDataParallel
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x):
            frozen.append(not any(p.requires_grad for p in self.module.parameters()))
            return self.module(x)

    g, d, x = make().eval(), Discriminator(ndf=4, n_layers=2, max_channels=16), inputs(1, b=1)
    out = g(**x, need_raw=True)
    batch = {"target_image": x["warp_ref_image"].flip(-1), "target_label": x["target_label"],
             "warp_ref_image": x["warp_ref_image"], "warp_ref_label": x["warp_ref_label"]}
    opt_g, opt_d = torch.optim.SGD(g.parameters(), lr=0.0), torch.optim.SGD(d.parameters(), lr=0.0)
    frozen, d_grads_after_g = [], []
    opt_g.step = lambda closure=None: d_grads_after_g.extend(p.grad for p in d.parameters())
    terms = gan_step(out, batch, Wrapper(d), (opt_g, opt_d))
    assert frozen == [False]  # one call through the wrapper (D's step); G's call went to the raw D
    assert d_grads_after_g and all(gr is None for gr in d_grads_after_g)
    assert all(p.grad is not None for p in d.parameters()) and all(p.requires_grad for p in d.parameters())
    assert {"gan", "feat", "rec", "total", "disc"} <= set(terms)
    with pytest.raises(KeyError):
        gan_step(out, {k: v for k, v in batch.items() if k != "target_image"}, d, (opt_g, opt_d))
    assert all(p.requires_grad for p in d.parameters())
