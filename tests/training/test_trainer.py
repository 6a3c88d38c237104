"""The shared Trainer on a toy task: learning, exact resume, rotation, validation, run-folder safety, torchrun."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from rhythmhead.errors import InputError
from rhythmhead.models.checkpoint import load_export
from rhythmhead.training import checkpoint
from rhythmhead.training import trainer as trainer_module
from rhythmhead.training.trainer import Trainer
from trainer_toy import ToyConfig, ToyModelConfig, ToyTask, flat_params

HERE = Path(__file__).resolve().parent


def make_task(**trainer_kwargs) -> ToyTask:
    cfg = ToyConfig()
    if trainer_kwargs:
        cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, **trainer_kwargs))
    return ToyTask(cfg, None)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_loss_goes_down_and_run_folder_is_complete(tmp_path):
    task = make_task(log_every=10, val_every=20, checkpoint_every=0)
    Trainer(task, tmp_path, "cpu").fit(60)
    lines = read_jsonl(tmp_path / "stats.jsonl")
    assert [ln["step"] for ln in lines] == [10, 20, 30, 40, 50, 60]
    assert lines[-1]["Loss/mse"] < 0.5 * lines[0]["Loss/mse"]
    assert all(ln["peak_rss_mb"] > 0 and ln["sec_per_step"] > 0 for ln in lines)
    assert lines[-1]["time_s"] >= lines[0]["time_s"]
    val = read_jsonl(tmp_path / "val.jsonl")
    assert [v["step"] for v in val] == [20, 40, 60]
    assert val[-1]["Val/mse"] < val[0]["Val/mse"]
    assert all(v["Val/training_flag"] == 0.0 for v in val)  # validate ran in eval mode ...
    assert task.modules["net"].training  # ... and training mode came back
    assert (tmp_path / "config.yaml").read_text().count("hidden: 16") == 1
    assert any((tmp_path / "tensorboard").iterdir())
    assert [p.name for p in checkpoint.list_states(tmp_path)] == ["state-00000060.pt"]  # the final state
    export = load_export(tmp_path / "export" / "toy.safetensors", stage="toy")
    assert export.meta["step"] == 60 and export.config["model"]["hidden"] == 16
    live = task.modules["net"].state_dict()
    assert set(export.state_dicts["net"]) == set(live)
    assert all(torch.equal(export.state_dicts["net"][k], live[k]) for k in live)


def test_resume_gives_the_uninterrupted_next_step(tmp_path):
    straight = make_task(checkpoint_every=0, val_every=2)
    Trainer(straight, tmp_path / "a", "cpu").fit(4)

    first = make_task(checkpoint_every=0, val_every=2)
    Trainer(first, tmp_path / "b", "cpu").fit(3)  # ends with state-00000003.pt
    assert checkpoint.find_latest(tmp_path / "b").name == "state-00000003.pt"
    second = make_task(checkpoint_every=0, val_every=2)
    trainer = Trainer(second, tmp_path / "b", "cpu", resume="latest")
    assert trainer.step == 3
    trainer.fit(4)

    assert second.seen == straight.seen[-4:]  # the 4th batch: same samples, same order
    assert torch.equal(flat_params(second.modules["net"]), flat_params(straight.modules["net"]))
    # a resume that loses the RNG state would differ (dropout + noise draw from it): check the test can fail
    third = make_task(checkpoint_every=0, val_every=2)
    trainer = Trainer(third, tmp_path / "b", "cpu", resume=tmp_path / "b" / "checkpoints" / "state-00000003.pt")
    checkpoint.seed_all(123)
    trainer.fit(4)
    assert not torch.equal(flat_params(third.modules["net"]), flat_params(straight.modules["net"]))
    # stats.jsonl holds each step once after resuming over an already-logged step
    steps = [ln["step"] for ln in read_jsonl(tmp_path / "b" / "stats.jsonl")]
    assert steps == sorted(set(steps))


def test_keep_last_and_find_latest(tmp_path):
    Trainer(make_task(checkpoint_every=1, keep_last=2, val_every=0), tmp_path, "cpu").fit(5)
    assert [p.name for p in checkpoint.list_states(tmp_path)] == ["state-00000004.pt", "state-00000005.pt"]
    assert checkpoint.find_latest(tmp_path).name == "state-00000005.pt"
    state = checkpoint.load_state(checkpoint.find_latest(tmp_path))
    assert state["step"] == 5 and state["sampler_position"] == 20 and len(state["rng"]) == 1
    # nothing but the kept states: no temporary file of the atomic writes is left behind
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["state-00000004.pt", "state-00000005.pt"]


def test_time_based_checkpoints_and_final_validation(tmp_path):
    task = make_task(checkpoint_every=0, checkpoint_minutes=1e-9, log_every=2, keep_last=10, val_every=4)
    Trainer(task, tmp_path, "cpu").fit(7)
    assert [p.name for p in checkpoint.list_states(tmp_path)] == [
        "state-00000002.pt", "state-00000004.pt", "state-00000006.pt", "state-00000007.pt"]
    assert [v["step"] for v in read_jsonl(tmp_path / "val.jsonl")] == [4, 7]


def test_run_folder_guards(tmp_path):
    Trainer(make_task(val_every=0), tmp_path, "cpu").fit(2)
    with pytest.raises(InputError, match="already holds a training run"):
        Trainer(make_task(), tmp_path, "cpu")
    with pytest.raises(InputError, match="no training state"):
        Trainer(make_task(), tmp_path / "fresh", "cpu", resume="latest")
    wider = ToyTask(dataclasses.replace(ToyConfig(), model=ToyModelConfig(hidden=32)), None)
    with pytest.raises(InputError, match=r"architecture differs.*model\.hidden: checkpoint 16 vs now 32"):
        Trainer(wider, tmp_path, "cpu", resume="latest")
    assert "hidden: 16" in (tmp_path / "config.yaml").read_text()  # a refused resume leaves the run's config alone
    wider.architecture_fields = ()  # a task that forgot to declare its architecture still gets a one-line error
    with pytest.raises(InputError, match="weights do not fit this config's networks"):
        Trainer(wider, tmp_path, "cpu", resume="latest")
    other_lr = ToyTask(dataclasses.replace(ToyConfig(), lr=1e-3), None)  # not architecture: allowed
    assert Trainer(other_lr, tmp_path, "cpu", resume="latest").step == 2


def test_damaged_newest_states_fall_back_to_the_previous_readable_one(tmp_path):
    Trainer(make_task(checkpoint_every=2, keep_last=3, val_every=0), tmp_path, "cpu").fit(6)
    folder = tmp_path / "checkpoints"
    cut = folder / "state-00000006.pt"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # a save cut short
    (folder / "state-00000004.pt").write_bytes(b"")
    torch.save({"format": "something else"}, folder / "state-00000005.pt")  # readable, but not a training state
    with pytest.warns(UserWarning) as caught:
        trainer = Trainer(make_task(checkpoint_every=2, keep_last=3, val_every=0), tmp_path, "cpu", resume="latest")
    assert trainer.step == 2
    notes = [str(w.message) for w in caught]
    assert len(notes) == 3 and all("\n" not in n and "renamed to" in n for n in notes)
    assert "state-00000006.pt: not a readable training state (" in notes[0]
    assert "state-00000005.pt: not a rhythmhead training state" in notes[1]
    assert "state-00000004.pt: not a readable training state (EOFError)" in notes[2]
    # moved out of the rotation: the resumed run's new states are what keep_last counts and resume finds
    trainer.fit(8)
    assert [p.name for p in checkpoint.list_states(tmp_path)] == ["state-00000004.pt", "state-00000006.pt",
                                                                   "state-00000008.pt"]
    assert Trainer(make_task(), tmp_path, "cpu", resume="latest").step == 8
    for p in checkpoint.list_states(tmp_path):
        p.write_bytes(b"junk")
    with pytest.warns(UserWarning), pytest.raises(InputError, match="none of its 3 training states is readable"):
        Trainer(make_task(), tmp_path, "cpu", resume="latest")
    with pytest.raises(InputError, match="not a readable training state"):  # named explicitly: no fall-back
        Trainer(make_task(), tmp_path, "cpu", resume=folder / "state-00000006.pt.bad")


def test_time_based_checkpoints_follow_the_wall_clock(tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(trainer_module.time, "monotonic", lambda: clock[0])

    class FourMinuteSteps(ToyTask):
        def train_step(self, batch, step, optimizers):
            clock[0] += 240.0
            return super().train_step(batch, step, optimizers)

    cfg = ToyConfig()
    cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(
        cfg.trainer, checkpoint_every=0, checkpoint_minutes=10, log_every=1, keep_last=10, val_every=0))
    Trainer(FourMinuteSteps(cfg, None), tmp_path, "cpu").fit(10)
    assert [p.name for p in checkpoint.list_states(tmp_path)] == [  # 12 minutes after the last save, and the end
        "state-00000003.pt", "state-00000006.pt", "state-00000009.pt", "state-00000010.pt"]


# a Trainer in another process whose 2nd save dies (SIGKILL) with half the file written, as a kill -9 would leave it
KILLED_MID_SAVE = """
import os, signal, sys, torch
from rhythmhead.training.trainer import Trainer
from trainer_toy import ToyConfig, ToyTask
real_save = torch.save
def dying_save(obj, f):
    real_save(obj, f)
    if obj["step"] == 6:
        os.truncate(f, os.path.getsize(f) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
Trainer(ToyTask(ToyConfig(), None), sys.argv[1], "cpu").fit(10)
"""


def test_a_kill_mid_save_leaves_the_previous_state_newest(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", KILLED_MID_SAVE, str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names[0].startswith(".state-00000006.pt.") and names[1:] == ["state-00000003.pt"]  # the half file is hidden
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = Trainer(make_task(), tmp_path, "cpu", resume="latest")
    assert trainer.step == 3 and not [w for w in caught if "training state" in str(w.message)]  # no fall-back
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["state-00000003.pt"]  # swept at start


def test_resume_at_or_past_max_steps_only_exports(tmp_path):
    Trainer(make_task(val_every=0), tmp_path, "cpu").fit(3)
    (tmp_path / "export" / "toy.safetensors").unlink()
    trainer = Trainer(make_task(val_every=0), tmp_path, "cpu", resume="latest").fit(3)
    assert trainer.step == 3 and (tmp_path / "export" / "toy.safetensors").is_file()


class SignalledTask(ToyTask):
    """Sends itself SIGTERM during step 2, as a scheduler ending the job would."""

    def train_step(self, batch, step, optimizers):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().train_step(batch, step, optimizers)


def test_sigterm_saves_a_state_and_resume_finishes(tmp_path):
    before = signal.getsignal(signal.SIGTERM)  # SIG_DFL, or rhythmhead.cli's once an in-process CLI test ran main()
    trainer = Trainer(SignalledTask(ToyConfig(), None), tmp_path, "cpu").fit(6)
    assert trainer.interrupted == signal.SIGTERM and trainer.step == 2
    assert checkpoint.find_latest(tmp_path).name == "state-00000002.pt"
    assert not (tmp_path / "export").exists()
    assert signal.getsignal(signal.SIGTERM) is before  # handler restored
    trainer = Trainer(make_task(), tmp_path, "cpu", resume="latest").fit(6)
    assert trainer.interrupted is None and (tmp_path / "export" / "toy.safetensors").is_file()


class ScheduledTask(ToyTask):
    def lr_factor(self, step):
        return 0.5 ** (step // 2)


def test_lr_factor_hook_is_applied_and_resume_safe(tmp_path):
    task = ScheduledTask(ToyConfig(), None)
    trainer = Trainer(task, tmp_path, "cpu").fit(5)
    assert trainer.optimizers["net"].param_groups[0]["lr"] == pytest.approx(1e-2 * 0.25)  # step index 4
    again = Trainer(ScheduledTask(ToyConfig(), None), tmp_path, "cpu", resume="latest")
    assert again.optimizers["net"].param_groups[0]["initial_lr"] == pytest.approx(1e-2)
    plain = make_task()
    assert Trainer(plain, tmp_path / "plain", "cpu").fit(5).optimizers["net"].param_groups[0]["lr"] == 1e-2


@pytest.mark.slow
def test_two_processes_under_torchrun_end_identical(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "trainer_toy.py"), str(tmp_path), "6"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(r0["params"], r1["params"])
    assert not set(r0["seen"][:16]) & set(r1["seen"][:16])  # disjoint shards of one epoch (64 items, 2 × 4 per step)
    state = checkpoint.load_state(checkpoint.find_latest(tmp_path))
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])  # per-rank streams
    assert (tmp_path / "export" / "toy.safetensors").is_file()
    assert read_jsonl(tmp_path / "stats.jsonl")[-1]["step"] == 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_resume_and_export(tmp_path):
    straight = make_task(checkpoint_every=0, val_every=2, log_every=1)
    Trainer(straight, tmp_path / "a", "cuda").fit(4)
    first = make_task(checkpoint_every=0, val_every=2, log_every=1)
    Trainer(first, tmp_path / "b", "cuda").fit(3)
    second = make_task(checkpoint_every=0, val_every=2, log_every=1)
    trainer = Trainer(second, tmp_path / "b", "cuda", resume="latest").fit(4)
    assert trainer.device.type == "cuda" and next(second.modules["net"].parameters()).is_cuda
    assert torch.equal(flat_params(second.modules["net"]), flat_params(straight.modules["net"]))
    lines = read_jsonl(tmp_path / "b" / "stats.jsonl")
    assert lines[-1]["peak_gpu_mb"] > 0
    state = checkpoint.load_state(checkpoint.find_latest(tmp_path / "b"))
    assert "cuda" in state["rng"][0]
    export = load_export(tmp_path / "b" / "export" / "toy.safetensors", stage="toy")
    assert all(not v.is_cuda for v in export.state_dicts["net"].values())
