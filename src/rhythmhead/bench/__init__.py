"""``rhythmhead bench [STAGE]...``: speed and memory of each stage, merged into one JSON file.

Each stage's benchmark is a function ``run(preset: str) -> dict[str, dict]`` (name → ``{"fps", "peak_mb", ...}``,
usually measured with :func:`rhythmhead.bench.common.measure`) in the module named by the table below, imported only
when asked for; stages whose module is not part of this install are skipped. A stage's function may take more keyword
arguments (``serve``: ``clients``, ``seconds``, ``models``); the command's options of those names reach the stages that
take them.
"""
from __future__ import annotations

import inspect
import json
import os
import platform
import sys

import click
import torch

from ..errors import InputError
from ..lazy import load

# stage -> "module:function". One plain table.
BENCHES: dict[str, str] = {
    "preprocess": "rhythmhead.bench.preprocess:run",
    "train": "rhythmhead.bench.train:run",
    "render": "rhythmhead.bench.render:run",
    "generator": "rhythmhead.bench.generator:run",
    "end2end": "rhythmhead.bench.end2end:run",
    "serve": "rhythmhead.bench.serve:run",
}


def machine() -> dict:
    """What the numbers were measured on."""
    info = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "processor": platform.processor(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def run_benches(stages: list[str], preset: str, echo=lambda msg: None, options: dict | None = None) -> dict:
    """Run the named stages (all available when empty) → ``{"stages", "machine", "preset", "skipped"}``;
    ``options`` go to the stages whose function takes them."""
    results: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for stage in stages or list(BENCHES):
        fn = load(BENCHES[stage])
        echo(f"bench {stage} ({preset}) ...")
        params = inspect.signature(fn).parameters
        kwargs = {k: v for k, v in (options or {}).items() if k in params and v is not None}
        try:
            results.update(fn(preset, **kwargs))
        except InputError as exc:  # e.g. no media to measure on: report and go on with the others
            skipped[stage] = str(exc)
            echo(f"bench {stage}: skipped ({exc})")
    return {"stages": results, "machine": machine(), "preset": preset, "skipped": skipped}


@click.command(context_settings={"max_content_width": 110})
@click.argument("stages", nargs=-1, type=click.Choice(list(BENCHES)))
@click.option("--preset", type=click.Choice(["fast", "paper"]), default="fast", show_default=True)
@click.option("--json", "json_out", metavar="OUT", type=click.Path(dir_okay=False), help="Write the results here.")
@click.option("--models", type=click.Path(file_okay=False), metavar="DIR",
              help="serve: the models folder (default: the bundled models).")
@click.option("--clients", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="serve: concurrent clients, one job each.")
@click.option("--seconds", type=click.FloatRange(0.5, 600), default=3.0, show_default=True,
              help="serve: seconds of speech per job.")
def bench(stages, preset, json_out, models, clients, seconds):
    """Measure frames/s (or steps/s) and peak memory per stage; none named = all available.

    \b
    Examples:
      rhythmhead bench --json bench.json
      rhythmhead bench render generator --preset paper --json bench_paper.json
      OMP_NUM_THREADS=2 rhythmhead bench end2end
      rhythmhead bench serve --clients 20 --seconds 3      # the HTTP server under 20 concurrent clients
    """
    from ..evaluation.report import format_table

    out = run_benches(list(stages), preset, echo=lambda msg: click.echo(msg, err=True),
                      options={"models": models, "clients": clients, "seconds": seconds})
    rows = {name: {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for name, values in out["stages"].items()}
    click.echo(format_table(rows) if rows else "no benchmark ran")
    for stage, why in out["skipped"].items():
        click.echo(f"skipped {stage}: {why}", err=True)
    if json_out:
        from pathlib import Path

        from ..common import atomic_path

        path = Path(json_out)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(out, indent=2, default=str) + "\n")
        click.echo(f"wrote {path}", err=True)
    if not rows and out["skipped"]:
        sys.exit(1)
