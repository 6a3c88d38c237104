"""The mouth synthesis network's task (rhythmhead.training.mouth_task) on a small synthetic store."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rhythmhead.config import load_config
from rhythmhead.data.store import ClipStore
from rhythmhead.data.synthetic import make_synthetic_store
from rhythmhead.geometry.mouth import mouth_inputs
from rhythmhead.models.mouth import MouthNet
from rhythmhead.training.mouth_task import MouthConfig, MouthCrops, MouthTask, to_net
from rhythmhead.training.trainer import Trainer

TINY = {"model": {"image_size": 32, "ngf": 4, "n_down": 2, "max_channels": 8}, "disc": {"ndf": 4, "n_layers": 2},
        "trainer": {"batch_size": 4, "max_steps": 30, "log_every": 5, "val_every": 30, "checkpoint_every": 30,
                    "val_batches": 2}, "optim": {"lr_g": 3e-3, "lr_d": 1e-3}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mouth") / "store"
    make_synthetic_store(root, n_clips=4, n_frames=30, with_audio=False)
    return root


def test_presets_build_the_network():
    for preset in ("fast", "paper"):
        cfg = load_config(MouthConfig, "mouth", preset)
        net = MouthNet(**cfg.model.__dict__)
        x = torch.zeros(1, 3, cfg.model.image_size, cfg.model.image_size)
        assert net(x, x[:, :1]).shape == x.shape


def test_samples_are_what_inference_computes(store):
    """Training and inference feed the network the same tensors: a validation sample is mouth_inputs of its
    reference frame for the target's landmarks, exactly as MouthSynthesis computes it."""
    s = ClipStore(store)
    ids = s.ids()[:1]
    ds = MouthCrops(s, ids, size=32, train=False)
    frames, track = s.frames(ids[0]), s.track(ids[0])
    sample = ds[7]
    # find the reference the sample drew: the closed-mouth frame whose mouth_inputs reproduce it
    found = False
    for r in range(len(frames)):
        inp = mouth_inputs(frames[r], track["landmarks"][r], track["landmarks"][7], 32)
        if torch.equal(to_net(inp["reference"]), sample["reference"]):
            found = True
            assert torch.equal(torch.from_numpy(inp["label"])[None], sample["label"])
            assert torch.equal(torch.from_numpy(inp["mask"])[None], sample["mask"])
            assert abs(r - 7) >= 10 or len(frames) < 20
            break
    assert found
    real = mouth_inputs(frames[7], track["landmarks"][7], track["landmarks"][7], 32)["reference"]
    assert torch.equal(to_net(real), sample["target"])


def test_training_lowers_the_masked_l1_and_exports(store, tmp_path):
    from rhythmhead.config import merge

    # L1 alone (the GAN's steps make the loss noisy at this size): the network starts as the identity on the
    # reference (zero-initialised residual) and must beat it on held-out clips
    cfg = load_config(MouthConfig, "mouth", "fast", merge(TINY, {"loss": {"adv": 0.0},
                                                                  "trainer": {"max_steps": 60, "val_every": 60}}))
    task = MouthTask(cfg, str(store))
    trainer = Trainer(task, tmp_path / "run", "cpu")
    trainer.fit()
    stats = [r for r in map(__import__("json").loads, (tmp_path / "run" / "stats.jsonl").read_text().splitlines())
             if "Loss/l1" in r]
    first, last = np.mean([r["Loss/l1"] for r in stats[:2]]), np.mean([r["Loss/l1"] for r in stats[-2:]])
    assert last < first
    val = __import__("json").loads((tmp_path / "run" / "val.jsonl").read_text().splitlines()[-1])
    assert val["Val/l1"] < val["Val/l1_reference"]
    from rhythmhead.inference.bundle import load_mouth

    net = load_mouth(tmp_path / "run" / "export" / "mouth.safetensors")
    assert isinstance(net, MouthNet) and net.image_size == 32 and not net.training
