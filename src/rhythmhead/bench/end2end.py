"""Speed and memory of the whole pipeline (DESIGN.md §6): per stage, end to end, and peak memory against length.

Inputs: the packaged photo (NASA astronaut portrait) and the packaged speech, tiled to ``short_s`` (10 s) and to
``long_s`` seconds (``RHYTHMHEAD_BENCH_LONG_S``; default 60 on CUDA, 30 on CPU; 600 for the 10-minute check, which
takes 15 000 frames divided by the end-to-end frames/s). Each run is a complete call as a user makes it: reference preparation, Φ, Ψ,
render, G, H.264 + AAC encode into a temporary mp4.

Models: the bundled models when the package has them for the preset (its own models are `fast`; a `paper` subfolder
would hold `paper` ones), else randomly initialised networks of the preset's real architecture (``random_init: true`` in the result — speed and memory are those of the architecture, the pictures are
noise). ``preset="tiny"`` (Python API only) uses toy networks: a quick check that memory stays flat with length.
Device: CUDA when available, else CPU with torch's current threads (``OMP_NUM_THREADS=2`` for the 2-core target).

Two more short runs measure the other output sizes: ``end2end_512`` (``size=512``) and ``end2end_paste`` (paste-back
into a 1920×1080 frame — the portrait at 2.5× in the middle of a stretched copy of itself — capped at the default 1280
px, so the face is composed at about 480²).

Result (``rhythmhead bench end2end``)::

    {"end2end": {"fps", "peak_mb", "seconds", "frames", ...},           # the short run (256² crop)
     "end2end_512": {...}, "end2end_paste": {...},                       # the same speech at 512², and pasted back
     "end2end_long": {...},                                              # the long run
     "memory_growth": {"peak_mb_short", "peak_mb_long", "mb_per_min"},  # ~0 = streaming works
     "reference": …, "phi": …, "psi": …, "render": …, "labels": …, "generator": …, "encode": …}   # from the short run
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

SHORT_S = 10.0


def default_long_s(device: str) -> float:
    """``RHYTHMHEAD_BENCH_LONG_S`` if set, else 60 s on CUDA and 30 s on CPU (0 skips the long run)."""
    value = os.environ.get("RHYTHMHEAD_BENCH_LONG_S")
    return float(value) if value else (60.0 if device.startswith("cuda") else 30.0)


def _models(preset: str, tmp: Path) -> tuple[Path, bool]:
    from ..inference.bundle import default_models_dir, resolve_models_dir
    from ..inference.random_bundle import write_random_bundle

    bundled = default_models_dir()
    if preset == "tiny":
        return write_random_bundle(tmp / "models", "tiny"), True
    if (bundled / preset / "generator.safetensors").is_file():
        return resolve_models_dir(bundled, preset), False
    if preset == "fast" and (bundled / "generator.safetensors").is_file():  # the package's own models are `fast`
        return bundled, False
    return write_random_bundle(tmp / "models", preset), True


def _speech(seconds: float, path: Path) -> Path:
    from importlib import resources

    from ..media.io import load_audio, write_wav

    with resources.as_file(resources.files("rhythmhead") / "assets" / "demo_speech.wav") as src:
        wave = load_audio(src, 16000)
    n = int(seconds * 16000)
    write_wav(path, np.tile(wave, -(-n // len(wave)))[:n], 16000)
    return path


def _paste_source(photo: Path, path: Path) -> Path:
    """A 1920×1080 frame with the portrait at 2.5× in its middle (for the paste-back run)."""
    import cv2
    from PIL import Image

    from ..media.io import read_image

    img = read_image(photo)
    canvas = cv2.resize(img, (1920, 1080), interpolation=cv2.INTER_LINEAR)
    big = cv2.resize(img, (800, 800), interpolation=cv2.INTER_CUBIC)
    canvas[140:940, 560:1360] = big
    Image.fromarray(canvas).save(path)
    return path


def run(preset: str = "fast", short_s: float = SHORT_S, long_s: float | None = -1.0,
        device: str | None = None, reference=None) -> dict[str, dict]:
    """Benchmark the pipeline (see the module docstring).

    ``reference``: a photo/video path or a prepared :class:`rhythmhead.data.preprocess.Reference` (default: the packaged
    photo; a prepared one skips face tracking, e.g. on a machine without MediaPipe).
    """
    from importlib import resources

    from ..inference.pipeline import PRESETS, TalkingHeadPipeline
    from .common import measure

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if long_s is not None and long_s < 0:
        long_s = default_long_s(device)
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp_name, \
            resources.as_file(resources.files("rhythmhead") / "assets" / "demo_photo.png") as photo:
        tmp = Path(tmp_name)
        models, random_init = _models(preset, tmp)
        pipe = TalkingHeadPipeline.load(models, device=device, preset=preset if preset in PRESETS else None)
        ref = photo if reference is None else reference
        pipe(ref, _speech(1.0, tmp / "warm.wav"), blink=False).save(tmp / "warm.mp4")  # imports, kernels, caches
        runs = {"end2end": (short_s, ref, {})}
        if long_s:  # right after the short run, so that memory growth compares like with like
            runs["end2end_long"] = (long_s, ref, {})
        runs["end2end_512"] = (short_s, ref, {"size": 512})
        runs["end2end_paste"] = (short_s, _paste_source(photo, tmp / "hd.png") if reference is None else ref,
                                 {"paste_back": True})
        for name, (seconds, source, controls) in runs.items():
            speech = _speech(seconds, tmp / f"{name}.wav")
            holder = {}

            def call():
                result = pipe(source, speech, **controls)
                result.save(tmp / f"{name}.mp4")
                holder["result"] = result

            frames = int(round(seconds * 25))
            res = measure(call, frames, device=device)
            first = next(holder["result"].frames())
            out[name] = {**res, "frames": frames, "audio_s": seconds, "preset": preset, "device": device,
                         "threads": torch.get_num_threads(), "image_size": pipe.bundle.generator.image_size,
                         "output": list(first.shape[:2]), "shots": pipe.settings.shots, "random_init": random_init}
            if name == "end2end":
                for stage, s in holder["result"].timer.summary().items():
                    out[stage] = {"fps": s["fps"], "seconds": s["seconds"], "items": s["items"], "preset": preset}
    if "end2end_long" in out:
        a, b = out["end2end"], out["end2end_long"]
        minutes = (b["audio_s"] - a["audio_s"]) / 60
        out["memory_growth"] = {"peak_mb_short": a["peak_mb"], "peak_mb_long": b["peak_mb"],
                                "mb_per_min": round((b["peak_mb"] - a["peak_mb"]) / minutes, 2) if minutes else None,
                                "short_s": a["audio_s"], "long_s": b["audio_s"]}
    return out
