"""``rhythmhead demo``: the built-in portrait and speech through the whole pipeline → a talking-head mp4.

The inputs ship with the package (``rhythmhead/assets``): ``demo_photo.png``, the public-domain NASA portrait
``skimage.data.astronaut()`` cropped to head and shoulders, and ``demo_speech.wav``, English speech this project
synthesised with espeak-ng (``tools/make_demo_assets.py``). The demo is exactly ``rhythmhead generate`` on them with
the bundled models: a photo reference, so the head moves in the bundle's default motion style.
"""
from __future__ import annotations

import contextlib
from importlib import resources
from pathlib import Path
from typing import Iterator

import click


@contextlib.contextmanager
def builtin_inputs() -> Iterator[tuple[Path, Path]]:
    """Paths of the packaged demo photo and speech (``rhythmhead/assets``), valid inside the ``with`` block."""
    assets = resources.files("rhythmhead") / "assets"
    with resources.as_file(assets / "demo_photo.png") as photo, resources.as_file(assets / "demo_speech.wav") as speech:
        yield Path(photo), Path(speech)


@click.command("demo")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("demo.mp4"), show_default=True,
              metavar="PATH", help="Output mp4 (256² talking head, 25 fps, H.264 + the speech as AAC).")
@click.option("--models", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Models folder (default: the models bundled with the package).")
@click.option("--paste-back", is_flag=True, help="Paste the face back into the full portrait.")
@click.pass_context
def demo(ctx: click.Context, out: Path, models: Path | None, paste_back: bool) -> None:
    """Make a talking head from the built-in portrait and speech with the bundled models.

    \b
    Examples:
      rhythmhead demo
      rhythmhead demo --out /tmp/demo.mp4 --paste-back
    """
    from .generate_cli import generate

    with builtin_inputs() as (photo, speech):
        ctx.invoke(generate, reference=str(photo), audio=str(speech), out=str(out),
                   models=str(models) if models else None, paste_back=paste_back)
