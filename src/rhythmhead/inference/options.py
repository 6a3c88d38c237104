"""The generation controls: one definition for every entry point.

:class:`GenerationControls` names each control of a generation once — its type, default, allowed values and help — and
checks a value wherever it comes from: ``rhythmhead generate``'s options (:func:`click_options` builds them from the
fields), a ``--jobs`` file's lines, the Python API (:meth:`TalkingHeadPipeline.__call__
<rhythmhead.inference.pipeline.TalkingHeadPipeline.__call__>` and ``plan``) and an HTTP request. A bad value is one
:class:`~rhythmhead.errors.InputError` line (what, the allowed values, what was given); NaN and ±inf are never a number
here, and a JSON ``1e8`` is checked against the same range as the command line's ``--finetune-steps 100000000``.

The inputs of a generation (reference, speech, output, the driving files) are files, checked by
:mod:`rhythmhead.inference.inputs`; what is here is every other choice a user makes.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Callable, Mapping

from ..config import bounds_text, within
from ..errors import InputError

SEED_MAX = 2**32 - 1  # numpy's default_rng and torch.manual_seed both accept [0, 2³²)


def _control(default, help: str, *, ge=None, le=None, choices=None, negatable: bool = False):
    """A control's field: its help, its range (``bounds`` as :func:`rhythmhead.config.bounded` declares them, checked
    by the same :func:`rhythmhead.config.within`) or its choices, and whether a flag has a ``--no-`` form."""
    bounds = {k: v for k, v in (("ge", ge), ("le", le)) if v is not None} or None
    return field(default=default, metadata={"help": help, "bounds": bounds, "choices": choices,
                                            "negatable": negatable})


@dataclass(frozen=True)
class GenerationControls:
    """What a user chooses about one generation (beyond its files). Every value is checked on construction (and by
    :func:`dataclasses.replace`): a bad one raises :class:`~rhythmhead.errors.InputError`."""

    still: bool = _control(False, "Hold the reference's mean head pose.")
    motion_scale: float = _control(1.0, "Head-motion amplitude about the reference's mean pose (0 = still).", ge=0, le=5)
    expression_scale: float = _control(1.0, "Expression amplitude about the neutral face.", ge=0, le=5)
    blink: bool = _control(True, "Add natural random blinks.", negatable=True)
    seed: int = _control(0, "Seed of the blinks and of fine-tuning.", ge=0, le=SEED_MAX)
    finetune_steps: int = _control(0, "Test-time fine-tuning steps of G on the reference frames (paper: 70).",
                                   ge=0, le=2000)
    paste_back: bool = _control(False, "Paste the face back into the reference's original frame, composed at its own "
                                       "resolution.")
    size: int = _control(256, "Side of the output crop (composed at that size from the reference's own pixels).",
                         choices=(256, 512))
    max_size: int = _control(1280, "With --paste-back: the longest side of the output video (the source is shrunk "
                                   "to fit).", ge=256, le=8192)
    max_seconds: float = _control(600.0, "Longest speech accepted, in seconds (0 = no limit).", ge=0)
    unprojector: str = _control("mediapipe", "Mesh of the key frame: the tracked MediaPipe mesh or the bundle's "
                                             "unprojection network.", choices=("mediapipe", "network"))

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, check(f.name, getattr(self, f.name)))

    @classmethod
    def from_values(cls, values: Mapping[str, Any], base: "GenerationControls | None" = None) -> "GenerationControls":
        """``base`` (default: the defaults) with ``values`` (names with ``_`` or ``-``) applied and checked;
        an unknown name is an InputError too."""
        values = {k.replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(values) - set(NAMES))
        if unknown:
            raise InputError(f"unknown generation control(s) {', '.join(unknown)} (known: {', '.join(NAMES)})")
        return replace(base or cls(), **values)


NAMES = tuple(f.name for f in fields(GenerationControls))


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check(name: str, value):
    """``value`` of control ``name`` coerced to its type (an integral float for an int, "512" for a choice of ints), or
    one InputError line naming the option, the allowed values and what was given."""
    f = _FIELDS[name]
    meta, kind = f.metadata, f.type
    bounds, choices = meta["bounds"], meta["choices"]
    shown = repr(value) if isinstance(value, str) else str(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise InputError(f"{flag(name)} must be true or false, got {shown}")
        return value
    if choices is not None:
        for c in choices:
            if value == c or (isinstance(value, str) and value == str(c)) or (
                    _is_number(value) and _is_number(c) and float(value) == c):
                return c
        raise InputError(f"{flag(name)} must be one of {', '.join(map(str, choices))}, got {shown}")
    span = bounds_text(bounds)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InputError(f"{flag(name)} must be a number {span}, got {shown}") from None
    if not _is_number(value) or not math.isfinite(value):
        raise InputError(f"{flag(name)} must be a number {span}, got {shown}")
    if kind == "int":
        if float(value) != int(value):
            raise InputError(f"{flag(name)} must be a whole number {span}, got {shown}")
        value = int(value)
    else:
        value = float(value)
    if not within(value, bounds):
        raise InputError(f"{flag(name)} must be {span}, got {shown}")
    return value


_FIELDS = {f.name: f for f in fields(GenerationControls)}


def schema(max_seconds: float | None = None) -> dict:
    """Every control as plain data, for the HTTP API's ``/v1/info`` and the web page's widgets: ``{name: {"type",
    "default", "help", "min", "max", "choices"}}``; ``max_seconds`` (a server's limit) replaces that control's
    default and maximum."""
    out = {}
    for f in fields(GenerationControls):
        m = f.metadata
        bounds = m["bounds"] or {}
        entry = {"type": f.type, "default": None if f.default is MISSING else f.default, "help": m["help"],
                 "min": bounds.get("ge"), "max": bounds.get("le"),
                 "choices": list(m["choices"]) if m["choices"] else None}
        if f.name == "max_seconds" and max_seconds:
            entry.update(default=max_seconds, max=max_seconds)
        out[f.name] = entry
    return out


def click_options(command: Callable) -> Callable:
    """Decorate a click command with one option per control (same names, defaults and help). Values reach the
    command raw (strings for numbers) and are checked by :class:`GenerationControls`, so that ``nan`` or ``-5`` get
    the same one-line error as in a jobs file."""
    import click

    for f in reversed(fields(GenerationControls)):
        meta = f.metadata
        default = f.default if f.default is not MISSING else None
        if f.type == "bool":
            decl = f"{flag(f.name)}/--no-{f.name.replace('_', '-')}" if meta["negatable"] else flag(f.name)
            command = click.option(decl, default=default, show_default=meta["negatable"], is_flag=True,
                                   help=meta["help"])(command)
            continue
        if meta["choices"] is not None:
            typ = click.Choice([str(c) for c in meta["choices"]])
            default = str(default)
            hint, metavar = "", None
        else:
            typ = str
            hint = f" [{bounds_text(meta['bounds'])}]"
            metavar = {"int": "N", "float": "X"}[f.type]
        command = click.option(flag(f.name), type=typ, default=default, show_default=True, metavar=metavar,
                               help=meta["help"] + hint)(command)
    return command


def check_device(device) -> str:
    """A torch device name that exists on this machine (``cpu``, ``cuda``, ``cuda:1``, ``mps``), or one InputError
    line saying what is wrong."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"--device {device}: not a torch device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA device available (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {device}: MPS is not available on this machine (use --device cpu)")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"--device {device}: not supported (use cpu, cuda or cuda:N)")
    return str(dev)
