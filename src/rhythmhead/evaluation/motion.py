"""``rhythmhead evaluate motion``: Φ against simple baselines on held-out speakers.

Protocol: for every validation clip (speaker-disjoint split of the training config) and every evaluation window
(:func:`~rhythmhead.training.learner_data.eval_windows`: τ = 64 reference frames, the next 64 predicted, fewer where the
clip is shorter; longer clips give further non-overlapping windows), the model reads the τ reference poses and audio
and predicts the next poses from the audio alone. The real motion is the tracked pose smoothed with the same Hanning
window as in training. Metrics, averaged over windows:

* pose L1 per dimension (rotation in degrees, translation in crop pixels) and its rotation/translation means;
* motion statistics (:mod:`rhythmhead.evaluation.motion_stats`): std and mean per-frame change ΔP of rotation and
  translation, and the beat-alignment score of head-velocity minima with the audio onsets
  (:func:`rhythmhead.audio.windows.onset_frames`, default settings; σ in the report settings), with its chance level
  (onsets circularly shifted) and the excess over chance.

Baselines on the same windows: ``static`` (the last reference pose held), ``mean_motion`` (the training mean pose held),
``other_clip`` (another clip's real motion, as displacements from its first frame added to the last reference pose —
real head motion that ignores this audio). ``real`` gives the statistics of the real motion (its L1 is 0).
``model_smoothed`` is the model's prediction passed through the same Hanning smoothing as the real motion (a possible
inference-time post-process; it looks 5 frames ahead).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

from ..errors import InputError
from . import motion_stats

POSE_NAMES = ("rx", "ry", "rz", "tx", "ty", "tz")
TABLE_COLUMNS = ("l1_rot_deg", "l1_trans_px", "std_rot_deg", "std_trans_px", "dP_rot_deg", "dP_trans_px", "beat_align",
                 "beat_align_excess")


@dataclass
class LoadedMotion:
    """A motion export ready to run: network (eval mode), pose statistics and the training config dict."""

    net: torch.nn.Module
    pose_mean: np.ndarray
    pose_std: np.ndarray
    config: dict


def load_motion(path: str | Path, device: str | torch.device = "cpu") -> LoadedMotion:
    """Load ``RUN`` / ``RUN/export/motion.safetensors`` into a :class:`~rhythmhead.models.motion.HeadMotionLearner`."""
    from ..models.checkpoint import load_export
    from ..models.motion import HeadMotionLearner

    export = load_export(path, stage="motion", device=device)
    if "motion" not in export.state_dicts or not {"pose_mean", "pose_std"} <= set(export.extra):
        raise InputError("motion export lacks the network or the pose statistics", path)
    net = HeadMotionLearner(**export.config["model"]).to(device)
    try:
        net.load_state_dict(export.state_dicts["motion"])
    except RuntimeError as exc:
        raise InputError(f"weights do not match the exported config ({str(exc).splitlines()[0][:120]})", path) from None
    return LoadedMotion(net.eval(), export.extra["pose_mean"].cpu().numpy(), export.extra["pose_std"].cpu().numpy(),
                        export.config)


def _l1(pred: np.ndarray, real: np.ndarray) -> dict[str, float]:
    err = motion_stats.to_units(pred) - motion_stats.to_units(real)
    per_dim = np.abs(err).mean(0)
    out = {"l1_rot_deg": float(per_dim[:3].mean()), "l1_trans_px": float(per_dim[3:].mean())}
    for name, value in zip(POSE_NAMES, per_dim):
        out[f"l1_{name}_{'deg' if name[0] == 'r' else 'px'}"] = float(value)
    return out


def _other_motion(other: np.ndarray, n: int, anchor: np.ndarray) -> np.ndarray:
    """``n`` frames of another clip's motion (edge-padded), as displacements from its first frame added to ``anchor``."""
    seg = other[:n]
    if len(seg) < n:
        seg = np.concatenate([seg, np.repeat(seg[-1:], n - len(seg), 0)])
    return seg - seg[:1] + anchor[None]


def mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over rows, ignoring NaN entries (NaN when a key is NaN everywhere)."""
    out = {}
    for key in rows[0]:
        values = np.array([r[key] for r in rows], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[key] = float(values.mean()) if values.size else float("nan")
    return out


def evaluate_motion(data: str | Path, models: str | Path, split: str = "val", sigma: float = motion_stats.DEFAULT_SIGMA,
                    device: str = "cpu") -> tuple[dict, dict]:
    """Run the protocol of the module docstring; returns ``(settings, methods)`` for the report."""
    from ..audio.windows import onset_frames
    from ..training.learner_data import eval_windows, load_clips, smooth_time, split_ids

    loaded = load_motion(models, device)
    model_cfg, data_cfg = loaded.config["model"], loaded.config["data"]
    rate, fps = int(model_cfg["audio_rate"]), int(model_cfg["fps"])
    train_ids, val_ids = split_ids(data, data_cfg["val_fraction"], data_cfg["split_seed"])
    ids = val_ids if split == "val" else train_ids + val_ids
    clips = load_clips(data, ids, rate, fps)
    if not clips:
        raise InputError(f"no {split} clips with audio to evaluate on", data)
    spf = rate // fps
    mean, std = loaded.pose_mean, loaded.pose_std
    poses = [smooth_time(c.pose, data_cfg["smooth_taps"]) for c in clips]
    others = [poses[(i + 1) % len(poses)] for i in range(len(poses))] if len(poses) > 1 else \
        [smooth_time(c.pose, data_cfg["smooth_taps"]) for c in load_clips(data, train_ids, rate, fps)[:1]]

    names = ("model", "model_smoothed", "static", "mean_motion", "other_clip", "real")
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in names}
    n_windows = n_frames = 0
    for ci, clip in enumerate(clips):
        for start, tau, pred_n in eval_windows(clip.n_frames, data_cfg["val_tau"], data_cfg["val_pred"]):
            ref = slice(start, start + tau)
            new = slice(start + tau, start + tau + pred_n)
            real = poses[ci][new]
            with torch.no_grad():
                audio = torch.from_numpy(clip.windows[start: start + tau + pred_n]).unsqueeze(0).to(device)
                ref_pose = torch.from_numpy((poses[ci][ref] - mean) / std).unsqueeze(0).to(device)
                pred = loaded.net(audio, ref_pose)[0].cpu().numpy() * std + mean
            last = poses[ci][ref][-1]
            wave = clip.wave[new.start * spf: new.stop * spf]
            onsets = onset_frames(wave, rate, pred_n, fps)
            candidates = {
                "model": pred,
                "model_smoothed": smooth_time(pred, data_cfg["smooth_taps"]),
                "static": np.repeat(last[None], pred_n, 0),
                "mean_motion": np.repeat(mean[None].astype(np.float64), pred_n, 0),
                "other_clip": _other_motion(others[ci], pred_n, last),
                "real": real,
            }
            for name, seq in candidates.items():
                row = _l1(seq, real)
                row.update(motion_stats.summarise(seq, onsets, sigma))
                rows[name].append(row)
            n_windows += 1
            n_frames += pred_n
    methods = {name: mean_rows(rs) for name, rs in rows.items()}
    settings = {
        "store": str(data), "models": str(models), "split": split, "clips": [c.clip_id for c in clips],
        "windows": n_windows, "predicted_frames": n_frames, "tau": data_cfg["val_tau"], "pred": data_cfg["val_pred"],
        "real_motion": f"tracked pose smoothed with a {data_cfg['smooth_taps']}-tap Hanning window",
        "units": "rotation in degrees (rotation-vector components), translation in pixels of the 256² crop",
        "beat_alignment": f"mean over audio onsets of exp(-d²/2σ²), d = frames to the nearest head angular-velocity "
                          f"minimum, σ = {sigma} frames ({1000 * sigma / fps:.0f} ms); NaN windows skipped. "
                          "beat_align_chance: the same with the onsets circularly shifted by every offset (averaged); "
                          "beat_align_excess = beat_align − chance, the comparable number (dense jitter scores high "
                          "by chance)",
        "onset_detector": "rhythmhead.audio.windows.onset_frames defaults: log-magnitude spectral flux, 32 ms Hann / "
                          "10 ms hop, peaks over a 0.3 s moving mean + 0.1, ≥ 0.1 s apart",
        "baselines": {"model_smoothed": "the model's prediction smoothed like the real motion (post-process)",
                      "static": "last reference pose held", "mean_motion": "training-set mean pose held",
                      "other_clip": "next clip's real motion (displacements from its first frame) added to the last "
                                    "reference pose", "real": "the real motion itself (statistics only)"},
    }
    return settings, methods


@click.command("motion")
@click.option("--data", required=True, type=click.Path(file_okay=False), metavar="STORE", help="Clip store.")
@click.option("--models", required=True, type=click.Path(), metavar="RUN",
              help="Training run folder or motion export (.safetensors).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), metavar="REPORT.json", help="Report file.")
@click.option("--split", type=click.Choice(["val", "all"]), default="val", show_default=True,
              help="Held-out speakers of the training split, or every clip.")
@click.option("--sigma", type=click.FloatRange(min=0.1), default=motion_stats.DEFAULT_SIGMA, show_default=True,
              help="Beat-alignment tolerance σ in frames.")
@click.option("--device", default="cpu", show_default=True, help="torch device.")
def command(data: str, models: str, out: str, split: str, sigma: float, device: str) -> None:
    """Evaluate the head-motion learner Φ on held-out speakers against static / mean / other-clip baselines.

    \b
    Example:
      rhythmhead evaluate motion --data /work/store --models runs/motion --out motion_report.json
    """
    from .report import format_table, write_report

    settings, methods = evaluate_motion(data, models, split, sigma, device)
    click.echo(f"{len(settings['clips'])} clips, {settings['windows']} windows, {settings['predicted_frames']} "
               f"predicted frames")
    click.echo(format_table({m: {k: v[k] for k in TABLE_COLUMNS} for m, v in methods.items()}))
    write_report(out, "motion", settings, methods)
    click.echo(f"wrote {out}")
