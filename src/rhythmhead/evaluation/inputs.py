"""Up-front checks of the ``rhythmhead evaluate`` commands' paths and options.

Every subcommand calls these before it loads a model or reads a clip, so that a bad ``--out``, ``--models`` or
``--device`` is one :class:`~rhythmhead.errors.InputError` line at once, not a traceback or a failure after minutes of
evaluation (the report is written last).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError

REPORT_SUFFIX = ".json"


def check_report_path(out: str | os.PathLike) -> Path:
    """``--out REPORT.json``: a ``.json`` name that is not a folder, whose nearest existing ancestor is a writable
    folder (the missing ones are created when the report is written). Creates nothing."""
    path = Path(out)
    if path.suffix.lower() != REPORT_SUFFIX:
        raise InputError(f"a report is JSON: name it {path.stem or 'report'}{REPORT_SUFFIX}", path)
    if path.is_dir():
        raise InputError("is a directory, expected a report file name (REPORT.json)", path)
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"cannot write the report here: {parent} is a file, not a folder", path)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write the report here: folder {parent} is not writable", path)
    return path


def check_models_path(models: str | os.PathLike, stage: str) -> Path:
    """``--models RUN``: an existing run folder, export file (``X.safetensors`` / ``X.json``) or export stem ``X``."""
    path = Path(models)
    if not path.exists() and not path.with_name(path.name + ".safetensors").is_file():
        raise InputError(f"training run folder or {stage} export (.safetensors) not found", path)
    return path


def check_store_path(data: str | os.PathLike) -> Path:
    """``--data STORE``: an existing clip store with a valid manifest (:func:`rhythmhead.data.store.read_manifest`)."""
    from ..data.store import read_manifest

    path = Path(data)
    if not path.exists():
        raise InputError("clip store folder not found (make one with `rhythmhead preprocess VIDEOS --out STORE`)", path)
    read_manifest(path)
    return path


def require_config(config: dict, keys: dict[str, tuple[str, ...]], path: str | os.PathLike, stage: str) -> None:
    """The exported training config holds ``section.key`` for every key the evaluation reads; an export made
    without a training run (e.g. a hand-made or random bundle file) lacks them."""
    missing = [f"{section}.{key}" for section, names in keys.items() for key in names
               if not isinstance(config.get(section), dict) or key not in config[section]]
    if missing:
        raise InputError(f"this {stage} export's config lacks {', '.join(missing[:4])}: it was not exported by "
                         f"`rhythmhead train {stage}`; evaluate a training run folder or its "
                         f"export/{stage}.safetensors", path)


def check_inputs(data: str | os.PathLike, out: str | os.PathLike, models: str | os.PathLike | None = None,
                 stage: str = "", device: str | None = None) -> str | None:
    """The checks every ``evaluate`` subcommand makes first: ``--out``, ``--data``, ``--models`` (when given) and
    ``--device`` (when given; returned normalised)."""
    check_report_path(out)
    check_store_path(data)
    if models is not None:
        check_models_path(models, stage)
    from ..inference.options import check_device

    return check_device(device) if device is not None else None
