"""``rhythmhead evaluate STAGE``: a click group whose subcommands live in the modules that own each evaluation.

Each subcommand is imported lazily from the table below; a stage whose module is not part of this install is left out
of the listing (and asking for it says so) rather than breaking the others.
"""
from __future__ import annotations

import importlib

import click

# subcommand -> "module:attribute" of a click.Command. One plain table.
EVALUATIONS: dict[str, str] = {
    "motion": "rhythmhead.evaluation.motion:command",
    "expression": "rhythmhead.evaluation.expression:command",
    "unprojection": "rhythmhead.evaluation.unprojection:command",
    "render": "rhythmhead.evaluation.render:command",
    "generator": "rhythmhead.evaluation.generator:command",
    "end2end": "rhythmhead.evaluation.end2end:command",
}


def load_command(name: str) -> click.Command | None:
    """The click command of evaluation ``name``, or None when its module is not installed."""
    target = EVALUATIONS.get(name)
    if target is None:
        return None
    module, attr = target.split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("rhythmhead"):
            return None
        raise


class _LazyEvaluations(click.Group):
    def list_commands(self, ctx):
        return [n for n in EVALUATIONS if load_command(n) is not None]

    def get_command(self, ctx, name):
        command = load_command(name)
        if command is None and name in EVALUATIONS:
            raise click.ClickException(f"evaluation '{name}' is not available in this install")
        return command


@click.group(cls=_LazyEvaluations, context_settings={"max_content_width": 110})
def evaluate():
    """Score trained models and baselines; every evaluation prints one table and writes a JSON report.

    \b
    Examples:
      rhythmhead evaluate motion --data store --models runs/motion --out reports/motion.json
      rhythmhead evaluate generator --data store --models runs/gen runs/gen_no_warp --out reports/gen.json
      rhythmhead evaluate render --data store --out reports/render.json
    """
