"""Speaker-grouped K-fold cross-validation of the learners Φ (``motion``) and Ψ (``expression``).

``rhythmhead evaluate motion|expression --folds K``: the store's clips are dealt into K speaker-disjoint folds
(:func:`rhythmhead.data.store.speaker_folds`, seed ``--seed``), so every clip is held out exactly once. For each fold f a
fresh model is trained with the :class:`~rhythmhead.training.trainer.Trainer` on the other folds (the stage's preset
config with ``data.folds = K``, ``data.fold = f``, ``data.split_seed = seed``; Ψ fits its expression PCA on the fold's
training clips, ``data.pca = ""``) in ``WORK/fold_f``, then scored on fold f by the stage's own evaluator (which reads the
split from the export's config). The report holds every fold's table and the mean and spread over folds.

A fold whose export exists is reused (its config must equal the one asked for); one with training states but no export
is resumed. The held-out fold is the training run's val split, which only feeds val.jsonl: weights are never chosen by
it (the export is the last step).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError

EvaluateFn = Callable[[str, Path], tuple[dict, dict]]
COUNTS = ("windows", "predicted_frames", "test_frames", "closure_events")  # per-fold settings summed over the folds


def fold_config(stage: str, folds: int, fold: int, preset: str = "fast", max_steps: int | None = None, seed: int = 0,
                sets: tuple[str, ...] = ()):
    """``(task class, config)`` of fold ``fold``'s training run (``sets``: ``KEY=VALUE`` overrides as ``rhythmhead
    train --set`` takes them, under the fold's own split keys)."""
    from ..config import load_config, merge
    from ..training.cli import load_task_class, parse_set

    task_cls = load_task_class(stage)
    override: dict = merge(parse_set(tuple(sets)), {"data": {"folds": folds, "fold": fold, "split_seed": seed}})
    if stage == "expression":
        override["data"]["pca"] = ""  # fitted on this fold's training clips only
    if max_steps is not None:
        override["trainer"] = {"max_steps": max_steps}
    return task_cls, load_config(task_cls.config_class, stage, preset, override)


def _differences(want, have, prefix: str = "") -> list[str]:
    if isinstance(want, dict) and isinstance(have, dict):
        out = []
        for key in sorted(set(want) | set(have)):
            out += _differences(want.get(key), have.get(key), f"{prefix}{key}.")
        return out
    return [] if want == have else [prefix.rstrip(".")]


def _check_same(run_dir: Path, want: dict, have: dict | None, what: str) -> None:
    diff = _differences(want, have or {})
    if diff:
        raise InputError(f"holds a {what} with another config ({', '.join(diff[:4])} differ); remove it or choose "
                         "another --work", run_dir)


def train_fold(stage: str, data: str | Path, run_dir: Path, task_cls, cfg, device: str = "cpu",
               echo: Callable[[str], None] = print) -> Path:
    """Train (or reuse, or resume) one fold's run in ``run_dir``; returns ``run_dir``."""
    import yaml

    from ..config import to_dict
    from ..training import checkpoint
    from ..training.trainer import Trainer

    want = json.loads(json.dumps(to_dict(cfg)))
    meta = run_dir / "export" / f"{stage}.json"
    if (run_dir / "export" / f"{stage}.safetensors").is_file() and meta.is_file():
        _check_same(run_dir, want, json.loads(meta.read_text()).get("config"), "fold export")
        echo(f"{run_dir}: reusing its export")
        return run_dir
    resume = None
    if checkpoint.find_latest(run_dir) is not None:
        saved = run_dir / "config.yaml"
        _check_same(run_dir, want, yaml.safe_load(saved.read_text()) if saved.is_file() else None, "fold run")
        resume = "latest"
        echo(f"{run_dir}: resuming")
    trainer = Trainer(task_cls(cfg, str(data)), run_dir, device, resume=resume).fit()
    if trainer.interrupted is not None:
        echo(f"stopped by signal {trainer.interrupted} at step {trainer.step} of {run_dir}; run the same command again "
             "to continue")
        sys.exit(128 + int(trainer.interrupted))
    return run_dir


def fold_summary(per_fold: list[dict[str, dict[str, float]]]) -> tuple[dict, dict]:
    """``(mean, std)`` over folds of every method's metrics: NaN folds left out, sample std (ddof = 1; NaN with fewer
    than two finite folds)."""
    mean: dict[str, dict[str, float]] = {}
    std: dict[str, dict[str, float]] = {}
    for name in per_fold[0]:
        mean[name], std[name] = {}, {}
        for key in per_fold[0][name]:
            values = np.array([float(f[name].get(key, math.nan)) for f in per_fold], np.float64)
            values = values[np.isfinite(values)]
            mean[name][key] = float(values.mean()) if values.size else math.nan
            std[name][key] = float(values.std(ddof=1)) if values.size > 1 else math.nan
    return mean, std


