"""Assemble an inference bundle folder from training runs' exports, and compute the default motion style.

    python tools/make_bundle.py --motion runs/motion --expression runs/expression --generator runs/generator \\
        [--unprojection runs/unprojection] [--mouth runs/mouth] [--ablation no_warp=runs/gen_no_warp ...] \\
        --style-store /work/store --out src/rhythmhead/models_bundled

Each ``--<stage> RUN`` is a training run folder (``RUN/export/<stage>.safetensors``), an export folder or the
``.safetensors`` file itself; it is checked (readable, right stage, weights fit their config) and copied with its
``.json`` twin as ``<stage>.safetensors`` / ``<stage>.json``; ``--ablation NAME=RUN`` copies a generator export as
``generator_<NAME>.*`` (scored by ``rhythmhead evaluate end2end``).

The default motion style (``motion_style.npz``, used for photo references) is Φ's extrapolating layer averaged over the
clips of ``--style-store`` that have speech: for each clip, Φ encodes its first τ frames of smoothed, normalised pose +
audio (exactly as for a reference video at inference) into ``W (F, 6)``, ``b (6,)``; the style is the mean of the W and
of the b over clips, its ``anchor_pose`` the mean over clips of their mean pose over those τ frames, and its
``pose_std`` (a typical speaker's motion amplitude, given to a photo's motion) the mean over clips of each clip's
smoothed-pose std (``pose_speed`` likewise of their mean |Δ| per frame), and its ``opening_quantiles`` (what a photo's
mouth opens to) the quantiles of every clip's inner-lip openings during speech ÷ its mouth width, pooled. The folder is
built in a temporary sibling and renamed into place, so a failure leaves ``--out`` as it was.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click
import numpy as np
import torch


OPENING_QUANTILES = 101  # the typical speaker's relative openings are kept at this many quantiles


def export_file(run: str | Path, stage: str) -> Path:
    """The ``<stage>.safetensors`` meant by ``run`` (a run folder, an export folder, or the file)."""
    from rhythmhead.errors import InputError

    p = Path(run)
    for candidate in (p, p / "export" / f"{stage}.safetensors", p / f"{stage}.safetensors"):
        if candidate.is_file() and candidate.suffix == ".safetensors":
            return candidate
    raise InputError(f"no {stage} export here (expected RUN/export/{stage}.safetensors)", p)


def style_from_store(motion, store_dir: str | Path, device: str = "cpu", echo=print):
    """The default motion style (see the module docstring) from a clip store; returns ``(MotionStyle, n_clips)``."""
    from rhythmhead.data.store import ClipStore
    from rhythmhead.errors import InputError
    from rhythmhead.inference.bundle import MotionStyle
    from rhythmhead.audio.windows import envelope, speech_frames
    from rhythmhead.inference.controls import motion_amplitude, relative_openings
    from rhythmhead.inference.reference import encode_motion

    store = ClipStore(store_dir)
    weights, biases, anchors, stds, speeds, openings = [], [], [], [], [], []
    for clip_id in store.ids():
        wave = store.audio(clip_id, motion.audio_rate)
        if wave is None:
            continue
        pose = np.asarray(store.track(clip_id)["pose"], np.float32)
        if len(pose) < 2:
            continue
        w, b = encode_motion(motion, pose, wave, device)
        weights.append(w[0].cpu().numpy())
        biases.append(b[0].cpu().numpy())
        tau = max(1, min(len(pose), motion.tau))
        anchors.append(pose[:tau].mean(0))
        std, speed = motion_amplitude(pose, motion.smooth_taps)
        stds.append(std)
        speeds.append(speed)
        frontal = np.asarray(store.track(clip_id)["frontal"], np.float64)
        rel = relative_openings(frontal, speech_frames(envelope(wave, motion.audio_rate, len(frontal), motion.fps)))
        if rel is not None:
            openings.append(rel)
    if not weights:
        raise InputError("no clip with speech to compute the motion style from", store_dir)
    echo(f"motion style from {len(weights)} clips of {store_dir}")
    style = MotionStyle(np.mean(weights, 0).astype(np.float32), np.mean(biases, 0).astype(np.float32),
                        np.mean(anchors, 0).astype(np.float32), source=str(store_dir),
                        pose_std=np.mean(stds, 0).astype(np.float32),
                        pose_speed=np.mean(speeds, 0).astype(np.float32),
                        opening_quantiles=np.quantile(np.concatenate(openings), np.linspace(0, 1, OPENING_QUANTILES))
                        .astype(np.float32) if openings else None)
    return style, len(weights)


def make_bundle(out: str | Path, motion: str, expression: str, generator: str, unprojection: str | None = None,
                ablations: dict[str, str] | None = None, style_store: str | None = None, device: str = "cpu",
                echo=print, mouth: str | None = None) -> Path:
    """Build the bundle folder ``out`` (see the module docstring); returns it."""
    from rhythmhead.inference.bundle import STYLE_FILE, load_bundle, load_generator, load_motion, save_style

    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        sources = {"motion": motion, "expression": expression, "generator": generator}
        if unprojection:
            sources["unprojection"] = unprojection
        if mouth:
            sources["mouth"] = mouth
        for stage, run in sources.items():
            src = export_file(run, stage)
            shutil.copy2(src, tmp / f"{stage}.safetensors")
            if src.with_suffix(".json").is_file():
                shutil.copy2(src.with_suffix(".json"), tmp / f"{stage}.json")
            echo(f"{stage}: {src}")
        for name, run in (ablations or {}).items():
            src = export_file(run, "generator")
            load_generator(src, device)  # checks stage and weights
            shutil.copy2(src, tmp / f"generator_{name}.safetensors")
            if src.with_suffix(".json").is_file():
                shutil.copy2(src.with_suffix(".json"), tmp / f"generator_{name}.json")
            echo(f"generator_{name}: {src}")
        if style_store:
            phi = load_motion(tmp / "motion.safetensors", device)
            style, n = style_from_store(phi, style_store, device, echo)
            save_style(tmp / STYLE_FILE, style, clips=n, motion=str(export_file(motion, "motion")))
        load_bundle(tmp, device)  # the whole bundle loads
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    echo(f"wrote {out}")
    return out


@click.command(context_settings={"max_content_width": 110})
@click.option("--motion", required=True, metavar="RUN", help="Φ training run (or its export).")
@click.option("--expression", required=True, metavar="RUN", help="Ψ training run (or its export).")
@click.option("--generator", required=True, metavar="RUN", help="G training run (or its export).")
@click.option("--unprojection", metavar="RUN", help="Unprojection network run (optional).")
@click.option("--mouth", metavar="RUN", help="Mouth synthesis network run (optional; photos' mouths).")
@click.option("--ablation", "ablations", multiple=True, metavar="NAME=RUN", help="An ablated generator (repeatable).")
@click.option("--style-store", metavar="STORE", help="Clip store to compute the default motion style on.")
@click.option("--out", required=True, metavar="DIR", help="Bundle folder to write (replaced).")
@click.option("--device", default="cpu", show_default=True)
def main(motion, expression, generator, unprojection, mouth, ablations, style_store, out, device):
    """Assemble a models folder for `rhythmhead generate --models DIR` (see the module docstring)."""
    from rhythmhead.errors import InputError

    pairs = {}
    for item in ablations:
        name, sep, run = item.partition("=")
        if not sep or not name or not run:
            raise click.BadParameter(f"expected NAME=RUN, got {item!r}", param_hint="--ablation")
        pairs[name] = run
    try:
        with torch.no_grad():
            make_bundle(out, motion, expression, generator, unprojection, pairs, style_store, device, click.echo,
                        mouth=mouth)
    except InputError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
