"""Evaluation of Φ and Ψ (rhythmhead.evaluation.motion / expression / motion_stats)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rhythmhead.evaluation import motion_stats as ms

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from learner_store import make_store  # noqa: E402

TINY_MOTION = {"model": {"conv_channels": [2, 4], "conv_strides": [4, 4], "hidden_channels": 16, "feature_dim": 16,
                         "pose_hidden": 16, "encoder_channels": 16},
               "trainer": {"batch_size": 4, "max_steps": 2, "val_every": 0, "checkpoint_every": 100}}
TINY_EXPR = {"model": {"conv_channels": [4, 4, 4, 4, 8, 8, 8], "feature_dim": 16, "n_components": 8},
             "trainer": {"batch_size": 8, "max_steps": 2, "val_every": 0, "checkpoint_every": 100}}


def sine_pose(n=100, period=20.0, amp_deg=5.0):
    t = np.arange(n)
    pose = np.zeros((n, 6))
    pose[:, 1] = np.radians(amp_deg) * np.sin(2 * np.pi * t / period)
    pose[:, 3] = 2.0 * t  # a steady drift of 2 px/frame
    return pose


def test_std_and_mean_change():
    pose = sine_pose()
    std, change = ms.motion_std(pose), ms.mean_change(pose)
    assert std[1] == pytest.approx(5.0 / np.sqrt(2), rel=0.02)
    assert change[3] == pytest.approx(2.0) and change[4] == 0
    assert change[1] == pytest.approx(4 * 5.0 / 20 * np.sin(np.pi / 20) / (np.pi / 20), rel=0.05)  # 4A/period
    s = ms.summarise(pose)
    assert s["std_rot_deg"] == pytest.approx(std[:3].mean()) and "beat_align" not in s


def test_velocity_minima_at_the_turning_points():
    beats = ms.velocity_minima(sine_pose(period=20.0))
    # the angular speed is lowest where the sine turns: t = 5, 15, 25, … (±1 frame for the finite difference)
    assert len(beats) == 10
    assert np.all(np.abs((beats - 5) % 10 - 0.5) <= 1.0)
    assert ms.velocity_minima(np.zeros((50, 6))).size == 0  # a held pose has no beats


def test_beat_alignment_and_chance():
    beats = np.array([5, 15, 25, 35])
    assert ms.beat_alignment(beats, beats) == pytest.approx(1.0)
    assert ms.beat_alignment(beats, beats + 5, sigma=1.0) < 1e-4
    assert np.isnan(ms.beat_alignment([], beats))
    chance = ms.beat_alignment_chance(beats, beats, 40, sigma=2.0)
    assert 0 < chance < 0.5
    s = ms.summarise(sine_pose(n=40, period=20.0), audio_onsets=ms.velocity_minima(sine_pose(n=40, period=20.0)))
    assert s["beat_align"] == pytest.approx(1.0) and s["beat_align_excess"] > 0.3


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from rhythmhead.config import load_config
    from rhythmhead.training.expression_task import ExpressionConfig, ExpressionTask
    from rhythmhead.training.motion_task import MotionConfig, MotionTask
    from rhythmhead.training.trainer import Trainer

    root = tmp_path_factory.mktemp("learners_eval")
    store = make_store(root / "store", n_clips=5, n_frames=140)
    Trainer(MotionTask(load_config(MotionConfig, "motion", "fast", TINY_MOTION), str(store)), root / "motion").fit(2)
    Trainer(ExpressionTask(load_config(ExpressionConfig, "expression", "fast", TINY_EXPR), str(store)),
            root / "expr").fit(2)
    return root, store


def run_cli(args):
    from rhythmhead.cli import main

    try:
        main(args)
    except SystemExit as exc:
        return exc.code
    return 0


def test_evaluate_motion_report(runs, capsys):
    root, store = runs
    out = root / "motion.json"
    assert run_cli(["evaluate", "motion", "--data", str(store), "--models", str(root / "motion"), "--out",
                    str(out)]) == 0
    report = json.loads(out.read_text())
    methods = report["methods"]
    assert set(methods) == {"model", "model_smoothed", "static", "replay", "mean_motion", "other_clip", "real"}
    # what inference makes of Φ: towards the reference's amplitude (a barely trained Φ is near still; the gain is
    # capped at controls.MAX_AMPLITUDE_GAIN)
    model, shaped = methods["model"]["std_ratio_rot"], methods["model_smoothed"]["std_ratio_rot"]
    assert abs(np.log(shaped)) < abs(np.log(model)) and shaped > 5 * model, (model, shaped)
    assert methods["real"]["l1_rot_deg"] == 0 and methods["real"]["std_rot_deg"] > 0
    assert methods["static"]["std_rot_deg"] == pytest.approx(0, abs=1e-9)
    assert methods["static"]["dP_trans_px"] == 0
    assert methods["other_clip"]["std_rot_deg"] > 0
    assert report["settings"]["windows"] >= 1 and "σ" in report["settings"]["beat_alignment"]
    assert "l1_ry_deg" in methods["model"]
    assert "static" in capsys.readouterr().out


def test_evaluate_expression_report(runs):
    root, store = runs
    out = root / "expr.json"
    assert run_cli(["evaluate", "expression", "--data", str(store), "--models", str(root / "expr"), "--out",
                    str(out)]) == 0
    methods = json.loads(out.read_text())["methods"]
    assert set(methods) == {"model", "model_smoothed", "mean_expression", "reference_held", "pca_reconstruction",
                            "real"}
    assert methods["real"]["lmd_all_px"] < 1e-3  # posing the real frontal landmarks gives the tracked ones back
    assert methods["pca_reconstruction"]["lmd_mouth_px"] <= methods["mean_expression"]["lmd_mouth_px"]
    assert methods["mean_expression"]["mouth_env_corr"] == "nan"  # constant mouth: no correlation
    assert np.isfinite(methods["model"]["lmd_mouth_px"])


def test_bad_models_path_is_one_line_error(runs, tmp_path, capsys):
    root, store = runs
    code = run_cli(["evaluate", "motion", "--data", str(store), "--models", str(tmp_path / "nothing.safetensors"),
                    "--out", str(tmp_path / "r.json")])
    assert code == 2 and "not found" in capsys.readouterr().err
    code = run_cli(["evaluate", "expression", "--data", str(store), "--models", str(root / "motion"),
                    "--out", str(tmp_path / "r.json")])
    assert code == 2
    assert not (tmp_path / "r.json").exists()
