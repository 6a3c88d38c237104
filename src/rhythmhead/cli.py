"""The ``rhythmhead`` command line: a thin click group that parses, validates and calls the library.

Each command lives in the library module that owns its stage and is imported lazily here, so that ``rhythmhead --help``
stays fast and a broken optional stage cannot break the others. Bad input (:class:`rhythmhead.errors.InputError`) is
printed as one line on stderr with exit status 2.
"""
from __future__ import annotations

import os
import sys

# OpenMP threads that spin while waiting make the small per-frame kernels ~50x slower on a busy or shared CPU; passive
# waiting costs little on an idle one. Set before torch is imported (commands are imported lazily below).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# MediaPipe's C++ start-up lines (absl/TFLite) on stderr are noise to a user.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import click

from .errors import InputError
from .lazy import LazyGroup

# command name -> "module:attribute" of a click.Command. One plain table, no registry machinery.
COMMANDS: dict[str, str] = {
    "demo": "rhythmhead.inference.demo_cli:demo",
    "preprocess": "rhythmhead.data.preprocess_cli:preprocess",
    "fit-pca": "rhythmhead.data.pca_cli:fit_pca",
    "train": "rhythmhead.training.cli:train",
    "evaluate": "rhythmhead.evaluation.cli:evaluate",
    "bench": "rhythmhead.bench:bench",
    "generate": "rhythmhead.inference.generate_cli:generate",
    "serve": "rhythmhead.serve.cli:serve",
}


@click.group(cls=LazyGroup, table=COMMANDS, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="rhythmhead")
def cli():
    """rhythmhead: a talking head with rhythmic head motion from a reference clip or photo and a speech recording.

    \b
    Examples:
      rhythmhead demo --out demo.mp4
      rhythmhead preprocess ../shared/media/talking_video --out store
      rhythmhead generate --reference me.mp4 --audio speech.wav --out talk.mp4
    """


def _stop_on_sigterm(signum, frame) -> None:
    """SIGTERM stops a command as Ctrl-C does: the exception unwinds every ``with`` block, so temporary outputs are
    removed (commands that stop more gently, like training between steps, install their own handler)."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the click group; bad input (InputError) and usage errors are one line on stderr and exit
    status 2, Ctrl-C exits 130 and SIGTERM 143, both leaving no partial output."""
    import signal

    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        rv = cli.main(args=argv, standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except InputError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:  # a group called bare: its help, as click prints it
        click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message(), err=True)
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"error: {' '.join(exc.format_message().split())}{where}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit as exc:
        if exc.code == 128 + signal.SIGTERM:
            click.echo("stopped by SIGTERM; no partial output was left", err=True)
        raise
    finally:
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)
