"""``rhythmhead demo``: the built-in photo and speech through the pipeline, written as an mp4 with the speech.

First version — the data path only, until the talking head replaces it: the built-in portrait goes through reference
preparation (:func:`rhythmhead.data.preprocess.prepare_reference`: face crop, 68 3-D landmarks, head pose), and every
25 fps frame of the speech shows the crop with its landmarks, its head-pose axes, the speech level of that frame and a
flash on each audio onset. The output has the speech as an AAC track and lasts as long as the speech.
"""
from __future__ import annotations

import contextlib
import time
from importlib import resources
from pathlib import Path
from typing import Iterator

import click
import numpy as np

from ..audio.windows import envelope, num_frames, onset_frames
from ..media.io import VideoWriter, load_audio
from .draw import draw_landmarks, draw_level_bar, draw_marker, draw_pose_axes

AUDIO_RATE = 16000
FPS = 25
DISPLAY_SCALE = 2  # the 256² crop is drawn at 512² so that the overlays stay legible
NOSE_TIP = 30  # iBUG-68 index of the nose tip: origin of the pose axes
ONSET_FLASH_FRAMES = 3
LANDMARK_COLOR = (0, 255, 255)  # cyan: apart from the red/green/blue pose axes and the amber level bar


@contextlib.contextmanager
def builtin_inputs() -> Iterator[tuple[Path, Path]]:
    """Paths of the packaged demo photo and speech (``rhythmhead/assets``), valid inside the ``with`` block."""
    assets = resources.files("rhythmhead") / "assets"
    with resources.as_file(assets / "demo_photo.png") as photo, resources.as_file(assets / "demo_speech.wav") as speech:
        yield Path(photo), Path(speech)


def annotated_frames(reference, wave: np.ndarray, rate: int = AUDIO_RATE, fps: float = FPS,
                     scale: int = DISPLAY_SCALE) -> Iterator[np.ndarray]:
    """Frames of the data-path demo: reference crops with landmarks, pose axes, a speech level bar and onset flashes.

    Args:
        reference: a ``Reference`` with ``frames (R,256,256,3)`` uint8 crops, ``landmarks (R,68,3)`` and ``pose (R,6)``; a photo
            has R = 1 (a static crop), a video reference is played in a loop.
        wave: ``(N,)`` mono speech at ``rate``; the video has ``num_frames(N, rate, fps)`` frames.
        scale: integer upscaling of the crop for drawing.

    Yields:
        ``(256·scale, 256·scale, 3)`` uint8 RGB frames.
    """
    import cv2

    # data.preprocess.Reference names the crops ``frames`` (the brief called them ``crops``): accept either
    crops = np.asarray(reference.frames if hasattr(reference, "frames") else reference.crops)
    landmarks = np.asarray(reference.landmarks, dtype=np.float64)
    pose = np.asarray(reference.pose, dtype=np.float64)
    n_ref = crops.shape[0]
    n = num_frames(len(wave), rate, fps)
    level = envelope(wave, rate, n, fps)
    level = level / max(float(level.max()), 1e-6)
    flash = np.zeros(n, bool)
    for f in onset_frames(wave, rate, n, fps):
        flash[f:f + ONSET_FLASH_FRAMES] = True
    for t in range(n):
        r = t % n_ref
        h, w = crops[r].shape[:2]
        img = cv2.resize(crops[r], (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)
        pts = landmarks[r] * scale
        img = draw_landmarks(img, pts, color=LANDMARK_COLOR, radius=max(1, scale))
        img = draw_pose_axes(img, pose[r], origin=(pts[NOSE_TIP, 0], pts[NOSE_TIP, 1]), length=45.0 * scale)
        img = draw_level_bar(img, level[t], width=8 * scale, margin=4 * scale)
        if flash[t]:
            img = draw_marker(img, (12 * scale, 12 * scale), radius=6 * scale)
        yield img


def run_demo(out: Path, photo: Path, speech: Path) -> dict:
    """Prepare the reference from ``photo``, draw the data-path frames over ``speech`` and write ``out`` (mp4 + AAC).

    Returns:
        a summary dict: ``frames``, ``seconds`` (speech duration), ``size``, ``wall_s``.
    """
    try:
        from ..data.preprocess import prepare_reference
    except ImportError as exc:  # the reference stage is built by another component; say so plainly
        raise click.ClickException(f"reference preparation is not available ({exc})") from None
    start = time.perf_counter()
    wave = load_audio(speech, rate=AUDIO_RATE)
    reference = prepare_reference(photo)
    n = 0
    size = None
    with VideoWriter(out, fps=FPS, audio=wave, sample_rate=AUDIO_RATE) as writer:
        for frame in annotated_frames(reference, wave):
            writer.write(frame)
            size = frame.shape[:2]
            n += 1
    return {"frames": n, "seconds": len(wave) / AUDIO_RATE, "size": size, "wall_s": time.perf_counter() - start}


@click.command("demo")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("demo.mp4"), show_default=True,
              metavar="PATH", help="Output mp4 (H.264 + AAC speech, 25 fps).")
def demo(out: Path) -> None:
    """Run the built-in portrait and speech through the pipeline and write a video.

    First version: shows the prepared reference (face crop, 68 landmarks, head-pose axes) over the built-in speech,
    with a speech level bar and a dot flashing on audio onsets.

    \b
    Examples:
      rhythmhead demo
      rhythmhead demo --out /tmp/demo.mp4
    """
    with builtin_inputs() as (photo, speech):
        info = run_demo(out, photo, speech)
    h, w = info["size"]
    click.echo(f"wrote {out} ({info['frames']} frames, {w}x{h}, {info['seconds']:.2f} s of speech, "
               f"{info['wall_s']:.1f} s)")
