"""Frozen dataclass configs loaded from YAML, with presets.

A stage's config is a frozen dataclass whose nested fields are themselves frozen dataclasses; a model's dataclass fields are
exactly its network constructor's keyword arguments, so construction is ``Net(**asdict(cfg.model))``. Presets are YAML
files in ``rhythmhead/configs/<stage>_<preset>.yaml`` (installed with the package); a user YAML overrides any subset of fields.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import InputError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, *, where: str = "config") -> T:
    """Build dataclass ``cls`` from a plain dict, recursing into nested dataclasses; unknown keys are an InputError."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"unknown config field(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})", where)
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, where=f"{where}.{name}")
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        elif isinstance(value, str) and float in _scalar_types(hint):
            value = _number(value, float, f"{where}.{name}")  # YAML reads "1e-3" as a string
        elif isinstance(value, str) and int in _scalar_types(hint):
            value = _number(value, int, f"{where}.{name}")
        kwargs[name] = value
    return cls(**kwargs)


def _scalar_types(hint) -> tuple:
    """The plain types a field admits (``float | None`` → (float, NoneType)); str excludes coercion."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return () if str in args else args


def _number(text: str, kind: type, where: str):
    try:
        return kind(float(text)) if kind is int and float(text).is_integer() else kind(text)
    except ValueError:
        raise InputError(f"expected a {kind.__name__}, got {text!r}", where) from None


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: ``override`` wins, nested dicts are merged key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def preset_dict(stage: str, preset: str) -> dict[str, Any]:
    """The YAML preset ``configs/<stage>_<preset>.yaml`` shipped in the package, as a dict."""
    name = f"{stage}_{preset}.yaml"
    path = resources.files("rhythmhead") / "configs" / name
    if not path.is_file():
        raise InputError(f"no preset '{preset}' for stage '{stage}'", name)
    return yaml.safe_load(path.read_text()) or {}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A user YAML file as a dict (InputError if missing or not a mapping)."""
    p = Path(path)
    if not p.is_file():
        raise InputError("config file not found", p)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML ({str(exc).splitlines()[0]})", p) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("a config file must hold a mapping of field: value", p)
    return data


def load_config(cls: type[T], stage: str, preset: str = "fast", override: str | Path | dict | None = None) -> T:
    """Preset + optional override (a YAML path or a dict) → frozen dataclass ``cls``."""
    data = preset_dict(stage, preset)
    if override is not None:
        data = merge(data, override if isinstance(override, dict) else load_yaml(override))
    return from_dict(cls, data, where=f"{stage}:{preset}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A (nested) dataclass as plain dicts/lists, for YAML/JSON and checkpoints."""
    def conv(v):
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(dataclasses.asdict(cfg))
