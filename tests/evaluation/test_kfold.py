"""Speaker-grouped k-fold cross-validation of Φ and Ψ (rhythmhead.evaluation.kfold) and the metrics it reports."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rhythmhead.evaluation import metrics
from rhythmhead.evaluation import motion_stats as ms

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from learner_store import make_store  # noqa: E402


def moving_pose(n=64, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    pose = np.zeros((n, 6))
    for j in range(6):
        amp = np.radians(4.0) if j < 3 else 3.0
        pose[:, j] = amp * np.sin(2 * np.pi * t / rng.uniform(15, 40) + rng.uniform(0, 6)) + rng.normal(0, amp / 20, n)
    return pose


# -- motion metrics -----------------------------------------------------------------------------------------------------
def test_std_and_change_ratios_fail_for_a_still_head_and_track_a_scaled_copy():
    real = [moving_pose(seed=s) for s in range(4)]
    still = [np.repeat(r[:1], len(r), 0) for r in real]
    assert ms.std_ratio(still, real) == pytest.approx((0.0, 0.0), abs=1e-9)
    assert ms.change_ratio(still, real) == (0.0, 0.0)
    anchor = real[0][0]
    scaled = [anchor + 1.7 * (r - anchor) for r in real]
    assert ms.std_ratio(scaled, real) == pytest.approx((1.7, 1.7))
    assert ms.change_ratio(scaled, real) == pytest.approx((1.7, 1.7))
    assert ms.std_ratio(real, real) == pytest.approx((1.0, 1.0))
    assert np.isnan(ms.std_ratio(real, still)[0])  # a still real head has no ratio
    with pytest.raises(ValueError):
        ms.std_ratio(real[:2], real)
    assert metrics.METRICS["std_ratio_rot"](scaled[1], real[1]) == pytest.approx(1.7)


def test_pose_frechet_is_zero_for_the_same_distribution_and_grows_with_the_difference():
    real = [moving_pose(seed=s) for s in range(12)]
    assert ms.window_features(real[0]).shape == (3, 12)  # 64 frames: windows at 0, 16, 32
    assert ms.window_features(real[0][:31]).shape == (0, 12)
    assert ms.pose_frechet(real, real) == pytest.approx(0.0, abs=1e-6)
    resampled = [moving_pose(seed=s) for s in range(100, 112)]  # same process, other draws: small
    still = [np.repeat(r[:1], len(r), 0) for r in real]
    jitter = [r + np.random.default_rng(i).normal(0, 0.05, r.shape) for i, r in enumerate(real)]
    d_same, d_still, d_jitter = (ms.pose_frechet(x, real) for x in (resampled, still, jitter))
    assert d_still > 10 * d_same and d_jitter > 10 * d_same
    assert np.isnan(ms.pose_frechet([real[0][:40]], real))  # one window only: no Gaussian


def test_replay_loops_the_reference_without_a_jump():
    from rhythmhead.evaluation.motion import replay_motion

    ref = moving_pose(n=20)
    out = replay_motion(ref, 50)
    assert out.shape == (50, 6)
    np.testing.assert_allclose(out[0], ref[-2])  # continues next to the last reference pose
    np.testing.assert_allclose(out[18], ref[0])
    np.testing.assert_allclose(out[19], ref[1])  # then forwards again
    steps = np.abs(np.diff(np.concatenate([ref[-1:], out]), axis=0)).max()
    assert steps <= np.abs(np.diff(ref, axis=0)).max() + 1e-12  # never a bigger step than the reference has


# -- mouth metrics ------------------------------------------------------------------------------------------------------
def mouth_track(n=120):
    """An opening (px) that closes at frames 20, 50, 80 during speech, and a silent closed stretch at the end."""
    t = np.arange(n)
    opening = 8.0 + 4.0 * np.sin(2 * np.pi * t / 7.0)
    for c in (20, 50, 80):
        opening[c - 1: c + 2] = [0.6, 0.2, 0.6]
    opening[100:] = 0.1
    speech = np.zeros(n, bool)
    speech[5:95] = True
    return opening, speech


def test_closure_events_and_rate():
    opening, speech = mouth_track()
    events = metrics.closure_events(opening, speech)
    assert list(events) == [20, 50, 80]  # the silent closure at 100 is not during speech
    thr = metrics.closure_threshold(opening)
    assert 0.6 < thr < 3.0
    assert metrics.closure_rate(opening, opening, speech) == 1.0
    held_open = np.full_like(opening, 8.0)
    assert metrics.closure_rate(held_open, opening, speech) == 0.0  # a mouth that never closes fails
    late = np.roll(opening, 2)  # within ±2 frames still counts
    assert metrics.closure_rate(late, opening, speech) == 1.0
    assert metrics.closure_rate(np.roll(opening, 4), opening, speech) < 1.0
    assert np.isnan(metrics.closure_rate(opening, held_open, speech))  # no real closure: no rate
    env = np.zeros(60)
    env[10:20] = 1.0
    sp = metrics.speech_frames(env)
    assert sp[5:25].all() and not sp[:5].any() and not sp[25:].any()


# -- cross-validation ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("kfold") / "store", n_clips=6, n_frames=140)


def run_cli(args):
    from rhythmhead.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code
    return 0


def test_fold_training_config_holds_out_one_fold(store):
    from rhythmhead.data.store import ClipStore, speaker_folds
    from rhythmhead.evaluation.kfold import fold_config

    _, cfg = fold_config("motion", 3, 1, max_steps=1, seed=2)
    _, swept = fold_config("motion", 3, 1, max_steps=1, seed=2, sets=("adv_weight=0", "data.fold=0"))
    assert swept.adv_weight == 0 and swept.data.fold == 1  # --set overrides, but never the fold's own split
    task_cls, ecfg = fold_config("expression", 3, 1, max_steps=1, seed=2)
    assert (cfg.data.folds, cfg.data.fold, cfg.data.split_seed, cfg.trainer.max_steps) == (3, 1, 2, 1)
    assert ecfg.data.pca == ""  # the PCA is fitted on the fold's training clips
    task = task_cls(ecfg, str(store))
    held = speaker_folds(ClipStore(store).manifest(), 3, seed=2)[1]
    assert [c.clip_id for c in task.clips("val")] == held
    assert not {c.clip_id for c in task.clips("train")} & set(held)
    from rhythmhead.data.pca import ExpressionPCA

    fitted = ExpressionPCA.fit([c.frontal for c in task.clips("train")], n_components=ecfg.model.n_components)
    np.testing.assert_allclose(task.pca.mean, fitted.mean)


def test_kfold_cli_end_to_end(store, tmp_path, capsys):
    out, work = tmp_path / "motion.json", tmp_path / "motion"
    assert run_cli(["evaluate", "motion", "--data", store, "--folds", 3, "--work", work, "--max-steps", 1,
                    "--out", out]) == 0
    report = json.loads(out.read_text())
    assert set(report["methods"]) == {"model", "model_smoothed", "static", "replay", "mean_motion", "other_clip",
                                      "real"}
    assert set(report["std"]) == set(report["methods"])
    for key in ("l1_rot_deg", "std_ratio_rot", "dP_ratio_trans", "beat_align", "pose_fd"):
        assert key in report["methods"]["model"] and key in report["std"]["model"]
    assert report["methods"]["static"]["std_ratio_rot"] == pytest.approx(0, abs=1e-6)
    assert report["methods"]["real"]["std_ratio_rot"] == pytest.approx(1.0)
    assert report["methods"]["real"]["pose_fd"] == pytest.approx(0, abs=1e-6)
    folds = report["folds"]
    assert [f["fold"] for f in folds] == [0, 1, 2]
    held = [c for f in folds for c in f["clips"]]
    from rhythmhead.data.store import ClipStore

    assert sorted(held) == sorted(ClipStore(store).ids())  # every clip held out exactly once
    assert all(set(f["evaluated_clips"]) <= set(f["clips"]) for f in folds)
    speakers = [set(f["speakers"]) for f in folds]
    assert not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])
    assert report["settings"]["folds"] == 3 and report["settings"]["max_steps"] == 1
    printed = capsys.readouterr().out
    assert "mean ± std over 3 folds" in printed and " ± " in printed
    assert all((work / f"fold_{f}" / "export" / "motion.safetensors").is_file() for f in range(3))

    # a second run reuses the exports; another step count is refused instead of mixing runs
    assert run_cli(["evaluate", "motion", "--data", store, "--folds", 3, "--work", work, "--max-steps", 1,
                    "--out", out]) == 0
    assert capsys.readouterr().out.count("reusing its export") == 3
    assert run_cli(["evaluate", "motion", "--data", store, "--folds", 3, "--work", work, "--max-steps", 2,
                    "--out", tmp_path / "other.json"]) == 2
    assert "max_steps" in capsys.readouterr().err

    # the fold runs are ordinary runs: --models scores one on its own held-out fold
    assert run_cli(["evaluate", "motion", "--data", store, "--models", work / "fold_1", "--out",
                    tmp_path / "f1.json"]) == 0
    one = json.loads((tmp_path / "f1.json").read_text())
    assert one["settings"]["clips"] == folds[1]["evaluated_clips"]
    assert one["methods"]["model"]["l1_rot_deg"] == pytest.approx(folds[1]["methods"]["model"]["l1_rot_deg"])


def test_kfold_cli_expression(store, tmp_path, capsys):
    out = tmp_path / "expr.json"
    assert run_cli(["evaluate", "expression", "--data", store, "--folds", 2, "--work", tmp_path / "e",
                    "--max-steps", 1, "--out", out]) == 0
    report = json.loads(out.read_text())
    assert set(report["methods"]) == {"model", "model_smoothed", "mean_expression", "reference_held",
                                      "pca_reconstruction", "real"}
    m = report["methods"]
    for key in ("lmd_mouth_px", "lmd_all_px", "open_std_ratio", "bilabial_closure_rate", "mouth_env_corr"):
        assert key in m["model"] and key in report["std"]["model"]
    assert m["real"]["open_std_ratio"] == pytest.approx(1.0) and m["real"]["bilabial_closure_rate"] == 1.0
    assert m["reference_held"]["open_std_ratio"] == 0
    assert report["settings"]["closure_events"] > 0 and "phone aligner" in report["settings"]["bilabial_closure_rate"]
    assert len(report["folds"]) == 2
    assert "mean ± std over 2 folds" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--folds", 1], "at least 2 folds"),
    (["--folds", 7], "at least 7 speakers"),
    ([], "either --models"),
    (["--folds", 2, "--models", "x"], "either --models"),
    (["--folds", 2, "--split", "all"], "--split only applies"),
    (["--models", "x", "--max-steps", 3], "--max-steps only apply"),
    (["--models", "x", "--set", "adv_weight=0"], "--set only apply"),
])
def test_bad_kfold_input_is_one_line(store, tmp_path, capsys, args, message):
    for stage in ("motion", "expression"):
        code = run_cli(["evaluate", stage, "--data", store, "--out", tmp_path / "r.json", *args])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "r.json").exists()


def test_missing_store_is_one_line(tmp_path, capsys):
    code = run_cli(["evaluate", "motion", "--data", tmp_path / "none", "--folds", 3, "--out", tmp_path / "r.json"])
    err = capsys.readouterr().err
    assert code == 2 and "clip store" in err and err.count("\n") == 1


def test_train_cli_on_one_fold_and_fit_pca_on_its_training_speakers(store, tmp_path, capsys):
    from rhythmhead.data.pca import ExpressionPCA
    from rhythmhead.data.store import ClipStore, fold_split
    from rhythmhead.models.checkpoint import load_export

    run = tmp_path / "m"
    assert run_cli(["train", "motion", "--data", store, "--out", run, "--max-steps", 1, "--device", "cpu",
                    "--set", "data.folds=3", "--set", "data.fold=2"]) == 0
    data_cfg = load_export(run, "motion").config["data"]
    assert (data_cfg["folds"], data_cfg["fold"]) == (3, 2)
    train_ids, held = fold_split(ClipStore(store).manifest(), 3, 2)
    assert run_cli(["evaluate", "motion", "--data", store, "--models", run, "--out", tmp_path / "r.json"]) == 0
    assert set(json.loads((tmp_path / "r.json").read_text())["settings"]["clips"]) <= set(held)
    code = run_cli(["train", "motion", "--data", store, "--out", tmp_path / "bad", "--max-steps", 1,
                    "--set", "data.fold=2"])
    assert code == 2 and "needs data.folds" in capsys.readouterr().err

    pca_file = tmp_path / "pca.safetensors"
    assert run_cli(["fit-pca", store, "--folds", 3, "--fold", 2, "--components", 8, "--out", pca_file]) == 0
    assert f"on {len(train_ids)} clips" in capsys.readouterr().out
    s = ClipStore(store)
    expected = ExpressionPCA.fit([s.track(i)["frontal"] for i in train_ids], n_components=8)
    np.testing.assert_allclose(ExpressionPCA.load(pca_file).mean, expected.mean, rtol=1e-5, atol=1e-5)
