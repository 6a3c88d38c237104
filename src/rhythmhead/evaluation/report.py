"""Evaluation reports: one JSON file per evaluation and a side-by-side text table.

Layout (every ``rhythmhead evaluate`` subcommand writes it)::

    {"task": "generator", "settings": {...how it was measured...},
     "methods": {"ours": {"ssim": 0.71, "psnr": 24.3}, "static": {...}}}

Cross-validated reports (``--folds K``) hold the mean over folds in ``methods`` and add ``"std"`` (the same layout:
sample std over folds) and ``"folds"`` (each fold's speakers, clips and methods).

Non-finite numbers are written as the strings ``"inf"``, ``"-inf"``, ``"nan"`` (JSON has no literal for them;
``float()`` reads them back).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy/torch scalars → float, non-finite floats → strings, tuples → lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_report(path: str | Path, task: str, settings: dict[str, Any], methods: dict[str, dict[str, Any]],
                 extra: dict[str, Any] | None = None) -> Path:
    """Write the report atomically (:func:`rhythmhead.common.atomic_path`) and return its path; ``extra`` adds
    top-level keys after methods."""
    from ..common import atomic_path

    path = Path(path)
    body = {"task": task, "settings": settings, "methods": methods, **(extra or {})}
    text = json.dumps(_plain(body), indent=2, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return path


def read_report(path: str | Path) -> dict[str, Any]:
    """A report written by :func:`write_report` (the non-finite strings stay strings)."""
    return json.loads(Path(path).read_text())


def format_value(value: Any) -> str:
    """Four significant figures at most, no exponent for ordinary magnitudes; '–' for missing values."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 10:
        return f"{v:.2f}"
    if a >= 0.01:
        return f"{v:.3f}"
    return f"{v:.2e}"


def format_table(methods: dict[str, dict[str, Any]]) -> str:
    """Rows = methods, columns = every metric any method has (first-seen order), right-aligned."""
    columns: list[str] = []
    for values in methods.values():
        columns += [k for k in values if k not in columns]
    header = ["method", *columns]
    rows = [[name, *(format_value(values.get(c)) for c in columns)] for name, values in methods.items()]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    return "\n".join(lines)


def format_spread_table(mean: dict[str, dict[str, Any]], std: dict[str, dict[str, Any]],
                        columns: tuple[str, ...] | None = None) -> str:
    """:func:`format_table` with every cell ``mean ± std`` (e.g. over cross-validation folds)."""
    cells = {}
    for name, values in mean.items():
        keys = columns or tuple(values)
        cells[name] = {k: f"{format_value(values.get(k))} ± {format_value(std.get(name, {}).get(k))}" for k in keys}
    return format_table(cells)
