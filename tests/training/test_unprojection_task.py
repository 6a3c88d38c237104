"""Tests for the unprojection training data and task on a synthetic store (no real media needed)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from rhythmhead.config import load_config
from rhythmhead.data.synthetic import make_synthetic_store
from rhythmhead.geometry.uv import denormalize_positions, face_uv, sample_vertices
from rhythmhead.training.unprojection_data import Augment, PositionMapFrames, prnet_weights
from rhythmhead.training.unprojection_task import UnprojectionConfig, UnprojectionTask


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_synthetic_store(tmp_path_factory.mktemp("unproj") / "store", n_clips=4, n_frames=20, seed=3)


def test_targets_hold_the_mesh(store):
    ds = PositionMapFrames(store, store.ids()[:1], image_size=64, frame_stride=5)
    item = ds[1]
    assert item["image"].shape == (3, 64, 64) and item["position_map"].shape == (3, 64, 64)
    assert -1 <= float(item["image"].min()) and float(item["image"].max()) <= 1
    back = denormalize_positions(sample_vertices(item["position_map"].permute(1, 2, 0), face_uv()))
    err = (back - item["mesh"]).norm(dim=-1)
    assert err.median() < 2.0 and err.mean() < 4.0  # 64² map: 4 crop pixels per map pixel


def test_augmentation_moves_image_and_mesh_together(store):
    ds = PositionMapFrames(store, store.ids()[:1], image_size=128, frame_stride=5,
                           augment=Augment(rotate_deg=12, scale=0.1, shift_px=10, color=0.0))
    # a coordinate-coded image: channel 0 = x, channel 1 = y of the crop (in [−1, 1]); after augmentation, the image
    # sampled at the moved mesh must still read the original positions of the mesh
    ys, xs = torch.meshgrid(torch.arange(128) + 0.5, torch.arange(128) + 0.5, indexing="ij")
    code = torch.stack([xs / 64 - 1, ys / 64 - 1, torch.zeros_like(xs)])
    torch.manual_seed(0)
    for _ in range(3):
        original = ds.meshes[0].clone()
        image, moved = ds._augment(code.clone(), original.clone())
        assert (moved - original).abs().max() > 2.0  # it did move
        grid = (moved[None, :, None, :2] / 128.0) - 1.0
        read = F.grid_sample(image[None], grid, align_corners=False)[0, :2, :, 0].T  # (468, 2) in [−1, 1]
        inside = ((original[:, :2] > 4) & (original[:, :2] < 252)).all(1)
        err = ((read + 1) * 128 - original[:, :2])[inside].norm(dim=-1)
        assert err.mean() < 1.0, err.mean()


def test_prnet_weights_layout():
    w = prnet_weights(64)
    assert w.shape == (64, 64) and float(w.max()) > 2 * float(w[w > 0].min())


def test_task_steps_and_validates(store, tmp_path):
    cfg = load_config(UnprojectionConfig, "unprojection", "fast", {
        "model": {"image_size": 64, "base_channels": 2}, "trainer": {"batch_size": 2},
        "data": {"frame_stride": 10, "val_frame_stride": 10}})
    task = UnprojectionTask(cfg, str(store.root))
    modules = task.build(torch.device("cpu"))
    task.bind(modules)
    opts = task.make_optimizers(modules)
    train, val = task.dataset("train"), task.dataset("val")
    assert len(train) > 0 and len(val) > 0
    assert not set(train.clip_ids) & set(val.clip_ids)
    batch = torch.utils.data.default_collate([train[0], train[1]])
    torch.manual_seed(0)
    losses = [task.train_step(batch, s, opts)["Loss/position"] for s in range(8)]
    assert losses[-1] < losses[0]  # fits one batch
    metrics = task.validate([torch.utils.data.default_collate([val[0], val[1]])])
    assert set(metrics) == {"mse", "nme68"} and all(v > 0 for v in metrics.values())


def test_train_cli_writes_an_export(store, tmp_path):
    from rhythmhead.cli import main

    run = tmp_path / "run"
    main(["train", "unprojection", "--data", str(store.root), "--out", str(run), "--max-steps", "2",
          "--set", "trainer.batch_size=2", "--set", "model.image_size=64", "--set", "model.base_channels=2",
          "--set", "trainer.val_every=0"])
    meta = json.loads((run / "export" / "unprojection.json").read_text())
    assert meta["stage"] == "unprojection" and meta["config"]["model"]["image_size"] == 64


@pytest.mark.parametrize("preset", ["fast", "paper"])
def test_presets_build_their_network(preset):
    from dataclasses import asdict

    from rhythmhead.models.unprojection import UnprojectionNet

    cfg = load_config(UnprojectionConfig, "unprojection", preset)
    net = UnprojectionNet(**asdict(cfg.model))
    assert net.image_size == cfg.model.image_size
    if preset == "paper":
        assert cfg.model.image_size == 256 and cfg.model.base_channels == 16 and cfg.loss.region_weighting
