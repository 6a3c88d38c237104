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

* motion amount next to the real motion of the same windows (:func:`~rhythmhead.evaluation.motion_stats.std_ratio`,
  :func:`~rhythmhead.evaluation.motion_stats.change_ratio`): ``std_ratio_*`` and ``dP_ratio_*``, generated ÷ real from
  statistics pooled over the windows (1 = as much motion as the real head; a held pose gives 0);
* ``pose_fd``: Fréchet distance between the distribution of 32-frame-window motion statistics of the method and of the
  real motion, pooled over all windows (:func:`~rhythmhead.evaluation.motion_stats.pose_frechet`; 0 = same
  distribution).

Baselines on the same windows: ``static`` (the last reference pose held), ``replay`` (the reference window's own real
motion looped: played backwards from its last pose, then forwards, … — the ping-pong of
:func:`rhythmhead.inference.controls.fit_length`, so there is no jump; real motion of this speaker that ignores the new
audio), ``mean_motion`` (the training mean pose held), ``other_clip`` (another clip's real motion, as displacements
from its first frame added to the last reference pose — real head motion of someone else that ignores this audio).
``real`` gives the statistics of the real motion (its L1 is 0, its ratios 1). ``model_smoothed`` is the model's
prediction shaped exactly as inference shapes it (:func:`rhythmhead.inference.controls.shape_motion`: smoothed
(``POSE_SMOOTH_TAPS``), then its amplitude matched to the motion std of the τ reference frames, as
:mod:`rhythmhead.inference.pipeline` matches it to the reference clip's): the motion a user gets.

Without ``--models``, ``--folds K`` runs the speaker-grouped K-fold cross-validation of
:mod:`rhythmhead.evaluation.kfold`: a fresh Φ per fold, trained on the other folds, scored on its held-out fold by this
protocol; the report gives the mean and spread over folds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

from ..errors import InputError
from . import motion_stats
from .kfold import kfold_options

POSE_NAMES = ("rx", "ry", "rz", "tx", "ty", "tz")
TABLE_COLUMNS = ("l1_rot_deg", "l1_trans_px", "std_ratio_rot", "std_ratio_trans", "dP_ratio_rot", "dP_ratio_trans",
                 "beat_align", "beat_align_excess", "pose_fd")
METHODS = ("model", "model_smoothed", "static", "replay", "mean_motion", "other_clip", "real")


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
    from .inputs import require_config

    export = load_export(path, stage="motion", device=device)
    if "motion" not in export.state_dicts or not {"pose_mean", "pose_std"} <= set(export.extra):
        raise InputError("motion export lacks the network or the pose statistics", path)
    require_config(export.config, {"model": ("audio_rate", "fps"), "data": ("smooth_taps", "val_tau", "val_pred")},
                   path, "motion")
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


def replay_motion(reference: np.ndarray, n: int) -> np.ndarray:
    """``n`` frames of the reference window's own motion looped without a jump: backwards from its last pose (which is
    not repeated), then forwards, … (:func:`rhythmhead.inference.controls.fit_length` on the reversed window)."""
    from ..inference.controls import fit_length

    return np.asarray(fit_length(np.asarray(reference)[::-1], n + 1)[1:], dtype=np.float64)


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
    """Run the protocol of the module docstring; returns ``(settings, methods)`` for the report.

    The clips are the val side of the export's own split (``data.folds``/``data.fold`` when it was trained on a fold,
    else ``data.val_fraction``), or every clip with ``split="all"``."""
    from ..audio.windows import onset_frames
    from ..inference.controls import POSE_SMOOTH_TAPS, motion_amplitude, shape_motion
    from ..common import smooth
    from ..training.learner_data import config_split, eval_windows, load_clips

    loaded = load_motion(models, device)
    model_cfg, data_cfg = loaded.config["model"], loaded.config["data"]
    rate, fps = int(model_cfg["audio_rate"]), int(model_cfg["fps"])
    train_ids, val_ids = config_split(data, data_cfg)
    ids = val_ids if split == "val" else train_ids + val_ids
    clips = load_clips(data, ids, rate, fps)
    if not clips:
        raise InputError(f"no {split} clips with audio to evaluate on", data)
    spf = rate // fps
    taps = int(data_cfg["smooth_taps"])
    mean, std = loaded.pose_mean, loaded.pose_std
    poses = [smooth(c.pose, taps) for c in clips]
    others = [poses[(i + 1) % len(poses)] for i in range(len(poses))] if len(poses) > 1 else \
        [smooth(c.pose, taps) for c in load_clips(data, train_ids, rate, fps)[:1]]

    rows: dict[str, list[dict[str, float]]] = {k: [] for k in METHODS}
    seqs: dict[str, list[np.ndarray]] = {k: [] for k in METHODS}
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
                "model_smoothed": shape_motion(pred, *motion_amplitude(clip.pose[ref], taps), ease=(False, True)),
                "static": np.repeat(last[None], pred_n, 0),
                "replay": replay_motion(poses[ci][ref], pred_n),
                "mean_motion": np.repeat(mean[None].astype(np.float64), pred_n, 0),
                "other_clip": _other_motion(others[ci], pred_n, last),
                "real": real,
            }
            for name, seq in candidates.items():
                row = _l1(seq, real)
                row.update(motion_stats.summarise(seq, onsets, sigma))
                rows[name].append(row)
                seqs[name].append(np.asarray(seq, np.float64))
            n_windows += 1
            n_frames += pred_n
    methods = {name: mean_rows(rs) for name, rs in rows.items()}
    for name in METHODS:
        m = methods[name]
        m["std_ratio_rot"], m["std_ratio_trans"] = motion_stats.std_ratio(seqs[name], seqs["real"])
        m["dP_ratio_rot"], m["dP_ratio_trans"] = motion_stats.change_ratio(seqs[name], seqs["real"])
        m["pose_fd"] = motion_stats.pose_frechet(seqs[name], seqs["real"])
    fd_windows = sum(len(motion_stats.window_features(x)) for x in seqs["real"])
    settings = {
        "store": str(data), "models": str(models), "split": split, "clips": [c.clip_id for c in clips],
        "speakers": sorted({c.speaker for c in clips}),
        "windows": n_windows, "predicted_frames": n_frames, "tau": data_cfg["val_tau"], "pred": data_cfg["val_pred"],
        "real_motion": f"tracked pose smoothed with a {taps}-tap Hanning window",
        "units": "rotation in degrees (rotation-vector components), translation in pixels of the 256² crop",
        "beat_alignment": f"mean over audio onsets of exp(-d²/2σ²), d = frames to the nearest head angular-velocity "
                          f"minimum, σ = {sigma} frames ({1000 * sigma / fps:.0f} ms); NaN windows skipped. "
                          "beat_align_chance: the same with the onsets circularly shifted by every offset (averaged); "
                          "beat_align_excess = beat_align − chance, the comparable number (dense jitter scores high "
                          "by chance)",
        "onset_detector": "rhythmhead.audio.windows.onset_frames defaults: log-magnitude spectral flux, 32 ms Hann / "
                          "10 ms hop, peaks over a 0.3 s moving mean + 0.1, ≥ 0.1 s apart",
        "ratios": "std_ratio_* / dP_ratio_*: generated ÷ real from pooled statistics — the mean over windows of the "
                  "per-window std (ΔP) of each component, averaged over the 3 rotation (translation) components, of "
                  "the method divided by the same of the real motion on the same windows",
        "pose_fd": f"Fréchet distance between Gaussians fitted to per-window statistics ({motion_stats.FD_WINDOW}-frame "
                   f"windows every {motion_stats.FD_HOP} frames of the predicted frames: std and mean |Δ| of each of "
                   f"the 6 pose components, 12-D, each divided by its std over the real windows) of the method vs the "
                   f"real motion, pooled over all windows ({fd_windows} per method)",
        "baselines": {"model_smoothed": f"the model's prediction shaped as inference does "
                                        f"(inference.controls.shape_motion: {POSE_SMOOTH_TAPS}-tap smoothing, "
                                        "amplitude matched to the reference frames' motion std, smoothing widened "
                                        "until at most 1.5× as fast as they move)",
                      "static": "last reference pose held",
                      "replay": "the τ reference poses looped: backwards from the last one, then forwards (ping-pong, "
                                "no jump)",
                      "mean_motion": "training-set mean pose held",
                      "other_clip": "next clip's real motion (displacements from its first frame) added to the last "
                                    "reference pose", "real": "the real motion itself (statistics only)"},
    }
    return settings, methods


