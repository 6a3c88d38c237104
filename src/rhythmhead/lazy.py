"""Lazy command and stage tables: ``"package.module:attribute"`` strings imported on first use.

The CLI, ``evaluate``, ``bench`` and ``train`` each keep one plain table from a name to the object that implements it,
so that ``--help`` stays fast (no torch/MediaPipe import) and each stage lives in the module that owns it.
"""
from __future__ import annotations

import importlib

import click


def load(target: str):
    """The attribute named by ``"package.module:attribute"``."""
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


class LazyGroup(click.Group):
    """A click group whose subcommands come from ``table`` (name → "module:attribute" of a click.Command)."""

    def __init__(self, *args, table: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.table = table

    def list_commands(self, ctx):
        return sorted(self.table)

    def get_command(self, ctx, name):
        return load(self.table[name]) if name in self.table else None
