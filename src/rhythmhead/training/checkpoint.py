"""Training-state checkpoints: ``RUN/checkpoints/state-<step:08d>.pt``, atomic, rotated, resumable.

A state is a plain dict of tensors and containers (loadable with ``torch.load(weights_only=True)``)::

    {"format": "rhythmhead-train-state", "version": 1, "stage", "step", "world_size", "config" (resolved, plain dict),
     "modules": {name: state_dict}, "optimizers": {name: state_dict}, "sampler_position" (indices consumed per rank),
     "rng": [per-rank RNG state], "hooks": {name: state}, "task": task.extra_state()}

RNG states are stored as tensors and lists (never numpy objects) so that no pickled class is needed to read them.
A save killed mid-write leaves only a hidden temporary file (swept at the next start); resuming from a folder skips an
unreadable newest state (cut short, empty, not a state), renaming it ``*.bad``.
The inference export is a different file kind; see :mod:`rhythmhead.models.checkpoint`.
"""
from __future__ import annotations

import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError

FORMAT = "rhythmhead-train-state"
_NAME = re.compile(r"^state-(\d{8})\.pt$")
_TMP = re.compile(r"^\.state-\d{8}\.pt\..*\.tmp\.pt$")  # common.atomic_path's temporary names


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def state_path(run_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"state-{step:08d}.pt"


# -- RNG -----------------------------------------------------------------------------------------------------------
def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain lists."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


class preserved_rng:
    """Context manager: whatever runs inside (validation, sampling) leaves every RNG stream as it found it."""

    def __enter__(self):
        self._state = rng_state()
        return self

    def __exit__(self, *exc):
        set_rng_state(self._state)
        return False


# -- files ---------------------------------------------------------------------------------------------------------
def save_state(run_dir: str | Path, step: int, state: dict[str, Any], keep_last: int = 3) -> Path:
    """Write ``state`` atomically (:func:`rhythmhead.common.atomic_path`) as ``state-<step>.pt`` and keep only the
    newest ``keep_last``."""
    from ..common import atomic_path

    path = state_path(run_dir, step)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in list_states(run_dir)[:-max(1, keep_last)]:
        old.unlink(missing_ok=True)
    return path


def list_states(run_dir: str | Path) -> list[Path]:
    """Every complete training state in ``RUN/checkpoints``, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def find_latest(run_dir: str | Path) -> Path | None:
    """The newest training state of a run, or None."""
    states = list_states(run_dir)
    return states[-1] if states else None


def sweep_temp(run_dir: str | Path) -> list[Path]:
    """Remove the temporary files that a save killed mid-write left in ``RUN/checkpoints`` (rank 0, at start)."""
    folder = checkpoint_dir(run_dir)
    swept = [p for p in folder.iterdir() if _TMP.match(p.name)] if folder.is_dir() else []
    for p in swept:
        p.unlink(missing_ok=True)
    return swept


def load_resume(run_dir: str | Path, resume: str | Path, main: bool = True) -> tuple[Path, dict[str, Any]]:
    """``"latest"`` (newest state of ``run_dir``), a state file, or another run's folder → (state file, state).

    Of a folder, the newest *readable* state is taken: one cut short, empty or not a state is skipped, and on rank 0
    (``main``) renamed to ``<name>.bad`` (so that rotation never keeps it over good ones) with a one-line warning.
    A state file named explicitly must be readable. InputError when there is nothing to resume from.
    """
    latest = str(resume) == "latest"
    path = Path(run_dir) if latest else Path(resume)
    if not latest and not path.is_dir():
        if not path.is_file():
            raise InputError("training state not found", path)
        return path, load_state(path)
    states = list_states(path)
    if not states:
        raise InputError("no training state to resume from (run without --resume to start)" if latest else
                         "no training state in this run folder", checkpoint_dir(path))
    for state_file in reversed(states):
        try:
            return state_file, load_state(state_file)
        except InputError as exc:
            if main:
                state_file.replace(state_file.with_name(state_file.name + ".bad"))
                warnings.warn(f"{exc}; renamed to {state_file.name}.bad, trying the state before it", stacklevel=2)
    raise InputError(f"none of its {len(states)} training states is readable; start a new run (without --resume)",
                     checkpoint_dir(path))


def load_state(path: str | Path) -> dict[str, Any]:
    """A training state (CPU tensors); InputError for a file that is not one."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError("training state not found", path) from None
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError/... for damaged files
        first = str(exc).strip().split("\n")[0].split(". ")[0][:120]  # its first sentence; none for an empty file
        why = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise InputError(f"not a readable training state ({why})", path) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError("not a rhythmhead training state", path)
    return state


def check_same(saved: dict[str, Any], current: dict[str, Any], path: str | Path, what: str = "architecture") -> None:
    """InputError naming every differing key when two (nested) config dicts differ."""
    diffs = _diff(saved, current)
    if diffs:
        shown = "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, a, b in diffs[:4])
        more = f" (+{len(diffs) - 4} more)" if len(diffs) > 4 else ""
        raise InputError(f"{what} differs from the checkpoint's ({shown}{more}); resume with the same config", path)


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            out += _diff(a.get(key, "<absent>"), b.get(key, "<absent>"), name)
        return out
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731 - YAML lists vs dataclass tuples
    return [] if norm(a) == norm(b) else [(prefix or "config", a, b)]
