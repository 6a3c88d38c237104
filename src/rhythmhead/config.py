"""Frozen dataclass configs loaded from YAML, with presets.

A stage's config is a frozen dataclass whose nested fields are themselves frozen dataclasses; a model's dataclass fields are
exactly its network constructor's keyword arguments, so construction is ``Net(**asdict(cfg.model))``. Presets are YAML
files in ``rhythmhead/configs/<stage>_<preset>.yaml`` (installed with the package); a user YAML overrides any subset of fields.
Every value is checked on load (types, finite floats, ``Literal`` choices and the ranges that fields declare with
:func:`bounded`), so a bad one is a one-line :class:`ConfigError` before a run writes anything.
"""
from __future__ import annotations

import dataclasses
import math
import operator
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import InputError

T = TypeVar("T")


class ConfigError(InputError):
    """A bad config value; ``key`` is its dotted path as the user writes it (``trainer.batch_size``)."""

    def __init__(self, key: str, detail: str, path: object | None = None):
        self.key, self.detail = key, detail
        super().__init__(detail, path)


_BOUNDS = {"ge": ("≥", operator.ge), "gt": (">", operator.gt), "le": ("≤", operator.le), "lt": ("<", operator.lt)}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def bounds_text(bounds: dict[str, float]) -> str:
    """``{"ge": 0, "le": 5}`` → "from 0 to 5"; ``{"gt": 0}`` → "> 0" (the wording of every range error)."""
    if set(bounds) == {"ge", "le"}:
        return f"from {_num(bounds['ge'])} to {_num(bounds['le'])}"
    return " and ".join(f"{_BOUNDS[op][0]} {_num(bound)}" for op, bound in bounds.items())


def within(value: float, bounds: dict[str, float]) -> bool:
    """Whether ``value`` meets every bound of ``bounds`` (``ge``/``gt``/``le``/``lt``)."""
    return all(_BOUNDS[op][1](value, bound) for op, bound in bounds.items())


def bounded(default: Any, **bounds: float) -> Any:
    """A dataclass field whose value (every element, for a tuple) :func:`from_dict` checks against the bounds
    ``ge``/``gt``/``le``/``lt``, e.g. ``lr: float = bounded(1e-3, gt=0)``, ``betas: tuple[float, float] =
    bounded((0.9, 0.999), ge=0, lt=1)``. (Every float field, bounded or not, must be finite.)"""
    assert bounds and set(bounds) <= set(_BOUNDS), bounds
    return dataclasses.field(default=default, metadata={"bounds": bounds})


def from_dict(cls: type[T], data: dict[str, Any] | None, *, where: object | None = None) -> T:
    """Build dataclass ``cls`` from a plain dict, recursing into nested dataclasses.

    Strings become numbers where a field is numeric; a value of the wrong type, a non-finite float, a value outside
    the field's :func:`bounded` range, a ``Literal`` value not listed and an unknown key are a :class:`ConfigError`
    naming the dotted key (and ``where``, the file it came from, when given)."""
    return _build(cls, data or {}, "", where)


def _build(cls: type[T], data: Any, key: str, where: object | None) -> T:
    if not isinstance(data, dict):
        raise ConfigError(key, f"{key or 'config'} must be a mapping of field: value, got {data!r}", where)
    prefix = f"{key}." if key else ""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(data) - set(fields))
    if unknown:
        section = f" in {key}" if key else ""
        raise ConfigError(prefix + unknown[0], f"unknown config field(s) {', '.join(unknown)}{section} "
                                               f"(known: {', '.join(sorted(fields))})", where)
    hints = typing.get_type_hints(cls)
    return cls(**{name: _value(hints[name], fields[name], value, prefix + name, where) for name, value in data.items()})


def _value(hint, field: dataclasses.Field, value: Any, key: str, where: object | None) -> Any:
    """One field's value from YAML, converted and checked (see :func:`from_dict`)."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, where)
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(key, f"{key} must be one of {', '.join(map(str, typing.get_args(hint)))}, got {value!r}",
                              where)
        return value
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"{key}: expected a list, got {value!r}", where)
        if args[-1] is not Ellipsis and len(value) != len(args):
            raise ConfigError(key, f"{key}: expected {len(args)} values, got {value!r}", where)
        kinds = [args[0]] * len(value) if args[-1] is Ellipsis else args
        items = tuple(_scalar(kind, x, key, where) for kind, x in zip(kinds, value))
    else:
        items = _scalar(hint, value, key, where)
    bounds = field.metadata.get("bounds")
    if bounds and not all(within(x, bounds) for x in (items if origin is tuple else (items,)) if x is not None):
        raise ConfigError(key, f"{key} must be {bounds_text(bounds)}, got {value}", where)
    return items


def _scalar(hint, value: Any, key: str, where: object | None) -> Any:
    """A number for an int/float field (a string such as "1e-3" converted: YAML reads it as one); others as given."""
    kinds = _scalar_types(hint)
    if not (int in kinds or float in kinds) or (value is None and type(None) in kinds):
        return value
    kind = float if float in kinds else int
    article = "an" if kind is int else "a"
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(key, f"{key}: expected {article} {kind.__name__}, got {value!r}", where) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            kind is int and not float(value).is_integer()):
        raise ConfigError(key, f"{key}: expected {article} {kind.__name__}, got {value!r}", where)
    if not math.isfinite(value):
        raise ConfigError(key, f"{key} must be finite, got {value}", where)
    return int(value) if kind is int else value


def _scalar_types(hint) -> tuple:
    """The plain types a field admits (``float | None`` → (float, NoneType)); str excludes coercion."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return () if str in args else args


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


def load_config(cls: type[T], stage: str, preset: str = "fast",
                override: str | Path | dict | list[str | Path | dict] | None = None) -> T:
    """Preset + optional overrides (a YAML path, a dict, or a list of them applied in order) → frozen dataclass ``cls``.

    A bad value is a :class:`ConfigError` naming its key and the file that set it (none for a dict: command-line
    overrides); everything is checked here, before a run writes anything."""
    layers = [(f"{stage}_{preset}.yaml", preset_dict(stage, preset))]
    for item in [] if override is None else override if isinstance(override, list) else [override]:
        layers.append((None, item) if isinstance(item, dict) else (item, load_yaml(item)))
    data: dict[str, Any] = {}
    for _, layer in layers:
        data = merge(data, layer)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        source = next((src for src, layer in reversed(layers) if _sets(layer, exc.key)), None)
        raise ConfigError(exc.key, exc.detail, source) from None


def _sets(data: Any, key: str) -> bool:
    """Whether the nested dict ``data`` holds the dotted ``key``."""
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def to_dict(cfg: Any) -> dict[str, Any]:
    """A (nested) dataclass as plain dicts/lists, for YAML/JSON and checkpoints."""
    def conv(v):
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(dataclasses.asdict(cfg))
