"""The one training loop shared by every stage: ``Trainer(task, run_dir, device, resume=None).fit(max_steps)``.

The loop body only fetches a batch, moves it to the device and calls ``task.train_step``; everything periodic is a hook
(detectron2-style ``before_train / after_step / after_train`` objects with their own state): stats ticks, the progress
bar, validation, training-state checkpoints and the final export. The same code runs in one process or under torchrun
(see :mod:`rhythmhead.training.distributed`).

Run folder layout::

    RUN/config.yaml                       resolved config (usable again as --config)
    RUN/stats.jsonl                       one line per log tick: step, time_s, sec_per_step, peak_rss_mb, Loss/... means
    RUN/val.jsonl                         one line per validation pass: step, Val/...
    RUN/tensorboard/                      the same scalars for TensorBoard
    RUN/checkpoints/state-<step>.pt       training states (keep-last-N), resumable with resume="latest": written
                                          every checkpoint_every steps, every checkpoint_minutes of wall time, on
                                          SIGINT/SIGTERM and at the end, each atomically (a kill mid-save leaves the
                                          previous newest state, and a hidden temporary file swept at the next start)
    RUN/export/<stage>.safetensors|.json  the inference export (models.checkpoint)

Determinism: every rank builds its networks from ``seed`` (identical initial weights), then seeds its data/augmentation
stream with ``seed + rank``. Validation runs inside :class:`~rhythmhead.training.checkpoint.preserved_rng`, and the
DataLoader draws worker seeds from its own generator, so a resumed run's next step equals the uninterrupted run's
exactly (given ``num_workers = 0``, or datasets whose randomness depends on the index only; worker processes' RNG
positions are not checkpointed).
"""
from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from tqdm import tqdm

from ..config import to_dict
from ..errors import InputError
from ..models.checkpoint import save_export
from . import checkpoint, distributed, stats
from .task import TrainTask

log = logging.getLogger(__name__)


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor (in nested dicts, lists and tuples) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields"):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class HookBase:
    """Periodic work around the loop. ``self.trainer`` is set before ``before_train``."""

    name = "hook"
    trainer: "Trainer"

    def before_train(self) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self) -> None: ...

    def after_train(self) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class LRScheduleHook(HookBase):
    """Before each step, LR = initial LR × ``task.lr_factor(step)`` — only for tasks that override ``lr_factor``."""

    name = "lr"

    def before_train(self) -> None:
        t = self.trainer
        self.active = type(t.task).lr_factor is not TrainTask.lr_factor
        if self.active:
            for opt in t.optimizers.values():
                for group in opt.param_groups:
                    group.setdefault("initial_lr", group["lr"])  # restored with the optimiser state on resume

    def before_step(self) -> None:
        if not self.active:
            return
        t = self.trainer
        factor = t.task.lr_factor(t.step)
        for name, opt in t.optimizers.items():
            f = factor.get(name, 1.0) if isinstance(factor, dict) else factor
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * f
        stats.report("Train/lr_factor", float(factor) if not isinstance(factor, dict) else
                     sum(factor.values()) / max(1, len(factor)))


