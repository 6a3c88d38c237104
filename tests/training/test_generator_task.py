"""The generator task and its data (rhythmhead.training.generator_task, generator_data) on a small synthetic store."""
from __future__ import annotations

import inspect
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from rhythmhead.config import load_config
from rhythmhead.data.synthetic import make_synthetic_store
from rhythmhead.errors import InputError
from rhythmhead.geometry.flow import warp
from rhythmhead.inference.random_bundle import TINY_DISC, TINY_GENERATOR
from rhythmhead.models.checkpoint import load_export
from rhythmhead.models.discriminator import Discriminator
from rhythmhead.models.generator import ABLATIONS, Generator
from rhythmhead.training.generator_data import GeneratorDataset, open_stores, split_clips
from rhythmhead.training.generator_task import GeneratorConfig, GeneratorTask, generator_kwargs
from rhythmhead.training.trainer import Trainer

S = 64
TINY = {"model": {**TINY_GENERATOR, "composition": "nonlinear"}, "disc": TINY_DISC,
        "trainer": dict(batch_size=2, max_steps=2, log_every=1, val_every=2, checkpoint_every=2, val_batches=1),
        "data": dict(image_size=S, shots=2, samples_per_clip=8, min_frames=8),
        "optim": dict(lr_g=1e-3, lr_d=1e-3)}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen") / "store"
    make_synthetic_store(root, n_clips=4, n_frames=40, with_audio=False)
    return root


def cfg_for(override=None):
    return load_config(GeneratorConfig, "generator", "fast", {**TINY, **(override or {})})


def test_presets_build_their_networks():
    for preset in ("fast", "paper"):
        cfg = load_config(GeneratorConfig, "generator", preset)
        assert cfg.ablation == "none" and cfg.optim.betas == (0.0, 0.999)
        assert set(asdict(cfg.model)) == set(inspect.signature(Generator).parameters)
        Discriminator(**asdict(cfg.disc))
    paper = load_config(GeneratorConfig, "generator", "paper")
    assert (paper.model.ngf, paper.data.shots, paper.optim.lr_g, paper.optim.lr_d) == (32, 8, 2e-4, 8e-4)


def test_ablation_field_maps_onto_switches():
    cfg = cfg_for()
    assert generator_kwargs(replace(cfg, ablation="baseline")) == {
        **asdict(cfg.model), "attention": "mean", "composition": "linear", "warp": False, "render3d": False}
    for name in ABLATIONS:
        Generator(**generator_kwargs(replace(cfg, ablation=name)))
    with pytest.raises(ValueError):
        GeneratorTask(replace(cfg, ablation="nope"), None)


def test_dataset_sample_is_consistent(store):
    cfg = cfg_for()
    stores = open_stores(str(store))
    train, val = split_clips(stores, 0.25, 0)
    assert train and val and not {c for c in train} & {c for c in val}
    ds = GeneratorDataset(stores, train, cfg.data, seed=0, augment=True)
    item = ds[1]
    assert item["ref_images"].shape == (2, 3, S, S) and item["ref_labels"].shape == (2, 1, S, S)
    for key in ("target_image", "warp_ref_image", "render_image"):
        assert item[key].shape == (3, S, S) and item[key].min() >= -1 and item[key].max() <= 1
    # determinism per index
    again = ds[1]
    assert all(torch.equal(item[k], again[k]) for k in item)
    # the warping reference is one of the references
    assert any(torch.equal(item["warp_ref_image"], r) for r in item["ref_images"])
    # pseudo-GT flow moves the reference onto the target (inside the valid mask), also under augmentation
    for i in range(4):
        it = ds[i]
        m = it["flow_ref_valid"][None]
        warped = warp(it["warp_ref_image"][None], it["flow_ref"][None])
        err = ((warped - it["target_image"][None]).abs() * m).sum() / (3 * m.sum())
        base = ((it["warp_ref_image"][None] - it["target_image"][None]).abs() * m).sum() / (3 * m.sum())
        assert err < 0.6 * base + 0.02, (i, float(err), float(base))
    # the worst reference is chosen without augmentation (validation)
    val_ds = GeneratorDataset(stores, train, cfg.data, seed=0, augment=False)
    pick = val_ds.choose(3)
    track = stores[0].track(pick["key"][1])
    rot = track["pose"][:, :3]
    diffs = np.abs(rot[pick["refs"]] - rot[pick["target"]]).mean(-1)
    assert pick["warp_slot"] == int(diffs.argmax())
    n_ref = round(track["pose"].shape[0] * 0.25)
    assert (pick["refs"] < n_ref).all() and pick["target"] >= n_ref


def test_training_steps_lower_the_reconstruction_loss(store):
    torch.manual_seed(0)
    task = GeneratorTask(cfg_for(), str(store))
    modules = task.build(torch.device("cpu"))
    task.bind(modules)
    opts = task.make_optimizers(modules)
    ds = task.dataset("train")
    batch = task.collate([ds[i] for i in range(2)])
    first = task.train_step(batch, 0, opts)
    for step in range(1, 12):
        last = task.train_step(batch, step, opts)
    for key in ("Loss/gan", "Loss/feat", "Loss/rec", "Loss/warp", "Loss/flow", "Loss/disc"):
        assert np.isfinite(first[key]) and np.isfinite(last[key])
    assert last["Loss/rec"] < first["Loss/rec"] and last["Loss/flow"] < first["Loss/flow"]
    val = task.validate([batch])
    assert set(val) >= {"l1", "ssim", "psnr", "warp_l1"}


