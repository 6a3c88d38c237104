"""``rhythmhead evaluate expression``: Ψ against simple baselines on held-out speakers.

Protocol (self-reenactment, DESIGN.md §5): for every validation clip the first 25 % of the frames (at least
min(64, T/2)) are the reference: the identity offset comes from its closed-mouth frame, the reference code from the
same part (:meth:`~rhythmhead.data.pca.ExpressionPCA.reference_code`: the closed-mouth frame's code with the identity,
or, with ``data.reference_keeps_identity: false``, the part's mean code without it). For
every later frame Ψ predicts the PCA code from the audio window; the code is decoded to frontal landmarks (+ identity
offset), posed by the frame's *real* pose (``apply_pose``), and compared in x,y with the tracked landmarks of the 256² crop:

* LMD, mouth (points 48–67) and all 68, in pixels (:func:`rhythmhead.evaluation.metrics.lmd`);
* lip-sync proxy: Pearson correlation, per clip, of the mouth opening (mean inner-lip gap of the frontal landmarks,
  :func:`rhythmhead.data.pca.open_rate`) with the speech RMS envelope of the frame, at lag 0; NaN for a constant mouth;
* ``open_std_ratio``: how much the mouth opens and closes next to the real mouth — the mean over clips of the std of
  the opening, generated ÷ real (pooled like Φ's std ratios; 0 for a held mouth);
* ``bilabial_closure_rate``: without a phone aligner, the real clip's closures during speech stand in for the bilabial
  closures (/p b m/): runs of frames where the real opening drops below the clip's closed threshold after an open
  mouth (:func:`rhythmhead.evaluation.metrics.closure_events`); the rate is the fraction of those events, pooled over
  the clips, at which the generated opening is below the same threshold within ±2 frames.

Baselines on the same frames: ``mean_expression`` (the PCA mean, code 0, + the identity offset), ``reference_held`` (the
reference's closed-mouth frontal landmarks held: Ψ's "static"), and the ceiling ``pca_reconstruction`` (the real
frontal landmarks through the PCA: the best any code can do). ``real`` gives the real landmarks' statistics.
``model_smoothed`` is Ψ's codes shaped as inference shapes them: smoothed (:func:`rhythmhead.inference.controls.smooth`
with the pipeline's default ``code_smooth_taps``), their openings given the distribution of the reference frames'
openings during speech (:func:`rhythmhead.inference.controls.map_openings`), the closed mouth in the pauses
(:func:`rhythmhead.inference.controls.shape_expression`).

Without ``--models``, ``--folds K`` runs the speaker-grouped K-fold cross-validation of
:mod:`rhythmhead.evaluation.kfold` (a fresh Ψ and expression PCA per fold, fitted on the other folds).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

from ..errors import InputError
from .kfold import kfold_options

TABLE_COLUMNS = ("lmd_mouth_px", "lmd_all_px", "open_std_ratio", "bilabial_closure_rate", "mouth_env_corr")
METHODS = ("model", "model_smoothed", "mean_expression", "reference_held", "pca_reconstruction", "real")


@dataclass
class LoadedExpression:
    """An expression export ready to run: network (eval mode), its PCA and the training config dict."""

    net: torch.nn.Module
    pca: object
    config: dict


def load_expression(path: str | Path, device: str | torch.device = "cpu") -> LoadedExpression:
    """Load ``RUN`` / ``RUN/export/expression.safetensors`` into Ψ + its :class:`~rhythmhead.data.pca.ExpressionPCA`."""
    from ..data.pca import ExpressionPCA
    from ..models.checkpoint import load_export
    from ..models.expression import ExpressionLearner

    export = load_export(path, stage="expression", device=device)
    if "expression" not in export.state_dicts:
        raise InputError("expression export lacks the network", path)
    pca = ExpressionPCA.from_arrays({k[4:]: v for k, v in export.extra.items() if k.startswith("pca_")}, path)
    net = ExpressionLearner(**export.config["model"]).to(device)
    try:
        net.load_state_dict(export.state_dicts["expression"])
    except RuntimeError as exc:
        raise InputError(f"weights do not match the exported config ({str(exc).splitlines()[0][:120]})", path) from None
    return LoadedExpression(net.eval(), pca, export.config)


def reference_frames(n_frames: int) -> int:
    """Frames of a clip used as the reference: 25 % of the clip, at least min(64, T/2)."""
    return max(math.ceil(0.25 * n_frames), min(64, n_frames // 2))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 3 or np.ptp(a) < 1e-6 or np.ptp(b) < 1e-9:  # a constant sequence has no correlation
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        r = float(np.corrcoef(a, b)[0, 1])
    return r if math.isfinite(r) else float("nan")


@torch.no_grad()
def predict_codes(net: torch.nn.Module, windows: np.ndarray, ref_code: np.ndarray, device: str = "cpu",
                  chunk: int = 256) -> np.ndarray:
    """Ψ on every frame: windows ``(N, 7, S)`` + reference code ``(n,)`` → codes ``(N, n)``."""
    out = []
    ref = torch.as_tensor(ref_code, dtype=torch.float32, device=device)
    for i in range(0, len(windows), chunk):
        audio = torch.from_numpy(windows[i: i + chunk].reshape(min(chunk, len(windows) - i), -1)).to(device)
        out.append(net(audio, ref.expand(len(audio), -1)).cpu().numpy())
    return np.concatenate(out)


def evaluate_expression(data: str | Path, models: str | Path, split: str = "val", device: str = "cpu") \
        -> tuple[dict, dict]:
    """Run the protocol of the module docstring; returns ``(settings, methods)`` for the report.

    The clips are the val side of the export's own split (``data.folds``/``data.fold`` when it was trained on a fold,
    else ``data.val_fraction``), or every clip with ``split="all"``."""
    from ..audio.windows import envelope
    from ..data.pca import closed_mouth_frame, open_rate
    from ..geometry.pose import apply_pose
    from ..audio.windows import speech_frames
    from ..inference.controls import OPEN_MAX_GAIN, reference_openings, shape_expression
    from ..inference.pipeline import InferenceSettings
    from ..training.learner_data import config_split, load_clips
    from . import metrics
    from .metrics import lmd
    from .motion import mean_rows

    loaded = load_expression(models, device)
    pca, model_cfg, data_cfg = loaded.pca, loaded.config["model"], loaded.config["data"]
    rate, fps = int(model_cfg["audio_rate"]), int(model_cfg["fps"])
    code_taps = InferenceSettings().code_smooth_taps
    train_ids, val_ids = config_split(data, data_cfg)
    clips = load_clips(data, val_ids if split == "val" else train_ids + val_ids, rate, fps)
    if not clips:
        raise InputError(f"no {split} clips with audio to evaluate on", data)

    rows: dict[str, list[dict[str, float]]] = {k: [] for k in METHODS}
    closures = {k: [0, 0] for k in METHODS}  # hits, events
    n_test = 0
    for clip in clips:
        n_ref = reference_frames(clip.n_frames)
        if clip.n_frames - n_ref < 3:
            continue
        ref_frontal = clip.frontal[:n_ref]
        offset = pca.identity_offset(ref_frontal)
        ref_code = pca.reference_code(ref_frontal, keep_identity=data_cfg.get("reference_keeps_identity", True))
        test = slice(n_ref, clip.n_frames)
        n = clip.n_frames - n_ref
        real_frontal = clip.frontal[test]
        codes = predict_codes(loaded.net, clip.windows[test], ref_code, device)
        env_all = envelope(clip.wave, rate, clip.n_frames, fps)
        speech_all = speech_frames(env_all)
        speech = speech_all[test]
        frontals = {
            "model": pca.decode(codes, offset),
            "model_smoothed": pca.decode(shape_expression(
                codes, code_taps, lambda c: open_rate(pca.decode(c, offset)),
                reference_openings(ref_frontal, speech_all[:n_ref]), pca.neutral_code,
                speech), offset),
            "mean_expression": np.repeat(pca.decode(np.zeros(pca.n_components, np.float32), offset)[None], n, 0),
            "reference_held": np.repeat(ref_frontal[closed_mouth_frame(ref_frontal)][None], n, 0),
            "pca_reconstruction": pca.decode(pca.encode(real_frontal, offset), offset),
            "real": real_frontal,
        }
        pose = torch.from_numpy(clip.pose[test]).double()
        env = env_all[test]
        real_xy = clip.landmarks[test, :, :2]
        real_open = open_rate(real_frontal)
        events = metrics.closure_events(real_open, speech)
        threshold = metrics.closure_threshold(real_open)
        for name, frontal in frontals.items():
            posed = apply_pose(torch.from_numpy(np.asarray(frontal, np.float64)), pose).numpy()
            opening = open_rate(np.asarray(frontal, np.float64))
            rows[name].append({"lmd_mouth_px": lmd(posed, real_xy, "mouth"), "lmd_all_px": lmd(posed, real_xy, "all"),
                               "open_std_px": float(np.std(opening)), "mouth_env_corr": _corr(opening, env)})
            closures[name][0] += int(metrics.closure_hits(opening, events, threshold).sum())
            closures[name][1] += len(events)
        n_test += n
    if not n_test:
        raise InputError(f"the {split} clips are too short to evaluate", data)
    methods = {name: mean_rows(rs) for name, rs in rows.items()}
    real_std = methods["real"]["open_std_px"]
    for name, m in methods.items():
        m["open_std_ratio"] = m["open_std_px"] / real_std if real_std > 1e-12 else float("nan")
        hits, n_events = closures[name]
        m["bilabial_closure_rate"] = hits / n_events if n_events else float("nan")
    settings = {
        "store": str(data), "models": str(models), "split": split, "clips": [c.clip_id for c in clips],
        "speakers": sorted({c.speaker for c in clips}),
        "test_frames": n_test, "averaging": "mean over clips of per-clip means",
        "reference": "first 25 % of each clip (at least min(64, T/2) frames); identity offset from its closed-mouth "
                     "frame; reference code: " + ("that frame's code with the identity"
                                                  if data_cfg.get("reference_keeps_identity", True)
                                                  else "the mean code of its frames, identity removed"),
        "posing": "decoded frontal landmarks posed by the real pose of each frame (apply_pose), x,y compared",
        "units": "pixels of the 256² crop",
        "lip_sync_proxy": "Pearson r per clip between the inner-lip opening and the frame's RMS speech envelope, lag 0",
        "open_std_ratio": "mean over clips of the std of the inner-lip opening (frontal landmarks) of the method ÷ the "
                          "same of the real landmarks",
        "bilabial_closure_rate": (
            "no phone aligner: closure events of the real clip = runs of frames whose real inner-lip opening is below "
            f"max(min + {metrics.CLOSURE_REL:.0%} of (95th percentile − min), {metrics.CLOSURE_ABS_PX} px) (over the "
            f"clip's test frames), touching speech (RMS envelope > {metrics.SPEECH_REL:.0%} of its 95th percentile, "
            f"dilated ±{metrics.SPEECH_PAD} frames) and preceded within {metrics.OPEN_LOOKBACK} frames by an opening "
            f"above min + {metrics.OPEN_REL:.0%} of the range; one event per run at its lowest frame. Rate = fraction "
            f"of the events, pooled over clips, where the method's opening is below the same threshold within "
            f"±{metrics.CLOSURE_TOL} frames"),
        "closure_events": closures["real"][1],
        "pca_components": pca.n_components,
        "baselines": {"model_smoothed": f"Ψ's codes shaped as inference does (inference.controls.smooth, "
                                        f"{code_taps} taps; controls.map_openings: the openings quantile-mapped "
                                        "onto the reference frames' speech openings, widened at most "
                                        f"{OPEN_MAX_GAIN}×; the closed mouth in pauses)",
                      "mean_expression": "PCA mean code + identity offset",
                      "reference_held": "the reference's closed-mouth frame held",
                      "pca_reconstruction": "real landmarks through the PCA (ceiling)",
                      "real": "the tracked landmarks (LMD 0)"},
    }
    return settings, methods


@click.command("expression")
@click.option("--data", required=True, type=click.Path(file_okay=False), metavar="STORE", help="Clip store.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), metavar="REPORT.json", help="Report file.")
@click.option("--models", type=click.Path(), metavar="RUN",
              help="Training run folder or expression export (.safetensors), scored on its own held-out speakers.")
@kfold_options("a fresh Ψ and its PCA")
@click.option("--split", type=click.Choice(["val", "all"]),
              help="With --models: held-out speakers of the run's split, or every clip. [default: val]")
@click.option("--device", default="cpu", show_default=True, help="torch device (training and evaluation).")
def command(data: str, out: str, models: str | None, folds: int | None, work: str | None, preset: str | None,
            max_steps: int | None, seed: int | None, sets: tuple[str, ...], split: str | None, device: str) -> None:
    """Evaluate the expression learner Ψ on held-out speakers against mean / held-reference baselines.

    Columns: mouth and all-point LMD (px), mouth-opening std ratio generated ÷ real, bilabial closure rate, correlation
    of the opening with the speech envelope. Rows: model, model_smoothed, mean_expression, reference_held,
    pca_reconstruction, real.

    \b
    Examples:
      rhythmhead evaluate expression --data /work/store --models runs/expression --out expression_report.json
      rhythmhead evaluate expression --data /work/store --folds 5 --work runs/kfold/expression --out expr_kfold.json
    """
    from .inputs import check_inputs
    from .kfold import check_options, run_command
    from .report import format_table, write_report

    check_options(models, folds, split, work, max_steps, preset, seed, sets)
    check_inputs(data, out, models, "expression", device)
    if folds is not None:
        run_command("expression", data, out, folds, work, preset, max_steps, seed, device,
                    lambda d, run: evaluate_expression(d, run, "val", device), TABLE_COLUMNS, sets)
        return
    settings, methods = evaluate_expression(data, models, split or "val", device)
    click.echo(f"{len(settings['clips'])} clips, {settings['test_frames']} test frames")
    click.echo(format_table({m: {k: v[k] for k in TABLE_COLUMNS} for m, v in methods.items()}))
    write_report(out, "expression", settings, methods)
    click.echo(f"wrote {out}")
