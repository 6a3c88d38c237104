"""The contract between the one shared :class:`~rhythmhead.training.trainer.Trainer` and each stage.

A stage (motion Φ, expression Ψ, unprojection, generator) is a ``TrainTask``: it builds its networks, optimisers and
datasets from its config, and does one optimisation step on a batch. The Trainer owns everything else — DDP wrapping,
per-rank seeding, the infinite sampler, progress bar, stats (``stats.jsonl`` + TensorBoard), validation hooks, atomic
training-state checkpoints with keep-last-N and ``--resume latest``, and the exported inference checkpoint.

Writing a new stage = subclassing TrainTask; no change to the Trainer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import bounded


@dataclass(frozen=True)
class TrainerConfig:
    """Loop settings every stage config carries as its ``trainer`` field."""

    batch_size: int = bounded(8, ge=1)  # per process
    max_steps: int = bounded(1000, ge=0)
    log_every: int = bounded(10, ge=1)  # steps between stats lines
    val_every: int = bounded(200, ge=0)  # steps between validation passes (0 = never)
    checkpoint_every: int = bounded(200, ge=0)  # steps between training-state checkpoints (0 = only by time/at the end)
    checkpoint_minutes: float = bounded(10.0, ge=0)  # also checkpoint at a log tick this long after the last (0 = off)
    keep_last: int = bounded(3, ge=1)  # training-state checkpoints kept
    val_batches: int = bounded(8, ge=0)  # batches per validation pass (0 = no validation)
    seed: int = 0
    num_workers: int = bounded(0, ge=0)  # DataLoader workers per process


class TrainTask:
    """One trainable stage. Subclasses set ``stage`` and implement the abstract methods.

    Lifecycle (driven by the Trainer, identical for 1 or N processes):
      1. ``task = TaskClass(cfg, data_dir)``: store config, open the data store (no networks yet).
      2. ``task.build(device)``: create networks on ``device`` and return them as a dict name → nn.Module.
         The Trainer wraps the ones listed by ``ddp_modules()`` in DistributedDataParallel and hands the (possibly
         wrapped) modules back through ``task.bind(modules)`` before the first step.
      3. ``task.make_optimizers(modules)`` → dict name → Optimizer (the Trainer checkpoints and restores them).
      4. ``task.dataset("train" | "val")`` → a map-style torch Dataset (speaker-disjoint split decided by the task
         from the store's manifest, deterministic given the config seed).
      5. Loop: ``stats = task.train_step(batch, step)`` — forward, losses, backward and ``optimizer.step()`` for every
         optimiser the task owns (GAN tasks alternate G and D here). Returns named float scalars (``Loss/mse`` ...).
      6. ``task.validate(batches)`` → named float metrics on validation batches (no grad).
      7. ``task.export_config()`` + the Trainer saves ``export_modules()`` weights to ``RUN/export/<stage>.safetensors``
         with ``RUN/export/<stage>.json`` (config + any extra tensors such as pose normalisation statistics, which a task
         returns from ``export_extra()`` as name → tensor and are saved in the same safetensors file).
    """

    stage: str = "?"
    config_class: type = object  # the stage's frozen config dataclass; it has a ``trainer: TrainerConfig`` field
    find_unused: bool = False  # DDP find_unused_parameters for the wrapped modules (set True if some params skip a step)
    # top-level config fields that define the networks: resuming with a different value is refused (see ``architecture``)
    architecture_fields: tuple[str, ...] = ("model", "disc", "ablation")

    def __init__(self, cfg: Any, data_dir: str | None):
        self.cfg = cfg
        self.data_dir = data_dir
        self.modules: dict[str, nn.Module] = {}

    # -- networks -------------------------------------------------------------------------------------------------
    def build(self, device: torch.device) -> dict[str, nn.Module]:
        raise NotImplementedError

    def ddp_modules(self) -> list[str]:
        """Names of modules that receive gradients (wrapped in DDP when world size > 1). Default: all."""
        return list(self.modules)

    def bind(self, modules: dict[str, nn.Module]) -> None:
        """Receive the (possibly DDP-wrapped) modules the Trainer will step."""
        self.modules = modules

    def make_optimizers(self, modules: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    # -- data -----------------------------------------------------------------------------------------------------
    def dataset(self, split: str) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def collate(self, items: list[Any]) -> Any:
        """Batch collation; default torch's."""
        return torch.utils.data.default_collate(items)

    # -- steps ----------------------------------------------------------------------------------------------------
    def train_step(self, batch: Any, step: int, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def validate(self, batches) -> dict[str, float]:
        return {}

    # -- optional hooks (defaults keep a task free of them) ----------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """Task state beyond modules and optimisers (LR schedulers, EMA, GradScaler, counters) for the training state.

        Plain containers and tensors only (the checkpoint is read with ``torch.load(weights_only=True)``)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``extra_state`` returned (called on resume after modules and optimisers are restored)."""

    def lr_factor(self, step: int) -> float | dict[str, float]:
        """LR schedule: factor on each optimiser's initial LR for step ``step`` (one float, or optimiser name → float).

        Applied by the Trainer before every step only when a task overrides this method (tasks that set their LRs in
        ``train_step`` are left alone). A pure function of the step, so resuming needs no scheduler state."""
        return 1.0

    def architecture(self, config: dict[str, Any]) -> dict[str, Any]:
        """The part of a resolved config dict that must match on resume. Default: the ``architecture_fields`` entries."""
        return {k: config[k] for k in self.architecture_fields if k in config}

    # -- export ---------------------------------------------------------------------------------------------------
    def export_modules(self) -> dict[str, nn.Module]:
        """Modules whose weights inference needs (unwrapped). Default: all built modules except those named 'disc*'."""
        return {k: getattr(m, "module", m) for k, m in self.modules.items() if not k.startswith("disc")}

    def export_extra(self) -> dict[str, torch.Tensor]:
        return {}

    def export_config(self) -> dict[str, Any]:
        from ..config import to_dict
        return {"stage": self.stage, "config": to_dict(self.cfg)}
