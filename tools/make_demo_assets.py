"""Regenerate the built-in inputs of ``rhythmhead demo``: ``src/rhythmhead/assets/demo_photo.png`` and ``demo_speech.wav``.

* ``demo_photo.png``: ``skimage.data.astronaut()`` (Eileen Collins, NASA portrait, public domain), cropped to a
  head-and-shoulders square around the face at its native resolution.
* ``demo_speech.wav``: one friendly English sentence about the project, synthesised with espeak-ng (GPL program; its
  output audio is ours), 16 kHz mono 16-bit PCM.

The committed assets are what the product uses; this script only documents and reproduces them. espeak-ng is needed
only to regenerate the speech (Debian/Ubuntu: ``apt-get install espeak-ng``); ``--photo-only`` skips it.

    python tools/make_demo_assets.py            # both
    python tools/make_demo_assets.py --photo-only
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from rhythmhead.media.io import atomic_path, load_audio, write_wav

ASSETS = Path(__file__).resolve().parents[1] / "src" / "rhythmhead" / "assets"
SENTENCE = ("Hello! I am the rhythm head demo. Give me one photo and a voice, "
            "and I will talk and nod to the rhythm of the speech.")
VOICE = "en-us+f3"  # espeak-ng's US English with a female variant
WORDS_PER_MINUTE = 155
RATE = 16000
# head-and-shoulders square in the 512x512 astronaut image (the face is centred near x=222, y=120)
CROP_LEFT, CROP_TOP, CROP_SIZE = 62, 0, 320


def make_photo(out: Path) -> None:
    """Crop the astronaut portrait and save it as an optimised PNG."""
    from PIL import Image
    from skimage import data

    img = data.astronaut()[CROP_TOP:CROP_TOP + CROP_SIZE, CROP_LEFT:CROP_LEFT + CROP_SIZE]
    with atomic_path(out) as tmp:
        Image.fromarray(np.ascontiguousarray(img)).save(tmp, format="PNG", optimize=True)


def make_speech(out: Path) -> None:
    """Synthesise SENTENCE with espeak-ng, resample to 16 kHz mono, trim silence to 50 ms margins, peak-normalise."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng is not installed (apt-get install espeak-ng); it is needed only to regenerate "
                         "demo_speech.wav")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run([exe, "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "-w", str(raw), SENTENCE], check=True)
        wave = load_audio(raw, rate=RATE)
    loud = np.flatnonzero(np.abs(wave) > 0.01)
    margin = int(0.05 * RATE)
    wave = wave[max(0, loud[0] - margin): loud[-1] + margin]
    wave = 0.9 * wave / np.abs(wave).max()
    write_wav(out, wave, RATE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photo-only", action="store_true", help="do not regenerate the speech (no espeak-ng needed)")
    parser.add_argument("--out", type=Path, default=ASSETS, help="assets folder")
    args = parser.parse_args()
    make_photo(args.out / "demo_photo.png")
    if not args.photo_only:
        make_speech(args.out / "demo_speech.wav")
    for name in ("demo_photo.png", "demo_speech.wav"):
        path = args.out / name
        if path.exists():
            print(f"{path}  {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
