"""``rhythmhead train STAGE``: resolve a stage's config, then run the shared Trainer on it.

The stage table maps a name to its TrainTask class, imported only when that stage is run.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import warnings

import click
import torch
import yaml

from .. import config as config_lib
from ..lazy import load

# stage name -> "module:TrainTask subclass". One plain table, no registry.
STAGES: dict[str, str] = {
    "motion": "rhythmhead.training.motion_task:MotionTask",
    "expression": "rhythmhead.training.expression_task:ExpressionTask",
    "unprojection": "rhythmhead.training.unprojection_task:UnprojectionTask",
    "generator": "rhythmhead.training.generator_task:GeneratorTask",
    "mouth": "rhythmhead.training.mouth_task:MouthTask",
}


def load_task_class(stage: str) -> type:
    """The TrainTask class of ``stage``."""
    return load(STAGES[stage])


def parse_set(items: tuple[str, ...]) -> dict:
    """``("trainer.batch_size=4", "model.hidden=[64,64]")`` → nested override dict (values parsed as YAML scalars)."""
    out: dict = {}
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not key or any(not part for part in key.split(".")):
            raise click.BadParameter(f"expected key.sub=value, got {item!r}", param_hint="--set")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise click.BadParameter(f"{key} sets both a value and a sub-field", param_hint="--set")
        node[leaf] = value
    return out


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("no CUDA device is visible", param_hint="--device")
    return name


def build_overrides(task_cls: type, stage: str, config_file: str | None, sets: tuple[str, ...], ablation: str | None,
                    vgg_weights: str | None, max_steps: int | None) -> list:
    """--config, then --set and the dedicated flags merged into one dict (later wins): the override layers of
    :func:`~rhythmhead.config.load_config`, which checks every value and names the file (or none: the command line)
    that set a bad one."""
    override = parse_set(sets)
    fields = {f.name for f in dataclasses.fields(task_cls.config_class)} if dataclasses.is_dataclass(
        task_cls.config_class) else set()
    for flag, key, value in (("--ablation", "ablation", ablation), ("--vgg-weights", "vgg_weights", vgg_weights)):
        if value is not None:
            if key not in fields:
                raise click.BadParameter(f"stage '{stage}' has no '{key}' setting", param_hint=flag)
            override[key] = value
    if max_steps is not None:
        override = config_lib.merge(override, {"trainer": {"max_steps": max_steps}})
    return [config_file, override] if config_file else [override]


@click.command(context_settings={"max_content_width": 110})
@click.argument("stage", type=click.Choice(sorted(STAGES)))
@click.option("--data", "data_dir", metavar="STORE", required=True, type=click.Path(exists=True, file_okay=False),
              help="Preprocessed clip store (rhythmhead preprocess).")
@click.option("--out", "run_dir", metavar="RUN", required=True, type=click.Path(file_okay=False),
              help="Run folder: config, stats, checkpoints, export.")
@click.option("--preset", type=click.Choice(["fast", "paper"]), default="fast", show_default=True,
              help="Config preset (configs/<stage>_<preset>.yaml).")
@click.option("--config", "config_file", metavar="YAML", type=click.Path(exists=True, dir_okay=False),
              help="YAML overriding any subset of the preset (e.g. a run's config.yaml).")
@click.option("--max-steps", type=click.IntRange(min=0), metavar="N", help="Override trainer.max_steps.")
@click.option("--resume", metavar="latest|PATH", help="Continue from RUN's newest state, a state file or a run folder.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override one field, e.g. trainer.batch_size=16 (repeatable).")
@click.option("--ablation", metavar="NAME", help="Ablation variant (stages whose config has an 'ablation' field).")
@click.option("--vgg-weights", metavar="FILE", type=click.Path(exists=True, dir_okay=False),
              help="VGG19 state_dict for the perceptual loss (stages whose config has 'vgg_weights').")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("-n", "--dry-run", is_flag=True, help="Print the resolved config and exit.")
def train(stage, data_dir, run_dir, preset, config_file, max_steps, resume, sets, ablation, vgg_weights, device,
          dry_run):
    """Train one stage (motion, expression, unprojection, generator) on a preprocessed store.

    Writes RUN/config.yaml, RUN/stats.jsonl (+ TensorBoard in RUN/tensorboard), RUN/val.jsonl, training states in
    RUN/checkpoints and the inference export RUN/export/<stage>.safetensors. A state is saved every
    trainer.checkpoint_every steps, every trainer.checkpoint_minutes of wall time (default 10; 0 = off), on
    SIGINT/SIGTERM (the run stops after the current step) and at the end; --resume latest continues from the newest
    readable one (a damaged one is renamed *.bad with a warning).

    \b
    Examples:
      rhythmhead train motion --data store --out runs/motion --max-steps 2000
      rhythmhead train generator --data store --out runs/gen --preset paper --ablation no_warp
      rhythmhead train motion --data store --out runs/motion --resume latest
      rhythmhead train expression --data store --out runs/expr --set trainer.batch_size=32 --dry-run
      OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 -m rhythmhead train motion --data store --out runs/m
    """
    task_cls = load_task_class(stage)
    override = build_overrides(task_cls, stage, config_file, sets, ablation, vgg_weights, max_steps)
    cfg = config_lib.load_config(task_cls.config_class, stage, preset, override)
    if dry_run:
        click.echo(f"# stage: {stage}  preset: {preset}  data: {data_dir}  out: {run_dir}  device: {device}  "
                   f"processes: {os.environ.get('WORLD_SIZE', '1')}")
        click.echo(yaml.safe_dump(config_lib.to_dict(cfg), sort_keys=False).rstrip())
        return
    from . import distributed
    from .trainer import Trainer

    dev = resolve_device(device)
    distributed.init(dev)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = lambda message, *_, **__: click.echo(f"warning: {message}", err=True)  # one line
            trainer = Trainer(task_cls(cfg, data_dir), run_dir, dev, resume=resume).fit()
        if trainer.interrupted is not None:
            if distributed.is_main():
                click.echo(f"stopped by signal {trainer.interrupted} at step {trainer.step}; state saved, "
                           f"continue with --resume latest", err=True)
            sys.exit(128 + int(trainer.interrupted))
        if distributed.is_main() and trainer.export_path is not None:
            click.echo(f"exported {trainer.export_path}", err=True)
    except FloatingPointError as exc:  # a loss went NaN/inf: a training failure, reported in one line
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo(f"interrupted; continue with --resume latest (states in {run_dir}/checkpoints)", err=True)
        sys.exit(130)
    finally:
        distributed.shutdown()
