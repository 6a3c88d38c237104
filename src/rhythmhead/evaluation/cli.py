"""``rhythmhead evaluate STAGE``: a click group whose subcommands live in the modules that own each evaluation.

Each subcommand is imported lazily from the table below (``--help`` stays fast).
"""
from __future__ import annotations

import click

from ..lazy import LazyGroup

# subcommand -> "module:attribute" of a click.Command. One plain table.
EVALUATIONS: dict[str, str] = {
    "motion": "rhythmhead.evaluation.motion:command",
    "expression": "rhythmhead.evaluation.expression:command",
    "unprojection": "rhythmhead.evaluation.unprojection:command",
    "render": "rhythmhead.evaluation.render:command",
    "generator": "rhythmhead.evaluation.generator:command",
    "end2end": "rhythmhead.evaluation.end2end:command",
}


@click.group(cls=LazyGroup, table=EVALUATIONS, context_settings={"max_content_width": 110})
def evaluate():
    """Score trained models and baselines; every evaluation prints one table and writes a JSON report.

    \b
    Examples:
      rhythmhead evaluate motion --data store --models runs/motion --out reports/motion.json
      rhythmhead evaluate motion --data store --folds 5 --work runs/kfold/motion --out reports/motion_kfold.json
      rhythmhead evaluate generator --data store --models runs/gen runs/gen_no_warp --out reports/gen.json
      rhythmhead evaluate render --data store --out reports/render.json
    """
