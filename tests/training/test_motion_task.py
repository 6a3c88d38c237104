"""Φ training task and its data (rhythmhead.training.motion_task, learner_data) on a small synthetic store."""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from rhythmhead.config import from_dict, load_config
from rhythmhead.models.motion import HeadMotionLearner
from rhythmhead.common import hann_taps, smooth
from rhythmhead.training.learner_data import MotionWindows, eval_windows
from rhythmhead.training.motion_task import MotionConfig, MotionTask

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learner_store import make_store  # noqa: E402

TINY = {"model": {"conv_channels": [2, 4], "conv_strides": [4, 4], "hidden_channels": 16, "feature_dim": 16,
                  "pose_hidden": 16, "encoder_channels": 16, "dropout": 0.1},
        "adv_weight": 0.05,
        "trainer": {"batch_size": 4, "max_steps": 3, "val_every": 2, "checkpoint_every": 2, "val_batches": 2,
                    "log_every": 1},
        "data": {"tau_min": 8, "tau_max": 24, "pred_min": 4, "pred_max": 24, "val_tau": 16, "val_pred": 16,
                 "frames_per_item": 16}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("motion") / "store", n_clips=5, n_frames=72)


def task_for(store, override=None):
    cfg = load_config(MotionConfig, "motion", "fast", TINY if override is None else override)
    return MotionTask(cfg, str(store))


def test_presets_load_and_match_the_network():
    for preset in ("fast", "paper"):
        cfg = load_config(MotionConfig, "motion", preset)
        HeadMotionLearner(**asdict(cfg.model))  # the model fields are exactly the constructor's kwargs
        assert 0 < cfg.adv_weight <= 5.0  # the adversarial term is on (its weight: the presets' comments)
    assert load_config(MotionConfig, "motion", "paper").optim.lr == pytest.approx(3e-4)


def test_split_is_speaker_disjoint_and_stats_from_train(store):
    task = task_for(store)
    train, val = task.clips("train"), task.clips("val")
    assert train and val
    assert not {c.speaker for c in train} & {c.speaker for c in val}
    mean, std = task.pose_stats()
    poses = np.concatenate([smooth(c.pose, 11) for c in train])
    np.testing.assert_allclose(mean, poses.mean(0), rtol=1e-4, atol=1e-6)
    ds = task.dataset("train")
    normalised = np.concatenate(ds.poses)
    np.testing.assert_allclose(normalised.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(normalised.std(0), 1, atol=1e-3)


def test_hanning_smoothing():
    w = hann_taps(11)
    assert len(w) == 11 and w.min() > 0 and w.sum() == pytest.approx(1)
    x = np.zeros((31, 2), np.float32)
    x[15] = 1
    y = smooth(x, 11)
    np.testing.assert_allclose(y[10:21, 0], w, atol=1e-6)  # an impulse becomes the window
    np.testing.assert_allclose(smooth(np.ones((9, 6)), 11), 1, atol=1e-6)  # constants survive the edges


def test_training_windows_and_collate(store):
    torch.manual_seed(0)
    ds = task_for(store).dataset("train")
    items = [ds[i % len(ds)] for i in range(12)]
    for it in items:
        tau, n = int(it["tau"]), it["pose"].shape[0]
        assert 1 <= tau < n and it["audio"].shape == (n, 7, 640)
        assert 8 <= tau <= 24 and 4 <= n - tau <= 24
    batch = MotionWindows.collate(items[:4])
    tau = int(batch["tau"])
    assert tau == min(int(it["tau"]) for it in items[:4])
    pred = batch["pose"].shape[1] - tau
    assert pred == min(it["pose"].shape[0] - int(it["tau"]) for it in items[:4])
    first = items[0]
    t0 = int(first["tau"])
    torch.testing.assert_close(batch["pose"][0], first["pose"][t0 - tau: t0 + pred])  # boundary kept in place


def test_eval_windows():
    assert eval_windows(300) == [(0, 64, 64), (128, 64, 64)]
    assert eval_windows(128) == [(0, 64, 64)]
    start, tau, pred = eval_windows(52)[0]
    assert start == 0 and tau + pred == 52 and pred >= 8
    assert eval_windows(1) == []


def test_train_steps_lower_the_loss(store):
    task = task_for(store)
    torch.manual_seed(0)
    modules = task.build(torch.device("cpu"))
    task.bind(modules)
    opts = task.make_optimizers(modules)
    ds = task.dataset("train")
    batch = task.collate([ds[i % len(ds)] for i in range(4)])
    losses = [task.train_step(batch, s, opts)["Loss/mse"] for s in range(25)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3]), losses
    stats = task.train_step(batch, 25, opts)
    assert {"Loss/disc", "Loss/adv", "Loss/total"} <= set(stats)
    val = task.validate([task.collate([task.dataset("val")[0]])])
    assert set(val) >= {"mse", "l1_rot_deg", "l1_trans_px"} and all(np.isfinite(list(val.values())))


def test_trainer_runs_and_exports(store, tmp_path):
    from rhythmhead.models.checkpoint import load_export
    from rhythmhead.training.trainer import Trainer

    task = task_for(store)
    Trainer(task, tmp_path / "run", "cpu").fit(3)
    export = load_export(tmp_path / "run", stage="motion")
    assert set(export.extra) == {"pose_mean", "pose_std"}
    np.testing.assert_allclose(export.extra["pose_mean"].numpy(), task.pose_stats()[0])
    cfg = from_dict(MotionConfig, export.config)
    net = HeadMotionLearner(**asdict(cfg.model))
    net.load_state_dict(export.state_dicts["motion"])
    assert "disc" not in export.state_dicts
    assert (tmp_path / "run" / "val.jsonl").is_file()


def test_clips_without_audio_are_skipped(tmp_path):
    synthetic = pytest.importorskip("rhythmhead.data.synthetic")
    from rhythmhead.errors import InputError
    from rhythmhead.training.learner_data import load_clips

    store = tmp_path / "silent"
    synthetic.make_synthetic_store(store, n_clips=2, n_frames=20, with_audio=False)
    assert load_clips(store, ["syn000", "syn001"]) == []
    with pytest.raises(InputError, match="no train clips"):
        task_for(store).dataset("train")


def test_smoothing_refuses_an_even_tap_count():
    with pytest.raises(ValueError, match="odd"):
        smooth(np.zeros((9, 6), np.float32), 4)
    x = np.arange(12, dtype=np.float64).reshape(6, 2)
    assert smooth(x, 1) is x and smooth(x, 3).dtype == np.float64


def test_inference_feeds_phi_the_training_inputs(store):
    """Train/serve parity: for the same clip, the reference inputs inference gives Φ's encoder
    (inference.reference.motion_reference_inputs) are the arrays of the training data's window at frame 0."""
    from types import SimpleNamespace

    from rhythmhead.inference.reference import motion_reference_inputs

    task = task_for(store)
    ds = task.dataset("val")
    ci, start, tau, _ = ds.index[0]
    assert start == 0
    clip, item = ds.clips[ci], ds[0]
    mean, std = task.pose_stats()
    m = task.cfg.model
    motion = SimpleNamespace(tau=tau, audio_rate=m.audio_rate, fps=m.fps, smooth_taps=task.cfg.data.smooth_taps,
                             pose_mean=mean, pose_std=std)
    windows, norm = motion_reference_inputs(motion, clip.pose, clip.wave)
    np.testing.assert_array_equal(windows, item["audio"][:tau].numpy())
    np.testing.assert_allclose(norm, item["pose"][:tau].numpy(), rtol=0, atol=1e-6)
