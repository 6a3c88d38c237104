"""Training-speed benchmark of the two learners (``rhythmhead bench train``): optimisation steps per second.

Each measurement runs the stage's real ``train_step`` (forward, losses, backward, optimiser steps; Φ also trains its
discriminator) on fixed, synthetic batches of the preset's batch size, so the number is the network cost without data
loading: Φ on validation-sized windows (τ = 64 reference + 64 predicted frames), Ψ on single-frame windows. On a CPU the
``paper`` Φ (a 30 528-channel temporal conv over 128-frame windows) would need several GB per batch of 64, so its CPU
batch is capped at ``PAPER_CPU_BATCH`` (the result states the batch used).

Single process, then — where ``torch.distributed`` can start — 2 processes under ``torchrun`` (gloo on CPU, DDP exactly
as the Trainer wraps it): ``fps`` is then the global steps/s (every rank does one step per global step) and
``samples_per_s`` counts both ranks' samples.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

STEPS = {"fast": 8, "paper": 3}
PAPER_CPU_BATCH = 8
TAU, PRED = 64, 64


def _task(stage: str, preset: str):
    from ..config import load_config

    if stage == "motion":
        from ..training.motion_task import MotionConfig, MotionTask

        return MotionTask(load_config(MotionConfig, "motion", preset), None)
    from ..training.expression_task import ExpressionConfig, ExpressionTask

    return ExpressionTask(load_config(ExpressionConfig, "expression", preset), None)


def _batch(task, stage: str, batch: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    m = task.cfg.model
    spf = m.audio_rate // m.fps
    if stage == "motion":
        return {"audio": 0.1 * torch.randn(batch, TAU + PRED, 7, spf, generator=gen),
                "pose": torch.randn(batch, TAU + PRED, 6, generator=gen), "tau": torch.tensor(TAU)}
    return {"audio": 0.1 * torch.randn(batch, 7 * spf, generator=gen),
            "ref_code": torch.randn(batch, m.n_components, generator=gen),
            "code": torch.randn(batch, m.n_components, generator=gen)}


def batch_size(task, preset: str, device: torch.device) -> int:
    bs = task.cfg.trainer.batch_size
    if task.stage == "motion" and preset == "paper" and device.type == "cpu":
        bs = min(bs, PAPER_CPU_BATCH)
    return bs


def measure_stage(stage: str, preset: str, device: str = "cpu", steps: int | None = None) -> dict:
    """steps/s of ``stage`` (motion | expression) in this process (DDP-wrapped when torch.distributed is initialised)."""
    from ..training import distributed
    from .common import measure

    dev = torch.device(device)
    torch.manual_seed(0)
    task = _task(stage, preset)
    modules = task.build(dev)
    if distributed.world_size() > 1:
        modules = {k: torch.nn.parallel.DistributedDataParallel(v) for k, v in modules.items()}
    task.bind(modules)
    opts = task.make_optimizers(modules)
    bs = batch_size(task, preset, dev)
    gen = torch.Generator().manual_seed(distributed.rank())
    batches = [{k: v.to(dev) for k, v in _batch(task, stage, bs, gen).items()} for _ in range(2)]
    n = steps or STEPS.get(preset, 5)

    def steps_fn():
        for i in range(n):
            task.train_step(batches[i % 2], i, opts)

    out = measure(steps_fn, n, warmup=1 if preset == "paper" else 0, device=dev)
    out.update({"unit": "steps/s", "batch": bs, "processes": distributed.world_size(),
                "samples_per_s": round(out["fps"] * bs * distributed.world_size(), 2)})
    if stage == "motion":
        out["window_frames"] = TAU + PRED
    return out


def _torchrun(stage: str, preset: str, timeout: float = 300.0) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "rhythmhead.bench.train", "--worker", stage, preset]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": f"torchrun exited with {proc.returncode}: {tail[0][:200]}"}


def run(preset: str = "fast", processes: tuple[int, ...] = (1, 2)) -> dict[str, dict]:
    """``{"train_<stage>_<preset>": {...}, "train_<stage>_<preset>_2proc": {...}}`` for motion and expression."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = {}
    for stage in ("motion", "expression"):
        if 1 in processes:
            results[f"train_{stage}_{preset}"] = measure_stage(stage, preset, device)
        if 2 in processes and device == "cpu":
            try:
                results[f"train_{stage}_{preset}_2proc"] = _torchrun(stage, preset)
            except (OSError, subprocess.TimeoutExpired) as exc:
                results[f"train_{stage}_{preset}_2proc"] = {"error": str(exc)[:200]}
    return results


def _worker(stage: str, preset: str) -> None:
    from ..training import distributed

    distributed.init("cpu")
    torch.set_num_threads(1)
    start = time.perf_counter()
    result = measure_stage(stage, preset, "cpu")
    result["wall_s"] = round(time.perf_counter() - start, 2)
    gathered = distributed.all_gather_object(result)
    if distributed.is_main():
        merged = dict(gathered[0])
        merged["fps"] = min(r["fps"] for r in gathered)  # the slowest rank sets the global step rate
        merged["samples_per_s"] = round(merged["fps"] * merged["batch"] * len(gathered), 2)
        merged["peak_mb"] = max(r["peak_mb"] for r in gathered)  # per process
        print("RESULT " + json.dumps(merged), flush=True)
    distributed.shutdown()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3])
    else:
        print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "fast"), indent=2))