class StatsHook(HookBase):
    """Every ``every`` steps: reduce reported scalars over ranks, append to stats.jsonl/TensorBoard (rank 0)."""

    name = "stats"

    def __init__(self, every: int):
        self.every = max(1, every)
        self.time_offset = 0.0  # training seconds before this process (restored on resume)

    def before_train(self) -> None:
        t = self.trainer
        self.writer = stats.StatsWriter(t.run_dir) if t.is_main else None
        if self.writer is not None and t.start_step > 0:
            self.writer.truncate_after(t.start_step)
        stats.reset()
        self.t0 = self.tick_time = time.perf_counter()
        self.tick_step = t.step

    def elapsed(self) -> float:
        return self.time_offset + time.perf_counter() - self.t0

    def after_step(self) -> None:
        t = self.trainer
        if t.step % self.every == 0 or t.step == t.max_steps:
            self.tick()

    def tick(self) -> None:
        t = self.trainer
        means = stats.collect()
        now = time.perf_counter()
        steps = max(1, t.step - self.tick_step)
        peaks = distributed.all_gather_object((stats.peak_rss_mb(), stats.peak_gpu_mb(t.device)))  # max over ranks
        line = {"time_s": round(self.elapsed(), 3), "sec_per_step": round((now - self.tick_time) / steps, 5),
                "peak_rss_mb": round(max(p[0] for p in peaks), 1)}
        if peaks[0][1] is not None:
            line["peak_gpu_mb"] = round(max(p[1] for p in peaks), 1)
        line.update(means)
        self.tick_time, self.tick_step = now, t.step
        if self.writer is not None:
            self.writer.write(t.step, line)
        bad = [k for k, v in means.items() if k.startswith("Loss/") and not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"non-finite {', '.join(bad)} at step {t.step}; see {t.run_dir / 'stats.jsonl'}")

    def after_train(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def state_dict(self) -> dict[str, Any]:
        return {"time_s": self.elapsed()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.time_offset = float(state.get("time_s", 0.0))


class ProgressHook(HookBase):
    """tqdm bar on rank 0 with a fixed-width status: step, loss, s/step, peak memory."""

    name = "progress"
    BAR = "{desc} {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}"

    def before_train(self) -> None:
        t = self.trainer
        self.bar = tqdm(total=t.max_steps, initial=t.step, disable=not t.is_main, dynamic_ncols=True,
                        desc=t.task.stage, bar_format=self.BAR)
        self.last_refresh = self.last_time = time.perf_counter()
        self.last_step = t.step

    def after_step(self) -> None:
        t = self.trainer
        self.bar.update(1)
        now = time.perf_counter()
        if now - self.last_refresh < 0.5 and t.step < t.max_steps:
            return
        sps = (now - self.last_time) / max(1, t.step - self.last_step)
        self.last_refresh = self.last_time = now
        self.last_step = t.step
        mem = stats.peak_gpu_mb(t.device)
        mem = stats.peak_rss_mb() if mem is None else mem
        loss = t.loss_value()
        self.bar.set_postfix_str(f"loss {loss:>10.4g} {sps:>8.3f} s/step mem {mem:>7.0f} MB",
                                 refresh=True)

    def after_train(self) -> None:
        self.bar.close()


class ValHook(HookBase):
    """Every ``every`` steps and at the end: ``task.validate`` on ``n_batches`` val batches; the ``Val/...`` means go to
    val.jsonl and TensorBoard."""

    name = "val"

    def __init__(self, every: int, n_batches: int):
        self.every, self.n_batches = every, n_batches

    def before_train(self) -> None:
        t = self.trainer
        with checkpoint.preserved_rng():  # building the val set must not shift the training RNG streams
            self.dataset = t.task.dataset("val") if self.every > 0 and self.n_batches > 0 else None
        if self.dataset is not None and len(self.dataset) == 0:
            if t.is_main:
                warnings.warn(f"{t.task.stage}: the val split is empty; validation is skipped")
            self.dataset = None
        self.writer = stats.StatsWriter(t.run_dir, "val.jsonl") if t.is_main and self.dataset is not None else None
        if self.writer is not None and t.start_step > 0:
            self.writer.truncate_after(t.start_step)

    def after_step(self) -> None:
        if self.dataset is not None and self.trainer.step % self.every == 0:
            self.run()

    def run(self) -> dict[str, float]:
        t = self.trainer
        bs = t.tcfg.batch_size
        sampler = distributed.InfiniteSampler(len(self.dataset), distributed.rank(), distributed.world_size(),
                                              shuffle=False)
        n = min(self.n_batches, -(-sampler.per_rank // bs))
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=bs, sampler=sampler, collate_fn=t.task.collate,
                                             num_workers=t.tcfg.num_workers, pin_memory=t.device.type == "cuda",
                                             generator=torch.Generator().manual_seed(t.tcfg.seed))
        modes = [(m, m.training) for module in t.modules.values() for m in module.modules()]
        try:
            with checkpoint.preserved_rng(), torch.no_grad():
                for module in t.modules.values():
                    module.eval()
                result = t.task.validate(_Batches(loader, n, t.device))
        finally:
            for m, mode in modes:
                m.training = mode
        local = {(k if k.startswith("Val/") else f"Val/{k}"): float(v) for k, v in (result or {}).items()}
        merged: dict[str, list[float]] = {}
        for part in distributed.all_gather_object(local):
            for k, v in part.items():
                merged.setdefault(k, []).append(v)
        means = {k: sum(v) / len(v) for k, v in sorted(merged.items())}
        if self.writer is not None and means:
            self.writer.write(t.step, means)
            tqdm.write(f"{t.task.stage} step {t.step}: " + "  ".join(f"{k} {v:.4g}" for k, v in means.items()),
                       file=sys.stderr)
        return means

    def after_train(self) -> None:
        t = self.trainer
        if self.dataset is not None and t.step % self.every != 0 and t.step > t.start_step:
            self.run()  # every run ends with a validation of its final weights
        if self.writer is not None:
            self.writer.close()


class _Batches:
    """Re-iterable view of the first ``n`` batches of ``loader``, moved to ``device``; ``len`` is ``n``."""

    def __init__(self, loader, n: int, device: torch.device):
        self.loader, self.n, self.device = loader, n, device

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i >= self.n:
                break
            yield to_device(batch, self.device)


class CheckpointHook(HookBase):
    """Every ``every`` steps, at the first log tick ``minutes`` after the last save, and at the end: the training
    state, atomically, keeping the newest ``keep_last``."""

    name = "checkpoint"

    def __init__(self, every: int, keep_last: int, minutes: float = 0.0, tick: int = 1):
        self.every, self.keep_last, self.minutes, self.tick = every, keep_last, minutes, max(1, tick)
        self.saved_step = -1

    def before_train(self) -> None:
        self.saved_step = self.trainer.start_step if self.trainer.start_step > 0 else -1
        self.saved_time = time.monotonic()

    def after_step(self) -> None:
        step = self.trainer.step
        if self.every > 0 and step % self.every == 0:
            self.save()
        elif self.minutes > 0 and step % self.tick == 0 and self._time_due():
            self.save()

    def _time_due(self) -> bool:
        """Whether ``minutes`` passed on any rank (decided at log ticks so that every rank takes part)."""
        due = torch.tensor([float(time.monotonic() - self.saved_time >= 60.0 * self.minutes)],
                           device=self.trainer.device)
        return bool(distributed.all_reduce_mean(due).item() > 0)

    def after_train(self) -> None:
        if self.saved_step != self.trainer.step:
            self.save()

    def save(self) -> None:
        t = self.trainer
        state = t.state_dict()  # collective: every rank contributes its RNG state
        if t.is_main:
            path = checkpoint.save_state(t.run_dir, t.step, state, keep_last=self.keep_last)
            log.info("saved %s", path)
        distributed.barrier()
        self.saved_step, self.saved_time = t.step, time.monotonic()


class ExportHook(HookBase):
    """At the end, rank 0 writes ``RUN/export/<stage>.safetensors`` + ``.json`` from the task's export hooks."""

    name = "export"

    def after_train(self) -> None:
        t = self.trainer
        if t.is_main:
            meta = {"stage": t.task.stage, **t.task.export_config(), "step": t.step}
            t.export_path = save_export(t.run_dir / "export" / t.task.stage, t.task.export_modules(),
                                        t.task.export_extra(), meta)
        distributed.barrier()


class Trainer:
    """Runs a :class:`~rhythmhead.training.task.TrainTask` in ``run_dir`` on ``device``.

    Args:
        task: the stage (constructed with its config and data folder; networks not built yet).
        run_dir: output folder (created). A folder that already holds training states needs ``resume``.
        device: ``"cpu"``, ``"cuda"`` (becomes ``cuda:LOCAL_RANK`` under torchrun) or a ``torch.device``.
        resume: ``None`` (fresh run), ``"latest"`` (newest readable state in ``run_dir``), a state file or another
            run folder (see :func:`~rhythmhead.training.checkpoint.load_resume`).
    """

    def __init__(self, task: TrainTask, run_dir: str | Path, device: str | torch.device = "cpu",
                 resume: str | Path | None = None):
        device = torch.device(device)
        distributed.init(device.type)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", distributed.local_rank())
        self.task, self.device, self.run_dir = task, device, Path(run_dir)
        self.cfg = task.cfg
        self.tcfg = task.cfg.trainer
        self.is_main = distributed.is_main()
        self.step = self.start_step = 0
        self._sampler_base = 0  # sampler position at start_step
        self.max_steps = self.tcfg.max_steps
        self.export_path: Path | None = None
        self.interrupted: int | None = None  # the signal that stopped the last fit(), if any
        self._last: dict[str, Any] = {}
        self.config_dict = to_dict(self.cfg)

        if self.is_main:
            checkpoint.sweep_temp(self.run_dir)  # what a save killed mid-write left (never under a state's name)
        resume_path, state = (checkpoint.load_resume(self.run_dir, resume, self.is_main) if resume is not None
                              else (None, None))
        if resume_path is None and checkpoint.find_latest(self.run_dir) is not None:
            raise InputError("already holds a training run; pass --resume latest or choose another --out", self.run_dir)

        # networks: identical on every rank (seed), DDP only where gradients flow and there is more than one process
        checkpoint.seed_all(self.tcfg.seed)
        self.raw_modules = task.build(device)
        task.modules = dict(self.raw_modules)
        wrap = set(task.ddp_modules()) if distributed.world_size() > 1 else set()
        self.modules: dict[str, nn.Module] = {}
        for name, module in self.raw_modules.items():
            if name in wrap and any(p.requires_grad for p in module.parameters()):
                module = nn.parallel.DistributedDataParallel(
                    module, device_ids=[device.index] if device.type == "cuda" else None,
                    find_unused_parameters=bool(task.find_unused))
            self.modules[name] = module
        task.bind(self.modules)
        self.optimizers = task.make_optimizers(self.modules)
        self.train_set = task.dataset("train")
        if len(self.train_set) == 0:
            raise InputError(f"the train split of stage '{task.stage}' is empty", task.data_dir)

        self.hooks: list[HookBase] = [LRScheduleHook(), StatsHook(self.tcfg.log_every), ProgressHook(),
                                      ValHook(self.tcfg.val_every, self.tcfg.val_batches),
                                      CheckpointHook(self.tcfg.checkpoint_every, self.tcfg.keep_last,
                                                     self.tcfg.checkpoint_minutes, self.tcfg.log_every), ExportHook()]
        for hook in self.hooks:
            hook.trainer = self

        if resume_path is not None:
            self.load_state_dict(state, resume_path)
            del state  # the loaded copy of every tensor
        else:
            checkpoint.seed_all(self.tcfg.seed + distributed.rank())
        if self.is_main:  # written once the config is known to fit the run (after the resume checks)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            header = f"# resolved config of stage '{task.stage}' (usable as --config)\n"
            (self.run_dir / "config.yaml").write_text(header + yaml.safe_dump(self.config_dict, sort_keys=False))

    # -- state ----------------------------------------------------------------------------------------------------
    @property
    def sampler_position(self) -> int:
        """Train-set indices this rank has consumed."""
        return self._sampler_base + (self.step - self.start_step) * self.tcfg.batch_size

    def state_dict(self) -> dict[str, Any]:
        """The training state (collective: gathers every rank's RNG state)."""
        return {
            "format": checkpoint.FORMAT, "version": 1, "stage": self.task.stage, "step": self.step,
            "world_size": distributed.world_size(), "config": self.config_dict,
            "modules": {k: m.state_dict() for k, m in self.raw_modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "sampler_position": self.sampler_position,
            "rng": distributed.all_gather_object(checkpoint.rng_state()),
            "hooks": {h.name: h.state_dict() for h in self.hooks},
            "task": self.task.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any], path: Path | str = "checkpoint") -> None:
        if state.get("stage") != self.task.stage:
            raise InputError(f"is a '{state.get('stage')}' training state, expected '{self.task.stage}'", path)
        checkpoint.check_same(self.task.architecture(state["config"]), self.task.architecture(self.config_dict), path)
        missing = sorted(set(self.raw_modules) - set(state["modules"])) + sorted(
            set(self.optimizers) - set(state["optimizers"]))
        if missing:
            raise InputError(f"lacks state for {', '.join(missing)}", path)
        try:
            for name, module in self.raw_modules.items():
                module.load_state_dict(state["modules"][name])
            for name, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
        except (RuntimeError, ValueError, KeyError) as exc:  # shapes/keys differ: a config field outside `architecture`
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise InputError(f"weights do not fit this config's networks ({first})", path) from None
        self.task.load_extra_state(state.get("task", {}))
        for hook in self.hooks:
            hook.load_state_dict(state.get("hooks", {}).get(hook.name, {}))
        self.step = self.start_step = int(state["step"])
        self._sampler_base = int(state["sampler_position"])
        rngs, rank = state["rng"], distributed.rank()
        if int(state.get("world_size", 1)) == distributed.world_size() and rank < len(rngs):
            checkpoint.set_rng_state(rngs[rank])
        else:
            warnings.warn(f"{path}: saved with {state.get('world_size')} processes, resumed with "
                          f"{distributed.world_size()}: RNG streams are re-seeded, the run is not bit-identical")
            checkpoint.seed_all(self.tcfg.seed + rank + 1_000_003 * self.step)
        if self.is_main:
            tqdm.write(f"resumed from {path} at step {self.step}", file=sys.stderr)

    # -- loop -----------------------------------------------------------------------------------------------------
    def loss_value(self) -> float:
        """The headline loss of the last step: ``Loss/total`` if reported, else the sum of the ``Loss/*`` values."""
        last = self._last
        if "Loss/total" in last:
            return float(last["Loss/total"])
        values = [float(v) for k, v in last.items() if k.startswith("Loss/")]
        return sum(values) if values else float("nan")

    def _train_batches(self):
        rank, world = distributed.rank(), distributed.world_size()
        start = self.sampler_position
        sampler = distributed.InfiniteSampler(len(self.train_set), rank, world, shuffle=True, seed=self.tcfg.seed,
                                              start=start)
        loader = torch.utils.data.DataLoader(
            self.train_set, batch_size=self.tcfg.batch_size, sampler=sampler, collate_fn=self.task.collate,
            num_workers=self.tcfg.num_workers, pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.tcfg.seed * 7919 + rank * 104729 + start),
            persistent_workers=False)
        return iter(loader)

    def fit(self, max_steps: int | None = None) -> "Trainer":
        """Train until ``max_steps`` (default: the config's ``trainer.max_steps``), then checkpoint and export.

        SIGINT / SIGTERM stop the run after the current step with a training state saved (no export);
        ``self.interrupted`` then holds the signal number. A second Ctrl-C interrupts at once.
        """
        self.max_steps = self.tcfg.max_steps if max_steps is None else max_steps
        self.interrupted = None
        for hook in self.hooks:
            hook.before_train()
        with _GracefulStop() as stop:
            try:
                batches = self._train_batches()  # module train/eval modes are the task's (set in build)
                while self.step < self.max_steps:
                    for hook in self.hooks:
                        hook.before_step()
                    batch = to_device(next(batches), self.device)
                    out = self.task.train_step(batch, self.step, self.optimizers)
                    self.step += 1
                    self._last = out or {}
                    for name, value in self._last.items():
                        stats.report(name, value)
                    for hook in self.hooks:
                        hook.after_step()
                    if stop.agreed(self.device):
                        self.interrupted = stop.signum or signal.SIGTERM
                        break
                if self.interrupted is None:
                    for hook in self.hooks:
                        hook.after_train()
                else:
                    ckpt = next(h for h in self.hooks if isinstance(h, CheckpointHook))
                    if ckpt.saved_step != self.step:
                        ckpt.save()
            finally:
                for hook in self.hooks:
                    if isinstance(hook, ProgressHook) and hasattr(hook, "bar"):
                        hook.bar.close()
                    if getattr(hook, "writer", None) is not None:
                        hook.writer.close()
        return self


class _GracefulStop:
    """Turns SIGINT/SIGTERM into a flag checked between steps (all ranks agree before stopping); a second SIGINT
    raises KeyboardInterrupt as usual. Handlers are only installed from the main thread."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False

    def agreed(self, device: torch.device) -> bool:
        """Whether any rank was signalled (a tiny all-reduce per step when there are several processes)."""
        if distributed.world_size() == 1:
            return self.signum is not None
        flag = torch.tensor([1.0 if self.signum is not None else 0.0], device=device)
        return bool(distributed.all_reduce_mean(flag).item() > 0)