@click.command("motion")
@click.option("--data", required=True, type=click.Path(file_okay=False), metavar="STORE", help="Clip store.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), metavar="REPORT.json", help="Report file.")
@click.option("--models", type=click.Path(), metavar="RUN",
              help="Training run folder or motion export (.safetensors), scored on its own held-out speakers.")
@kfold_options("a fresh Φ")
@click.option("--split", type=click.Choice(["val", "all"]),
              help="With --models: held-out speakers of the run's split, or every clip. [default: val]")
@click.option("--sigma", type=click.FloatRange(min=0.1), default=motion_stats.DEFAULT_SIGMA, show_default=True,
              help="Beat-alignment tolerance σ in frames.")
@click.option("--device", default="cpu", show_default=True, help="torch device (training and evaluation).")
def command(data: str, out: str, models: str | None, folds: int | None, work: str | None, preset: str | None,
            max_steps: int | None, seed: int | None, sets: tuple[str, ...], split: str | None, sigma: float,
            device: str) -> None:
    """Evaluate the head-motion learner Φ on held-out speakers against static / replay / mean / other-clip baselines.

    Columns: pose L1 (deg, px), motion std and ΔP ratios generated ÷ real, beat alignment with the audio onsets (and its
    excess over chance), Fréchet distance of windowed pose statistics. Rows: model, model_smoothed (as inference
    shapes it: smoothed, amplitude matched to the reference), static, replay, mean_motion, other_clip, real.

    \b
    Examples:
      rhythmhead evaluate motion --data /work/store --models runs/motion --out motion_report.json
      rhythmhead evaluate motion --data /work/store --folds 5 --work runs/kfold/motion --out motion_kfold.json
    """
    from .inputs import check_inputs
    from .kfold import check_options, run_command
    from .report import format_table, write_report

    check_options(models, folds, split, work, max_steps, preset, seed, sets)
    check_inputs(data, out, models, "motion", device)
    if folds is not None:
        run_command("motion", data, out, folds, work, preset, max_steps, seed, device,
                    lambda d, run: evaluate_motion(d, run, "val", sigma, device), TABLE_COLUMNS, sets)
        return
    settings, methods = evaluate_motion(data, models, split or "val", sigma, device)
    click.echo(f"{len(settings['clips'])} clips, {settings['windows']} windows, {settings['predicted_frames']} "
               f"predicted frames")
    click.echo(format_table({m: {k: v[k] for k in TABLE_COLUMNS} for m, v in methods.items()}))
    write_report(out, "motion", settings, methods)
    click.echo(f"wrote {out}")
