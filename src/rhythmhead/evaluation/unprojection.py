"""``rhythmhead evaluate unprojection``: the unprojection network's 3-D face against MediaPipe on held-out speakers.

Protocol: the validation speakers of the run's own split (``data.val_fraction``, ``data.split_seed`` of its config), every
``stride``-th frame (at most ``max_frames`` per clip). For each frame the network predicts a position map from the
crop; its 468 vertices are read at the UV coordinates and compared in x, y with the store's tracked MediaPipe mesh:

* ``nme68`` — mean error of the 68 iBUG points (``MESH_TO_68``) divided by the outer-eye-corner distance (36–45) of the
  MediaPipe landmarks, per frame, in percent;
* ``nme468`` — the same over all 468 face vertices;
* ``z_err_px`` — mean absolute depth error of the 468 vertices after removing the mean depth offset (crop pixels).

Baselines on the same frames: ``mean_shape`` — the mean position map of the *training* frames (a fixed face: what a
network that ignores the image would predict); ``mediapipe_static`` — MediaPipe re-run on the crop in photo mode, i.e.
the reference's own detector-to-tracker disagreement (a floor for what "agreeing with MediaPipe" can mean).
Averages are means over clips of per-clip means.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

from ..errors import InputError

TABLE_COLUMNS = ("nme68_pct", "nme468_pct", "z_err_px")


@dataclass
class LoadedUnprojection:
    net: torch.nn.Module
    config: dict


def load_unprojection(path: str | Path, device: str | torch.device = "cpu") -> LoadedUnprojection:
    """Load ``RUN`` / ``RUN/export/unprojection.safetensors`` into an eval-mode :class:`UnprojectionNet`."""
    from ..models.checkpoint import load_export
    from ..models.unprojection import UnprojectionNet

    export = load_export(path, stage="unprojection", device=device)
    if "unprojection" not in export.state_dicts:
        raise InputError("unprojection export lacks the network", path)
    net = UnprojectionNet(**export.config["model"]).to(device)
    try:
        net.load_state_dict(export.state_dicts["unprojection"])
    except RuntimeError as exc:
        raise InputError(f"weights do not match the exported config ({str(exc).splitlines()[0][:120]})", path) from None
    return LoadedUnprojection(net.eval(), export.config)


@torch.no_grad()
def predict_vertices(net: torch.nn.Module, frames: np.ndarray, crop_size: int = 256, chunk: int = 16) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 crops → ``(N, 468, 3)`` vertices in crop pixels (the network's position maps, sampled)."""
    from ..geometry.uv import denormalize_positions, face_uv, sample_vertices
    from ..training.unprojection_data import resize_frames

    param = next(net.parameters())
    uv = face_uv().to(param.device)
    out = []
    for i in range(0, len(frames), chunk):
        x = resize_frames(frames[i:i + chunk], net.image_size).to(param.device, param.dtype) / 127.5 - 1.0
        maps = net(x).permute(0, 2, 3, 1)
        out.append(denormalize_positions(sample_vertices(maps, uv), crop_size).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 468, 3), np.float32)


def _errors(pred: np.ndarray, real: np.ndarray) -> dict[str, float]:
    from ..face.landmarks import MESH_TO_68

    idx = list(MESH_TO_68)
    iod = np.linalg.norm(real[:, idx[36], :2] - real[:, idx[45], :2], axis=-1).clip(min=1e-6)  # (N,)
    e68 = np.linalg.norm(pred[:, idx, :2] - real[:, idx, :2], axis=-1).mean(-1) / iod
    e468 = np.linalg.norm(pred[..., :2] - real[..., :2], axis=-1).mean(-1) / iod
    dz = pred[..., 2] - real[..., 2]
    zerr = np.abs(dz - dz.mean(-1, keepdims=True)).mean(-1)
    return {"nme68_pct": float(100 * e68.mean()), "nme468_pct": float(100 * e468.mean()), "z_err_px": float(zerr.mean())}


