"""Ψ training task and its data (rhythmhead.training.expression_task, learner_data) on a small synthetic store."""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from rhythmhead.config import from_dict, load_config
from rhythmhead.data.pca import ExpressionPCA, open_rate
from rhythmhead.errors import InputError
from rhythmhead.models.expression import ExpressionLearner
from rhythmhead.training.expression_task import ExpressionConfig, ExpressionTask

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learner_store import make_store  # noqa: E402

TINY = {"model": {"conv_channels": [4, 4, 4, 4, 8, 8, 8], "feature_dim": 16, "n_components": 8, "dropout": 0.2},
        "optim": {"lr": 1e-3},
        "trainer": {"batch_size": 8, "max_steps": 3, "val_every": 2, "checkpoint_every": 2, "val_batches": 2,
                    "log_every": 1}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("expr") / "store", n_clips=5, n_frames=60)


def task_for(store, **extra):
    from rhythmhead.config import merge

    return ExpressionTask(load_config(ExpressionConfig, "expression", "fast", merge(TINY, extra)), str(store))


def test_presets_load_and_match_the_network():
    for preset in ("fast", "paper"):
        cfg = load_config(ExpressionConfig, "expression", preset)
        ExpressionLearner(**asdict(cfg.model))
    paper = load_config(ExpressionConfig, "expression", "paper")
    assert paper.optim.lr == pytest.approx(2e-5) and tuple(paper.optim.betas) == (0.5, 0.999)
    # the paper: raw-waveform convs, the closed-mouth reference with identity, MSE on the codes only
    assert paper.model.frontend == "raw" and not paper.model.residual and paper.data.reference_keeps_identity
    assert (paper.loss.code_mse, paper.loss.mouth_l1, paper.loss.open_l1) == (1.0, 0.0, 0.0)


def test_items_targets_and_gain(store):
    task = task_for(store)
    train, val = task.dataset("train"), task.dataset("val")
    assert not {c.speaker for c in train.clips} & {c.speaker for c in val.clips}
    assert len(train) == sum(c.n_frames for c in train.clips)
    item = val[3]
    assert item["audio"].shape == (7 * 640,) and item["ref_code"].shape == (8,) and item["code"].shape == (8,)
    torch.testing.assert_close(val[3]["audio"], item["audio"])  # no augmentation in validation
    # training gains are drawn from −12..+6 dB: the ratio to the raw window is one of them
    raw = torch.from_numpy(train.clips[0].windows[5].reshape(-1))
    gains = {round(20 * np.log10(float(train[5]["audio"].abs().sum() / raw.abs().sum()))) for _ in range(40)}
    assert gains <= {-12, -9, -6, -3, 0, 3, 6} and len(gains) >= 3
    # the PCA is fitted on training speakers only
    pca = task.pca
    clip = train.clips[0]
    np.testing.assert_allclose(
        pca.decode(train.codes[0][10].numpy(), pca.identity_offset(clip.frontal))[:, :2],
        clip.frontal[10, :, :2], atol=1.0)  # 5-tap smoothing + 8 components: close to the frame


def test_train_steps_lower_the_loss(store):
    task = task_for(store)
    torch.manual_seed(0)
    modules = task.build(torch.device("cpu"))
    task.bind(modules)
    opts = task.make_optimizers(modules)
    ds = task.dataset("train")
    batch = task.collate([ds[i] for i in range(0, len(ds), max(1, len(ds) // 16))][:16])
    losses = [task.train_step(batch, s, opts)["Loss/total"] for s in range(80)]
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:3]), losses  # L1 terms of the fast preset: slower than MSE
    val = task.validate([task.collate([task.dataset("val")[i] for i in range(8)])])
    assert set(val) == {"mse", "mse_zero_code", "mouth_l1", "mouth_l1_zero_code"}


def test_loss_terms_measure_the_decoded_mouth(store):
    task = task_for(store, loss={"code_mse": 1.0, "mouth_l1": 2.0, "open_l1": 3.0})
    pca, clip = task.pca, task.clips("train")[0]
    offset = pca.identity_offset(clip.frontal)
    code = torch.from_numpy(pca.encode(clip.frontal[:6], offset).astype(np.float32))
    pred = code.clone()
    pred[:, 1] += 2.0
    terms = task.losses(pred, code)
    shift = np.abs((pca.decode(pred.numpy(), offset) - pca.decode(code.numpy(), offset))[:, 48:68, :2]).mean()
    assert float(terms["mouth_l1"]) == pytest.approx(shift, rel=1e-4)
    # the opening is the inner-lip gap of the decoded landmarks (identity offset aside)
    np.testing.assert_allclose(task._opening(code).numpy(), open_rate(clip.frontal[:6]), atol=0.3)
    assert float(terms["total"]) == pytest.approx(
        float(terms["mse"]) + 2 * float(terms["mouth_l1"]) + 3 * float(terms["open_l1"]), rel=1e-5)
    assert float(terms["open_l1"]) > 0 and float(task.losses(code, code)["total"]) == pytest.approx(0, abs=1e-4)
    with pytest.raises(InputError, match="zero"):
        task_for(store, loss={"code_mse": 0.0, "mouth_l1": 0.0, "open_l1": 0.0}).losses(pred, code)


def test_pca_file_and_component_mismatch(store, tmp_path):
    pca = ExpressionPCA.fit([c.frontal for c in task_for(store).clips("train")], 8)
    path = pca.save(tmp_path / "pca.safetensors")
    task = task_for(store, data={"pca": str(path)})
    np.testing.assert_array_equal(task.pca.components, pca.components)
    with pytest.raises(InputError, match="components"):
        task_for(store, data={"pca": str(path)}, model={"n_components": 6}).pca


def test_trainer_runs_and_exports_the_pca(store, tmp_path):
    from rhythmhead.models.checkpoint import load_export
    from rhythmhead.training.trainer import Trainer

    task = task_for(store)
    Trainer(task, tmp_path / "run", "cpu").fit(3)
    export = load_export(tmp_path / "run", stage="expression")
    pca = ExpressionPCA.from_arrays({k[4:]: v for k, v in export.extra.items() if k.startswith("pca_")})
    np.testing.assert_allclose(pca.components, task.pca.components)
    net = ExpressionLearner(**asdict(from_dict(ExpressionConfig, export.config).model))
    net.load_state_dict(export.state_dicts["expression"])


def test_training_benchmark_measures_steps():
    from rhythmhead.bench.train import measure_stage

    result = measure_stage("expression", "fast", "cpu", steps=1)
    assert result["fps"] > 0 and result["unit"] == "steps/s" and result["batch"] == 64
