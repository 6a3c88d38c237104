"""``rhythmhead evaluate render``: how well the 3-D-aware render of the key-frame mesh predicts the real frames.

Protocol: for every clip of the store, the textured mesh is built from its key frame (the most frontal one:
``build_textured_mesh(frames[k], mesh[k], pose[k])``) and rendered at each other frame's *real* pose (tracked), then
compared with the real frame **inside the render's mask** (SSIM map mean and PSNR, :mod:`rhythmhead.evaluation.metrics`).
The rigid render cannot follow expressions (mouth, eyes) — that is the generator's job; it measures pose transfer.

Methods (each pair shares its mask):

* ``render`` — the mesh with its ring (default ``ring_scales``), and ``static`` — the key frame itself on that mask;
* ``render_face`` — the bare 468-vertex face (no ring), and ``static_face`` — the key frame on that mask.

``coverage`` is the mean fraction of the image inside the mask. Frames: every ``stride``-th non-key frame, at most
``max_frames`` per clip; averages are means over clips of per-clip means.
"""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch

from ..errors import InputError

TABLE_COLUMNS = ("ssim", "psnr_db", "coverage")


def _scores(pred: np.ndarray, real: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    from .metrics import psnr, ssim

    return {"ssim": ssim(pred, real, mask), "psnr_db": psnr(pred, real, mask), "coverage": float(mask.mean())}


def evaluate_clip(frames: np.ndarray, track: dict, stride: int = 4, max_frames: int = 40,
                  ring_scales: tuple[float, ...] = (1.25,), examples: Path | None = None, name: str = "clip"
                  ) -> dict[str, dict[str, float]]:
    """Scores of one clip: method → {"ssim", "psnr_db", "coverage"} (means over the chosen frames)."""
    from ..geometry.mesh import build_textured_mesh, render_textured

    key = int(track["key_frame"])
    n = min(len(frames), len(track["pose"]))
    chosen = [t for t in range(0, n, max(1, stride)) if t != key][:max_frames]
    if not chosen:
        return {}
    pose = torch.from_numpy(track["pose"][chosen])
    real = frames[chosen]
    rows: dict[str, dict[str, float]] = {}
    for label, rings in (("", tuple(ring_scales)), ("_face", ())):
        mesh = build_textured_mesh(frames[key], track["mesh"][key], track["pose"][key], ring_scales=rings)
        images, masks = render_textured(mesh, pose, size=frames.shape[1])
        images, masks = images.numpy(), masks.numpy()
        static = np.repeat(frames[key][None], len(chosen), 0)
        rows[f"render{label}"] = _scores(images, real, masks)
        rows[f"static{label}"] = _scores(static, real, masks)
        if examples is not None and label == "":
            examples.mkdir(parents=True, exist_ok=True)
            from PIL import Image

            for j in np.linspace(0, len(chosen) - 1, min(3, len(chosen))).astype(int):
                row = np.concatenate([frames[key], real[j], images[j], np.where(masks[j][..., None], real[j], 0)], 1)
                Image.fromarray(row).save(examples / f"{name}_t{chosen[j]:04d}.png")
    return rows


def evaluate_render(data: str | Path, stride: int = 4, max_frames: int = 40, ring_scales: tuple[float, ...] = (1.25,),
                    examples: str | Path | None = None, limit: int | None = None) -> tuple[dict, dict]:
    """Run the protocol of the module docstring over the store; returns ``(settings, methods)``."""
    from ..data.store import ClipStore

    store = ClipStore(data)
    ids = store.ids()[:limit] if limit else store.ids()
    per_clip: dict[str, dict[str, dict[str, float]]] = {}
    for clip_id in ids:
        rows = evaluate_clip(store.frames(clip_id), store.track(clip_id), stride, max_frames, ring_scales,
                             Path(examples) if examples else None, clip_id)
        if rows:
            per_clip[clip_id] = rows
    if not per_clip:
        raise InputError("no clip with frames besides its key frame to evaluate", data)
    names = list(next(iter(per_clip.values())))
    methods = {m: {k: float(np.mean([c[m][k] for c in per_clip.values()])) for k in TABLE_COLUMNS} for m in names}
    settings = {
        "store": str(data), "clips": list(per_clip), "stride": stride, "max_frames_per_clip": max_frames,
        "ring_scales": list(ring_scales), "averaging": "mean over clips of per-clip means",
        "mask": "each render's coverage mask; the static baseline is scored on the same mask",
        "ssim": "mean of the SSIM map (σ=1.5 Gaussian window) inside the mask", "psnr": "dB on 0..255, inside the mask",
        "per_clip": per_clip,
    }
    return settings, methods


@click.command("render")
@click.option("--data", required=True, type=click.Path(file_okay=False), metavar="STORE", help="Clip store.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), metavar="REPORT.json", help="Report file.")
@click.option("--stride", type=click.IntRange(min=1), default=4, show_default=True, help="Use every N-th frame.")
@click.option("--max-frames", type=click.IntRange(min=1), default=40, show_default=True, help="Frames per clip at most.")
@click.option("--ring", "ring_scales", type=float, multiple=True, default=(1.25,), show_default=True,
              help="Ring scale(s) around the face oval (repeat for several).")
@click.option("--examples", type=click.Path(file_okay=False), metavar="DIR",
              help="Also save PNGs: key frame | real | render | real inside the mask.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N clips.")
def command(data, out, stride, max_frames, ring_scales, examples, limit) -> None:
    """Score the 3-D-aware render (key-frame mesh at each frame's real pose) against the real frames.

    \b
    Example:
      rhythmhead evaluate render --data store --out reports/render.json --examples /tmp/render_png
    """
    from .inputs import check_inputs
    from .report import format_table, write_report

    check_inputs(data, out)
    settings, methods = evaluate_render(data, stride, max_frames, tuple(ring_scales), examples, limit)
    click.echo(f"{len(settings['clips'])} clips")
    click.echo(format_table(methods))
    write_report(out, "render", settings, methods)
    click.echo(f"wrote {out}")
