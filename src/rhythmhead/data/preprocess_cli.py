"""``rhythmhead preprocess``: videos → clip store (thin wrapper over :func:`rhythmhead.data.preprocess_run.preprocess_store`)."""
from __future__ import annotations

import sys
from pathlib import Path

import click


def _parse_shard(ctx, param, value: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"expected I/N (e.g. 0/4), got {value!r}", ctx=ctx, param=param) from None
    if not (n >= 1 and 0 <= i < n):
        raise click.BadParameter(f"need 0 <= I < N, got {value!r}", ctx=ctx, param=param)
    return i, n


@click.command("preprocess")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="INPUT...")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), metavar="STORE",
              help="Clip store folder to create or complete.")
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True, metavar="N",
              help="Worker processes (each runs its own MediaPipe tracker).")
@click.option("--shard", default="0/1", show_default=True, callback=_parse_shard, metavar="I/N",
              help="Take videos I, I+N, I+2N, ... of the sorted list (share one store between N machines).")
@click.option("--crop-mode", type=click.Choice(["smooth", "fixed"]), default="smooth", show_default=True,
              help="Crop position over time: Hanning-smoothed eye centre, or fixed at its clip mean.")
@click.option("--speaker-map", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              metavar="JSON", help="JSON object {clip id or file stem: speaker} overriding the dataset layout.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def preprocess(inputs, out, workers, shard, crop_mode, speaker_map, no_progress):
    """Track, crop (256², 25 fps) and landmark talking-face videos into a clip store.

    INPUT is a video or a folder searched recursively. Clip ids and speakers come from VoxCeleb2 / LRS3 / LRW paths,
    otherwise from the file name. Finished clips are skipped, so an interrupted run resumes; failures go to
    STORE/failed.jsonl and the run goes on (exit status 1 when any clip failed).

    \b
    Examples:
      rhythmhead preprocess ../shared/media/talking_video --out store --workers 2
      rhythmhead preprocess vox/dev/mp4 --out vox_store --workers 16 --shard 0/4
    """
    from .preprocess_run import load_speaker_map, preprocess_store

    summary = preprocess_store(inputs, out, workers=workers, shard=shard, crop_mode=crop_mode,
                               speaker_map=load_speaker_map(speaker_map), progress=not no_progress)
    click.echo(summary.line())
    if summary.failed:
        sys.exit(1)  # (click.exceptions.Exit's code is dropped by the group's standalone_mode=False)