def cross_validate(stage: str, data: str | Path, folds: int, work: str | Path, evaluate: EvaluateFn,
                   preset: str = "fast", max_steps: int | None = None, seed: int = 0, device: str = "cpu",
                   columns: tuple[str, ...] | None = None, echo: Callable[[str], None] = print,
                   sets: tuple[str, ...] = ()) -> tuple[dict, dict, dict]:
    """Train and score every fold (module docstring); prints each fold's table as it is done.

    Returns ``(settings, methods, extra)`` for :func:`rhythmhead.evaluation.report.write_report`: methods = the mean
    over folds, ``extra = {"std": …, "folds": [{fold, run, speakers, clips, settings, methods}, …]}``.
    """
    from ..data.store import ClipStore, speaker_folds
    from .report import format_table

    records = ClipStore(data).manifest()
    assignment = speaker_folds(records, folds, seed)  # InputError for k < 2 or more folds than speakers
    speaker_of = {r["id"]: r["speaker"] for r in records}
    work = Path(work)
    per_fold, fold_info = [], []
    first_settings: dict = {}
    for f in range(folds):
        held = assignment[f]
        echo(f"fold {f + 1}/{folds} (data.fold={f}): {len(held)} held-out clips of {len({speaker_of[i] for i in held})} speakers")
        task_cls, cfg = fold_config(stage, folds, f, preset, max_steps, seed, sets)
        run_dir = train_fold(stage, data, work / f"fold_{f}", task_cls, cfg, device, echo)
        settings, methods = evaluate(str(data), run_dir)
        if not set(settings["clips"]) <= set(held):  # the evaluator must score the fold the run held out
            raise InputError(f"evaluated clips outside held-out fold {f}", run_dir)
        first_settings = first_settings or settings
        per_fold.append(methods)
        fold_info.append({"fold": f, "run": str(run_dir), "speakers": sorted({speaker_of[i] for i in held}),
                          "clips": list(held), "evaluated_clips": settings["clips"],
                          "settings": {k: v for k, v in settings.items() if k in COUNTS},
                          "methods": methods})
        cols = columns or tuple(next(iter(methods.values())))
        echo(format_table({m: {k: v.get(k) for k in cols} for m, v in methods.items()}))
    mean, std = fold_summary(per_fold)
    skip = {"clips", "speakers", "models", "split", *COUNTS}
    settings = {
        "protocol": f"speaker-grouped {folds}-fold cross-validation: every clip held out once; per fold a fresh model "
                    f"trained on the other folds (preset {preset}, "
                    f"{cfg.trainer.max_steps} steps), scored on the held-out fold",
        "folds": folds, "fold_seed": seed, "preset": preset, "max_steps": cfg.trainer.max_steps, "work": str(work),
        "overrides": list(sets),
        "fold_assignment": "rhythmhead.data.store.speaker_folds: speaker-disjoint, balanced by frames and clips",
        "aggregate": "methods = mean over folds of each fold's value; std = sample std over folds (ddof 1); NaN "
                     "folds left out",
        "clips": sum(len(x["evaluated_clips"]) for x in fold_info),
        **{k: sum(x["settings"][k] for x in fold_info) for k in COUNTS if k in first_settings},
        **{k: v for k, v in first_settings.items() if k not in skip},
    }
    return settings, mean, {"std": std, "folds": fold_info}


def kfold_options(fresh: str):
    """The cross-validation options shared by ``evaluate motion`` and ``evaluate expression`` (``fresh``: what each
    fold trains, for the help text): ``--folds --work --preset --max-steps --seed --set``."""
    import click

    options = [
        click.option("--folds", type=int, metavar="K",
                     help=f"Instead of --models: speaker-grouped K-fold cross-validation ({fresh} per fold, trained on "
                          "the other folds, scored on its own)."),
        click.option("--work", type=click.Path(file_okay=False), metavar="DIR",
                     help="With --folds: fold runs in DIR/fold_<f>; an exported fold is reused, an interrupted one "
                          "resumed. [default: REPORT_folds beside --out]"),
        click.option("--preset", type=click.Choice(["fast", "paper"]),
                     help="With --folds: training preset. [default: fast]"),
        click.option("--max-steps", type=click.IntRange(min=1), metavar="N",
                     help="With --folds: training steps per fold. [default: the preset's]"),
        click.option("--seed", type=int, help="With --folds: seed of the fold assignment (data.split_seed). "
                                               "[default: 0]"),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="With --folds: override a training config field, as `rhythmhead train --set` "
                          "(repeatable)."),
    ]

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


def check_options(models, folds, split, work, max_steps, preset, seed, sets=()) -> None:
    """The evaluate commands take either ``--models`` (one trained run) or ``--folds`` (cross-validation) and the
    options of that mode only; InputError otherwise."""
    if (models is None) == (folds is None):
        raise InputError("give either --models RUN (score a trained run) or --folds K (cross-validation)")
    if models is not None:
        given = [flag for flag, value in (("--work", work), ("--max-steps", max_steps), ("--preset", preset),
                                          ("--seed", seed), ("--set", sets or None)) if value is not None]
        if given:
            raise InputError(f"{', '.join(given)} only apply with --folds")
    elif split is not None:
        raise InputError("--split only applies with --models (cross-validation scores every fold once)")
    elif folds < 2:
        raise InputError(f"--folds {folds}: cross-validation needs at least 2 folds (each is held out once)")


def default_work(out: str | Path) -> Path:
    """Fold runs of ``--out REPORT.json`` without ``--work``: ``REPORT_folds/`` beside the report."""
    out = Path(out)
    return out.with_name(f"{out.stem}_folds")


def run_command(stage: str, data: str, out: str, folds: int, work: str | None, preset: str | None,
                max_steps: int | None, seed: int | None, device: str, evaluate: EvaluateFn,
                columns: tuple[str, ...], sets: tuple[str, ...] = ()) -> None:
    """``rhythmhead evaluate STAGE --folds K``: cross-validate, print the fold tables and the mean ± std, write the
    report."""
    import click

    from .report import format_spread_table, write_report

    work_dir = Path(work) if work is not None else default_work(out)
    settings, mean, extra = cross_validate(stage, data, folds, work_dir, evaluate, preset or "fast", max_steps,
                                           0 if seed is None else seed, device, columns, click.echo, sets)
    click.echo(f"mean ± std over {folds} folds ({settings['clips']} clips)")
    click.echo(format_spread_table(mean, extra["std"], columns))
    write_report(out, stage, settings, mean, extra)
    click.echo(f"wrote {out}")
