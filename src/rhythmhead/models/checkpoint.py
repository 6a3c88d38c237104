"""Exported inference checkpoints: ``<stem>.safetensors`` + ``<stem>.json``.

The safetensors file holds every weight as ``<module>.<param>`` and every extra tensor (e.g. pose statistics, a PCA
basis) as ``extra.<name>``; its metadata holds the JSON ``meta`` (``{"stage", "config", ...}``) under the key
``rhythmhead``, so the one file is self-contained. ``<stem>.json`` is the same meta, for people and tools. Inference
imports this module, never ``rhythmhead.training``. No pickles: loading never runs code.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..common import atomic_path
from ..errors import InputError

META_KEY = "rhythmhead"
EXTRA = "extra"


@dataclass
class Export:
    """A loaded export: ``meta`` (``{"stage", "config", ...}``), per-module state_dicts and the extra tensors."""

    meta: dict[str, Any]
    state_dicts: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def stage(self) -> str:
        return self.meta.get("stage", "?")

    @property
    def config(self) -> dict[str, Any]:
        return self.meta.get("config", {})


def save_export(path_stem: str | Path, modules: dict[str, nn.Module], extra: dict[str, torch.Tensor] | None = None,
                meta: dict[str, Any] | None = None) -> Path:
    """Write ``<path_stem>.safetensors`` and ``<path_stem>.json`` atomically; returns the safetensors path.

    Args:
        path_stem: output path without suffix, e.g. ``RUN/export/motion``.
        modules: name → module (unwrapped, no '.' in the name; ``extra`` is reserved).
        extra: name → tensor saved beside the weights (``extra.<name>``).
        meta: JSON-serialisable dict; must hold ``"stage"``.
    """
    meta = dict(meta or {})
    if "stage" not in meta:
        raise ValueError("export meta must name its 'stage'")
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        if "." in name or name == EXTRA:
            raise ValueError(f"bad export module name {name!r}")
        module = getattr(module, "module", module)  # unwrap DDP
        for key, value in module.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().to("cpu").contiguous().clone()  # clone: no shared storage
    for name, value in (extra or {}).items():
        tensors[f"{EXTRA}.{name}"] = torch.as_tensor(value).detach().to("cpu").contiguous().clone()
    stem = Path(path_stem)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(meta, indent=2, sort_keys=True, default=_json_default)
    weights = stem.with_name(stem.name + ".safetensors")
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: text})
    with atomic_path(stem.with_name(stem.name + ".json")) as tmp:
        tmp.write_text(text + "\n")
    return weights


def load_export(path: str | Path, stage: str | None = None, device: str | torch.device = "cpu") -> Export:
    """Read an export (``X.safetensors``, ``X.json``, the stem ``X`` or a run folder).

    InputError (one line) if it is missing, damaged, not a rhythmhead export, or of a stage other than ``stage``."""
    weights = _weights_path(Path(path), stage)
    if not weights.is_file():
        raise InputError("checkpoint not found", weights)
    try:
        from safetensors import safe_open
        with safe_open(str(weights), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"not a readable safetensors checkpoint ({str(exc).splitlines()[0][:100]})", weights) from None
    if META_KEY not in header:
        raise InputError("not a rhythmhead export (no rhythmhead metadata)", weights)
    try:
        meta = json.loads(header[META_KEY])
    except json.JSONDecodeError:
        raise InputError("damaged rhythmhead metadata", weights) from None
    found = meta.get("stage", "?")
    if stage is not None and found != stage:
        raise InputError(f"is a '{found}' checkpoint, expected '{stage}'", weights)
    out = Export(meta=meta)
    for key, value in tensors.items():
        owner, _, rest = key.partition(".")
        if owner == EXTRA:
            out.extra[rest] = value
        else:
            out.state_dicts.setdefault(owner, {})[rest] = value
    return out


def _weights_path(path: Path, stage: str | None) -> Path:
    """The safetensors file meant by ``path``: itself, its ``.json`` twin, a stem, or a run / export folder."""
    if path.suffix == ".safetensors":
        return path
    if path.suffix == ".json":
        return path.with_suffix(".safetensors")
    if path.is_dir():  # a run folder (RUN/export/<stage>.safetensors) or an export folder
        folders = [path / "export", path]
        if stage is not None:
            for folder in folders:
                if (folder / f"{stage}.safetensors").is_file():
                    return folder / f"{stage}.safetensors"
        for folder in folders:
            found = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise InputError(f"holds several exports ({', '.join(p.name for p in found)}); name one", folder)
        raise InputError("no exported checkpoint (*.safetensors) in this folder", path)
    return path.with_name(path.name + ".safetensors")


def _json_default(value: Any):
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError(f"meta value of type {type(value).__name__} is not JSON-serialisable")


def load_matching(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Warm start: copy into ``module`` every tensor of ``state`` with the same name and shape; tensors the module lacks
    (e.g. the extra levels of a generator exported at a higher resolution, or the branches an ablation removes) are
    ignored. Returns the names of the module's tensors left as they were (not in ``state`` or of another shape)."""
    own = module.state_dict()
    match = {k: state[k] for k, v in own.items() if k in state and state[k].shape == v.shape}
    module.load_state_dict(match, strict=False)
    return [k for k in own if k not in match]
