"""``rhythmhead evaluate generator`` (rhythmhead.evaluation.generator) on a tiny trained model and a synthetic store."""
from __future__ import annotations

import json
import math

import pytest

from rhythmhead.cli import main
from rhythmhead.config import load_config
from rhythmhead.data.synthetic import make_synthetic_store
from rhythmhead.evaluation.generator import clip_targets, evaluate_generator, load_generator
from rhythmhead.inference.random_bundle import TINY_DISC, TINY_GENERATOR
from rhythmhead.training.generator_task import GeneratorConfig, GeneratorTask
from rhythmhead.training.trainer import Trainer

S = 64
TINY = {"model": TINY_GENERATOR, "disc": TINY_DISC,
        "trainer": dict(batch_size=2, max_steps=1, log_every=1, val_every=0, checkpoint_every=1, val_batches=1),
        "data": dict(image_size=S, shots=2, samples_per_clip=4, min_frames=8)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("geneval")
    make_synthetic_store(root / "store", n_clips=3, n_frames=24, with_audio=False)
    runs = []
    for ablation in ("none", "no_warp"):
        cfg = load_config(GeneratorConfig, "generator", "fast", {**TINY, "ablation": ablation})
        Trainer(GeneratorTask(cfg, str(root / "store")), root / f"run_{ablation}", "cpu").fit()
        runs.append(str(root / f"run_{ablation}"))
    return root, runs


def test_clip_targets():
    refs, targets = clip_targets(40, 4, 3, 5)
    assert len(refs) == 4 and max(refs) < 10 and targets == [10, 13, 16, 19, 22]
    refs, _ = clip_targets(8, 4, 1, 5)
    assert len(refs) == 4


def test_load_generator_and_errors(trained, tmp_path):
    _root, runs = trained
    gen, disc, meta = load_generator(runs[1])
    assert not gen.use_warp and disc is not None and meta["config"]["ablation"] == "no_warp"
    from rhythmhead.errors import InputError
    with pytest.raises(InputError):
        load_generator(tmp_path / "nothing")


def test_evaluate_rows_and_metrics(trained, tmp_path):
    root, runs = trained
    settings, methods = evaluate_generator(root / "store", runs, stride=4, max_frames=3, clips="all", identity=False,
                                           landmarks=False, examples=tmp_path / "png")
    assert set(methods) == {"none", "no_warp", "static"}
    for row in methods.values():
        assert 0 < row["ssim"] <= 1 and math.isfinite(row["psnr_db"]) and row["frames"] == 9
    assert len(list((tmp_path / "png").glob("*.png"))) == 3
    assert settings["shots"] == 2


def test_validation_clips_are_the_held_out_ones(trained):
    from rhythmhead.data.store import ClipStore
    from rhythmhead.evaluation.generator import validation_clips

    root, runs = trained
    _gen, _disc, meta = load_generator(runs[0])
    recorded_val = {c for _, c in meta["split"]["val"]}
    assert recorded_val and not recorded_val & {c for _, c in meta["split"]["train"]}
    ids, note = validation_clips(meta, ClipStore(root / "store"))
    assert set(ids) == recorded_val and "recorded" in note
    settings, methods = evaluate_generator(root / "store", runs[:1], max_frames=2, identity=False, landmarks=False)
    assert set(settings["clips"]) <= recorded_val
    # without a recorded split it is recomputed from the config, identically
    legacy = {k: v for k, v in meta.items() if k != "split"}
    again, note = validation_clips(legacy, ClipStore(root / "store"))
    assert again == ids and "recomputed" in note


def test_cli_writes_report(trained, tmp_path):
    root, runs = trained
    out = tmp_path / "report.json"
    main(["evaluate", "generator", "--data", str(root / "store"), "--models", runs[0], "--out", str(out),
          "--max-frames", "2", "--clips", "all", "--limit", "1", "--no-identity"])
    report = json.loads(out.read_text())
    assert report["task"] == "generator" and set(report["methods"]) == {"none", "static"}
    assert "lmd_mouth" in report["methods"]["none"]
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "generator", "--data", str(tmp_path / "missing"), "--models", runs[0], "--out", str(out)])
    assert exc.value.code == 2