def test_trainer_run_exports_g_and_d(store, tmp_path):
    task = GeneratorTask(cfg_for({"ablation": "no_attention"}), str(store))
    trainer = Trainer(task, tmp_path / "run", "cpu")
    trainer.fit()
    export = load_export(tmp_path / "run", stage="generator")
    assert export.meta["config"]["ablation"] == "no_attention"
    kwargs = export.meta["generator_kwargs"]
    assert kwargs["attention"] == "mean"
    g = Generator(**kwargs)
    g.load_state_dict(export.state_dicts["generator"])
    Discriminator(**export.meta["discriminator_kwargs"]).load_state_dict(export.state_dicts["disc"])
    g.eval()
    trained = task.modules["generator"].eval()
    batch = task.collate([task.dataset("val")[0]])
    keys = ("ref_images", "ref_labels", "target_label", "warp_ref_image", "warp_ref_label", "render_image",
            "render_label")
    with torch.no_grad():
        assert torch.equal(g(*(batch[k] for k in keys))["image"], trained(*(batch[k] for k in keys))["image"])


def test_init_from_warm_starts_another_resolution_and_ablation(store, tmp_path):
    """An export at 64² (3 levels) initialises a 32² G with 2 levels and the no_warp ablation: every tensor with the
    same name and shape is copied, the rest stays random; an export of a narrower network is refused."""
    task = GeneratorTask(cfg_for(), str(store))
    Trainer(task, tmp_path / "run", "cpu").fit()
    source = load_export(tmp_path / "run", stage="generator").state_dicts["generator"]
    small = {"model": {**TINY["model"], "image_size": 32, "n_downsample": 2},
             "data": {**TINY["data"], "image_size": 32}, "init_from": str(tmp_path / "run"), "ablation": "no_warp"}
    with pytest.warns(UserWarning, match="keep their random initialisation"):
        gen = GeneratorTask(cfg_for(small), str(store)).build(torch.device("cpu"))["generator"]
    state = gen.state_dict()
    copied = [k for k, v in state.items() if k in source and source[k].shape == v.shape]
    assert len(copied) > 0.9 * len(state) and "enc_img.0.0.bias" in copied
    assert all(torch.equal(state[k], source[k]) for k in copied)
    assert "enc_img.3.0.bias" in source and "enc_img.3.0.bias" not in state  # the 64² export's extra level
    assert not hasattr(gen, "flow_ref")

    other = {"model": {**TINY["model"], "ngf": 3, "max_channels": 6, "fc_hidden": 5, "flow_ngf": 3,
                       "flow_max_channels": 5, "spade_hidden": 5, "attn_channels": 3},
             "disc": {**TINY["disc"], "ndf": 3, "max_channels": 6}, "init_from": str(tmp_path / "run")}
    with pytest.raises(InputError, match="fits under half"):
        GeneratorTask(cfg_for(other), str(store)).build(torch.device("cpu"))


def _old_train_step(task, batch, optimizers):
    """The oracle: GeneratorTask.train_step as it was before the GAN step moved to models.losses.gan_step (verbatim)."""
    import torch.nn.functional as F

    from rhythmhead.models.losses import discriminator_objective, generator_objective

    gen, disc = task.modules["generator"], task.modules["disc"]
    gen.train()
    disc.train()
    weights = asdict(task.cfg.loss)
    out = task._generate(gen, batch, need_raw=True)

    raw_disc = getattr(disc, "module", disc)
    raw_disc.requires_grad_(False)
    with task._autocast():
        loss_g, terms = generator_objective(out, batch, raw_disc, weights, task.vgg)
    raw_disc.requires_grad_(True)
    optimizers["generator"].zero_grad(set_to_none=True)
    loss_g.backward()
    optimizers["generator"].step()

    with task._autocast():
        loss_d = discriminator_objective(disc, batch, out, weights["raw"])
    optimizers["disc"].zero_grad(set_to_none=True)
    loss_d.backward()
    optimizers["disc"].step()

    stats = {f"Loss/{k}": v for k, v in terms.items()}
    stats["Loss/total"] = float(loss_g.detach())
    stats["Loss/disc"] = float(loss_d.detach())
    stats["Train/l1"] = float(F.l1_loss(out["image"].detach(), batch["target_image"]))
    return stats


def test_train_step_matches_the_old_inline_gan_step_bit_for_bit(store):
    """train_step through the shared models.losses.gan_step gives the very losses, weights and Adam moments of the
    inline G-step/D-step it replaced, over 3 steps."""
    runs = []
    for step_fn in (lambda t, b, s, o: t.train_step(b, s, o), lambda t, b, s, o: _old_train_step(t, b, o)):
        torch.manual_seed(0)
        task = GeneratorTask(cfg_for(), str(store))
        modules = task.build(torch.device("cpu"))
        task.bind(modules)
        opts = task.make_optimizers(modules)
        batch = task.collate([task.dataset("train")[i] for i in range(2)])
        torch.manual_seed(1)
        stats = [step_fn(task, batch, s, opts) for s in range(3)]
        runs.append((stats, modules, opts))
    (new, new_mods, new_opts), (old, old_mods, old_opts) = runs
    assert new == old and set(new[0]) >= {"Loss/gan", "Loss/flow", "Loss/total", "Loss/disc", "Train/l1"}
    for name in ("generator", "disc"):
        a, b = new_mods[name].state_dict(), old_mods[name].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
        sa, sb = new_opts[name].state_dict()["state"], old_opts[name].state_dict()["state"]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i]), name
    assert all(p.requires_grad for p in new_mods["disc"].parameters())