def evaluate_unprojection(data: str | Path, models: str | Path, stride: int = 10, max_frames: int = 30,
                          device: str = "cpu", with_mediapipe: bool = True) -> tuple[dict, dict]:
    """Run the protocol of the module docstring; returns ``(settings, methods)``."""
    from ..data.store import ClipStore, speaker_split
    from ..face.landmarks import FaceMesher

    loaded = load_unprojection(models, device)
    d = loaded.config.get("data", {})
    store = ClipStore(data)
    train_ids, val_ids = speaker_split(store.manifest(), d.get("val_fraction", 0.2), d.get("split_seed", 0))
    if not val_ids:
        raise InputError("no held-out (validation) speakers in this store", data)

    def frames_of(clip_id):
        track = store.track(clip_id)
        frames = store.frames(clip_id)
        idx = np.arange(0, min(len(frames), len(track["mesh"])), stride)[:max_frames]
        return frames[idx], track["mesh"][idx, :468]

    mean_mesh = np.mean(np.concatenate([store.track(c)["mesh"][::stride, :468] for c in train_ids]), 0) \
        if train_ids else None
    rows: dict[str, list[dict[str, float]]] = {"network": [], "mean_shape": []}
    if with_mediapipe:
        rows["mediapipe_static"] = []
    n_frames, used = 0, []
    mesher = FaceMesher(static_image_mode=True) if with_mediapipe else None
    try:
        for clip_id in val_ids:
            frames, real = frames_of(clip_id)
            if not len(frames):
                continue
            rows["network"].append(_errors(predict_vertices(loaded.net, frames), real))
            if mean_mesh is not None:
                rows["mean_shape"].append(_errors(np.repeat(mean_mesh[None], len(real), 0), real))
            if mesher is not None:
                found = [mesher(f) for f in frames]
                keep = [i for i, m in enumerate(found) if m is not None]
                if keep:
                    rows["mediapipe_static"].append(_errors(np.stack([found[i][:468] for i in keep]), real[keep]))
            n_frames += len(frames)
            used.append(clip_id)
    finally:
        if mesher is not None:
            mesher.close()
    if not used:
        raise InputError("the validation clips have no frames to evaluate", data)
    methods = {name: {k: float(np.mean([r[k] for r in rs])) for k in TABLE_COLUMNS} for name, rs in rows.items() if rs}
    settings = {
        "store": str(data), "models": str(models), "clips": used, "train_clips": train_ids, "frames": n_frames,
        "stride": stride, "max_frames_per_clip": max_frames, "image_size": int(loaded.net.image_size),
        "reference": "the store's tracked MediaPipe mesh (468 face vertices) of each frame",
        "normalisation": "inter-ocular distance = outer eye corners (iBUG 36-45) of the MediaPipe landmarks",
        "averaging": "mean over clips of per-clip means",
        "baselines": {"mean_shape": "mean position map (mean mesh) of the training frames",
                      "mediapipe_static": "MediaPipe re-detected per frame in photo mode"},
    }
    return settings, methods


@click.command("unprojection")
@click.option("--data", required=True, type=click.Path(file_okay=False), metavar="STORE", help="Clip store.")
@click.option("--models", required=True, type=click.Path(), metavar="RUN",
              help="Training run folder or unprojection export (.safetensors).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), metavar="REPORT.json", help="Report file.")
@click.option("--stride", type=click.IntRange(min=1), default=10, show_default=True, help="Use every N-th frame.")
@click.option("--max-frames", type=click.IntRange(min=1), default=30, show_default=True, help="Frames per clip at most.")
@click.option("--no-mediapipe", is_flag=True, help="Skip the MediaPipe re-detection row.")
@click.option("--device", default="cpu", show_default=True, help="torch device.")
def command(data, models, out, stride, max_frames, no_mediapipe, device) -> None:
    """Evaluate the unprojection network on held-out speakers (landmark error vs MediaPipe, beside a mean shape).

    \b
    Example:
      rhythmhead evaluate unprojection --data store --models runs/unprojection --out reports/unprojection.json
    """
    from .inputs import check_inputs
    from .report import format_table, write_report

    device = check_inputs(data, out, models, "unprojection", device)
    settings, methods = evaluate_unprojection(data, models, stride, max_frames, device, not no_mediapipe)
    click.echo(f"{len(settings['clips'])} held-out clips, {settings['frames']} frames")
    click.echo(format_table(methods))
    write_report(out, "unprojection", settings, methods)
    click.echo(f"wrote {out}")
