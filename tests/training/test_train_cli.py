"""``rhythmhead train`` with the toy task standing in for a stage (the real stages have their own tests)."""
from __future__ import annotations

import json

import pytest
import yaml

from rhythmhead import cli as root_cli
from rhythmhead import config
from rhythmhead.training import cli as train_cli
from trainer_toy import ToyTask


@pytest.fixture
def toy_stage(monkeypatch):
    """Stage 'motion' → ToyTask with an inline preset."""
    preset = {"trainer": {"batch_size": 4, "max_steps": 5, "log_every": 1, "val_every": 0, "checkpoint_every": 2}}
    monkeypatch.setattr(train_cli, "load_task_class", lambda stage: ToyTask)
    monkeypatch.setattr(config, "preset_dict", lambda stage, name: preset)


def run(args, capsys):
    """(exit code, stdout, stderr) of ``rhythmhead train ARGS`` in this process."""
    try:
        root_cli.main(["train", *map(str, args)])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dry_run_prints_resolved_config(toy_stage, tmp_path, capsys):
    user = tmp_path / "user.yaml"
    user.write_text("lr: 0.5\nmodel: {hidden: 8}\n")
    code, out, _ = run(["motion", "--data", tmp_path, "--out", tmp_path / "run", "--dry-run", "--config", user,
                        "--set", "model.hidden=12", "--set", "trainer.seed=3", "--max-steps", "9",
                        "--ablation", "no_warp"], capsys)
    assert code == 0
    resolved = yaml.safe_load(out)
    assert resolved["lr"] == 0.5 and resolved["model"]["hidden"] == 12 and resolved["trainer"]["seed"] == 3
    assert resolved["trainer"]["max_steps"] == 9 and resolved["ablation"] == "no_warp"
    assert not (tmp_path / "run").exists()


def test_bad_flags_are_clear_errors(toy_stage, tmp_path, capsys):
    weights = tmp_path / "vgg.pth"
    weights.write_bytes(b"x")
    code, _, err = run(["motion", "--data", tmp_path, "--out", tmp_path / "r", "--vgg-weights", weights], capsys)
    assert code == 2 and "has no 'vgg_weights' setting" in err and "--vgg-weights" in err
    code, _, err = run(["motion", "--data", tmp_path, "--out", tmp_path / "r", "--set", "model.width=3"], capsys)
    assert code == 2 and "unknown config field(s) width" in err and "Traceback" not in err
    code, _, err = run(["motion", "--data", tmp_path, "--out", tmp_path / "r", "--set", "oops"], capsys)
    assert code == 2 and "key.sub=value" in err
    code, _, err = run(["motion", "--data", tmp_path, "--out", tmp_path / "r", "--resume", "latest"], capsys)
    assert code == 2 and err.startswith("error: ") and "no training state" in err


def test_train_then_resume(toy_stage, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(["motion", "--data", tmp_path, "--out", out, "--device", "cpu", "--max-steps", "3"], capsys)
    assert code == 0, err
    assert "exported" in err and (out / "export" / "toy.safetensors").is_file()
    code, _, err = run(["motion", "--data", tmp_path, "--out", out, "--device", "cpu"], capsys)
    assert code == 2 and "--resume latest" in err
    code, _, err = run(["motion", "--data", tmp_path, "--out", out, "--device", "cpu", "--resume", "latest"], capsys)
    assert code == 0, err
    steps = [json.loads(ln)["step"] for ln in (out / "stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == [
        "state-00000002.pt", "state-00000003.pt", "state-00000004.pt", "state-00000005.pt"][-3:]


def test_parse_set_nesting():
    assert train_cli.parse_set(("a.b=1", "a.c=[1, 2]", "d=hello", "e=")) == {
        "a": {"b": 1, "c": [1, 2]}, "d": "hello", "e": ""}
