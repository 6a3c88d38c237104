"""``rhythmhead train`` with the toy task standing in for a stage (the real stages have their own tests)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from rhythmhead import cli as root_cli
from rhythmhead import config
from rhythmhead.models.checkpoint import load_export
from rhythmhead.training import checkpoint
from rhythmhead.training import cli as train_cli
from trainer_toy import ToyTask


PRESET = {"trainer": {"batch_size": 4, "max_steps": 5, "log_every": 1, "val_every": 0, "checkpoint_every": 2}}
HERE = Path(__file__).resolve().parent


@pytest.fixture
def toy_stage(monkeypatch):
    """Stage 'motion' → ToyTask with an inline preset."""
    monkeypatch.setattr(train_cli, "load_task_class", lambda stage: ToyTask)
    monkeypatch.setattr(config, "preset_dict", lambda stage, name: PRESET)


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


def test_presets_and_help_say_when_states_are_saved(capsys):
    for stage in train_cli.STAGES:
        for preset in ("fast", "paper"):
            cfg = config.load_config(train_cli.load_task_class(stage).config_class, stage, preset)
            assert cfg.trainer.checkpoint_minutes == 10, (stage, preset)
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "trainer.checkpoint_minutes" in out and "SIGINT/SIGTERM" in out


# `rhythmhead train motion` in another process, with the toy task and PRESET standing in (as the fixture does), but
# no periodic checkpoint before step 1000
FAR_CHECKPOINTS = {**PRESET, "trainer": {**PRESET["trainer"], "checkpoint_every": 1000}}
TOY_TRAIN = f"""
import sys
from rhythmhead import cli, config
from rhythmhead.training import cli as train_cli
from trainer_toy import ToyTask
train_cli.load_task_class = lambda stage: ToyTask
config.preset_dict = lambda stage, name: {FAR_CHECKPOINTS!r}
cli.main(sys.argv[1:])
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_before_the_first_checkpoint_saves_a_resumable_state(toy_stage, tmp_path, capsys, signum):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", TOY_TRAIN, "train", "motion", "--data", str(tmp_path), "--out",
                             str(out), "--device", "cpu", "--max-steps", "100000"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "stats.jsonl").is_file() or not (out / "stats.jsonl").read_text():  # training has started
        assert proc.poll() is None and time.monotonic() < deadline, "the training process did not start"
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert f"stopped by signal {int(signum)} at step" in err and "Traceback" not in err
    states = checkpoint.list_states(out)
    assert len(states) == 1 and not (out / "export").exists()
    step = checkpoint.load_state(states[0])["step"]
    assert 0 < step < 1000
    code, _, err = run(["motion", "--data", tmp_path, "--out", out, "--device", "cpu", "--resume", "latest",
                        "--max-steps", step + 2], capsys)
    assert code == 0 and f"at step {step}" in err, err
    code, _, err = run(["motion", "--data", tmp_path, "--out", tmp_path / "straight", "--device", "cpu",
                        "--max-steps", step + 2], capsys)
    assert code == 0, err
    resumed, straight = (load_export(d / "export" / "toy.safetensors", stage="toy").state_dicts["net"]
                         for d in (out, tmp_path / "straight"))
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


def test_damaged_states_on_resume_are_one_line_messages(toy_stage, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(["motion", "--data", tmp_path, "--out", out, "--device", "cpu", "--max-steps", "3"], capsys)
    assert code == 0, err
    newest = out / "checkpoints" / "state-00000003.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    code, _, err = run(["motion", "--data", tmp_path, "--out", out, "--device", "cpu", "--resume", "latest"], capsys)
    warned = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert code == 0 and len(warned) == 1 and "state-00000003.pt: not a readable training state" in warned[0], err
    assert "resumed from" in err and "state-00000002.pt at step 2" in err
    for state in checkpoint.list_states(out):
        state.write_bytes(b"")
    code, _, err = run(["motion", "--data", tmp_path, "--out", out, "--device", "cpu", "--resume", "latest"], capsys)
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "none of its" in errors[0] and "Traceback" not in err, err
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    code, _, err = run(["motion", "--data", tmp_path, "--out", out, "--device", "cpu", "--resume", empty], capsys)
    assert code == 2 and err == f"error: {empty}: not a readable training state (EOFError)\n"


def test_parse_set_nesting():
    assert train_cli.parse_set(("a.b=1", "a.c=[1, 2]", "d=hello", "e=")) == {
        "a": {"b": 1, "c": [1, 2]}, "d": "hello", "e": ""}
