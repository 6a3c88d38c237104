"""``rhythmhead evaluate end2end``: the whole pipeline against baselines on real talking clips (DESIGN.md §5).

**Self-reenactment.** For every clip (a video with speech in ``--clips``) the first 25 % of its 25 fps frames — at least
min(64, T/2) — is the reference (K references, mesh, Φ's layer from its own pose + speech, Ψ's reference code); the
rest is generated from the clip's own speech and compared frame by frame with the real crops (at most ``max_frames``).

**Cross-identity.** The same reference driven by the *next* clip's speech (from its start): nothing to compare frame by
frame, so identity (CSIM to the reference key frame), lip sync and motion statistics are reported, prefixed ``x_``.

Rows (``methods``):

* ``model`` — the bundle's Φ, Ψ and G; ``model_upsampled`` — the same with G's frames upsampled to the crop instead of
  composed at the output size from the source's pixels (``InferenceSettings.full_resolution``); ``model_<ablation>``
  — the same with each ``generator_<ablation>`` export of the bundle (Supplementary Table 1 ablations that are
  present);
* ``gt_pose`` — the real head poses + Ψ's expression + our renderer and G (isolates Φ);
* ``gt_motion`` — the real poses and the real expression (the clip's own frontal landmarks) + renderer and G (isolates
  the renderer and G);
* ``static`` — the reference's key frame repeated;
* ``real`` — the real frames: motion statistics and lip sync of the real clip (its frame metrics are trivial).

Metrics (:mod:`rhythmhead.evaluation.metrics`, frames at 256²): ``ssim``, ``psnr`` (dB on 0..255), ``csim`` (cosine of
dlib face descriptors, generated frame vs the *real* frame; ``csim_ref``: vs the reference key frame), ``face_fd``
(Fréchet distance of dlib descriptors, generated vs real frames, over all clips — *not* FID), ``lmd_mouth`` / ``lmd_all``
(px, MediaPipe landmarks of the generated frames vs the real frames' tracked landmarks), ``pose_rot_deg`` /
``pose_trans_px`` (pose estimated on the generated frames vs the real pose), ``face_rate`` (frames where a face was
found in the output), motion statistics of the driving poses (:func:`rhythmhead.evaluation.motion_stats.summarise`:
std, ΔP, beat alignment with the speech onsets, its excess over chance), and two lip-sync proxies: ``sync`` — the
correlation of the *output's* mouth opening (inner-lip gap of the landmarks found on it) with the speech RMS envelope,
``sync_plan`` — the same for the landmarks G was asked to draw; ``sharp_face`` / ``sharp_mouth`` — the variance of
the Laplacian over the face (jaw-and-brow hull) / mouth box of each output frame (its own re-detected landmarks) over
the same on the real frames (cross-identity: on the reference key frame), :func:`~.metrics.sharpness_ratio`.
Averages are frame-weighted over clips.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import click
import numpy as np

from ..data.layouts import VIDEO_SUFFIXES
from ..errors import InputError
from . import motion_stats

TABLE_COLUMNS = ("ssim", "psnr", "csim", "csim_ref", "sharp_face", "sharp_mouth", "lmd_mouth", "pose_rot_deg",
                 "face_rate", "sync", "sync_plan", "std_rot_deg", "beat_align_excess", "x_csim_ref", "x_sharp_face",
                 "x_sharp_mouth", "x_sync", "x_sync_plan")


def reference_frames(n_frames: int) -> int:
    """Frames of a clip used as the reference: 25 % of the clip, at least min(64, T/2)."""
    return max(math.ceil(0.25 * n_frames), min(64, n_frames // 2))


def list_clips(clips_dir: str | Path) -> list[Path]:
    root = Path(clips_dir)
    if not root.is_dir():
        raise InputError("clips folder not found", root)
    clips = sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not clips:
        raise InputError(f"no video clips ({', '.join(VIDEO_SUFFIXES)}) in this folder", root)
    return clips


def _corr(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or np.ptp(a) < 1e-6 or np.ptp(b) < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


class FaceProbe:
    """Landmarks (MediaPipe) and identity descriptors (dlib) of frames, for scoring generated video."""

    def __init__(self):
        from ..face.dlib_face import DlibFace
        from ..face.landmarks import FaceMesher

        self.mesher = FaceMesher(static_image_mode=True)
        self.dlib = DlibFace()

    def landmarks(self, frames: np.ndarray) -> np.ndarray:
        """``(N, 68, 3)`` crop-pixel landmarks, NaN where no face is found."""
        from ..face.landmarks import mesh_to_68

        out = np.full((len(frames), 68, 3), np.nan, np.float32)
        for i, f in enumerate(frames):
            mesh = self.mesher(np.ascontiguousarray(f))
            if mesh is not None:
                out[i] = mesh_to_68(mesh[None])[0]
        return out

    def descriptors(self, frames: np.ndarray) -> np.ndarray:
        """``(N, 128)`` dlib descriptors, NaN where no face is found."""
        out = np.full((len(frames), 128), np.nan, np.float32)
        for i, f in enumerate(frames):
            d = self.dlib.descriptor(np.ascontiguousarray(f))
            if d is not None:
                out[i] = d
        return out

    def close(self):
        self.mesher.close()


def _to_crop_size(frames: np.ndarray, size: int = 256) -> np.ndarray:
    import cv2

    if frames.shape[1] == size:
        return frames
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in frames])


def score_frames(probe: FaceProbe, gen: np.ndarray, real: np.ndarray | None, real_landmarks: np.ndarray | None,
                 real_pose: np.ndarray | None, ref_desc: np.ndarray | None, env: np.ndarray,
                 ref_frame: np.ndarray | None = None, ref_landmarks: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """Frame metrics of one generated sequence (see the module docstring). Returns ``(metrics, descriptors)``.

    Sharpness (``sharp_face``, ``sharp_mouth``) is against the real frames, or, without them (cross-identity), against
    ``ref_frame`` with its ``ref_landmarks`` ``(68, ≥2)``."""
    import torch

    from ..data.pca import open_rate
    from ..face.landmarks import canonical_68
    from ..geometry.pose import estimate_pose
    from .metrics import csim, lmd, pose_l1, psnr, sharpness_ratio, ssim

    out: dict[str, float] = {}
    if real is not None:
        out["ssim"], out["psnr"] = ssim(gen, real), psnr(gen, real)
    lmk = probe.landmarks(gen)
    found = np.isfinite(lmk).all(axis=(1, 2))
    out["face_rate"] = float(found.mean())
    desc = probe.descriptors(gen)
    has_desc = np.isfinite(desc).all(1)
    if real is not None:
        real_desc = probe.descriptors(real)
        both = has_desc & np.isfinite(real_desc).all(1)
        out["csim"] = csim(desc[both], real_desc[both]) if both.any() else float("nan")
    if ref_desc is not None and np.isfinite(ref_desc).all():
        out["csim_ref"] = csim(desc[has_desc], np.repeat(ref_desc[None], has_desc.sum(), 0)) if has_desc.any() \
            else float("nan")
    if real_landmarks is not None:
        out["lmd_mouth"] = lmd(lmk[found], real_landmarks[found], "mouth") if found.any() else float("nan")
        out["lmd_all"] = lmd(lmk[found], real_landmarks[found], "all") if found.any() else float("nan")
    if real_pose is not None:
        if found.any():
            est = estimate_pose(torch.from_numpy(lmk[found]).double(), torch.from_numpy(canonical_68()).double())
            est = est.float().numpy()
            out["pose_rot_deg"] = pose_l1(est, real_pose[found], "rotation")
            out["pose_trans_px"] = pose_l1(est, real_pose[found], "translation")
        else:
            out["pose_rot_deg"] = out["pose_trans_px"] = float("nan")
    if real is not None and real_landmarks is not None:
        sharp_ref = (real, real_landmarks)
    elif ref_frame is not None and ref_landmarks is not None:
        sharp_ref = (ref_frame[None], np.asarray(ref_landmarks)[None])
    else:
        sharp_ref = None
    if sharp_ref is not None:
        for region in ("face", "mouth"):
            out[f"sharp_{region}"] = sharpness_ratio(gen, lmk, *sharp_ref, region)
    mouth = np.full(len(gen), np.nan)
    mouth[found] = open_rate(lmk[found])
    out["sync"] = _corr(mouth, env)
    return out, desc


def _mean_rows(rows: list[tuple[dict, int]]) -> dict:
    """Frame-weighted mean per key over (metrics, frames) rows, ignoring NaN."""
    keys = []
    for r, _ in rows:
        keys += [k for k in r if k not in keys]
    out = {}
    for k in keys:
        vals = np.array([r.get(k, np.nan) for r, _ in rows], np.float64)
        w = np.array([n for _, n in rows], np.float64)
        ok = np.isfinite(vals)
        out[k] = float((vals[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() else float("nan")
    return out


def evaluate_end2end(clips_dir: str | Path, models: str | Path | None, *, max_clips: int | None = None,
                     max_frames: int = 125, device: str = "cpu", preset: str = "fast", cross: bool = True,
                     examples: str | Path | None = None, echo=lambda msg: None) -> tuple[dict, dict]:
    """Run the protocol of the module docstring; returns ``(settings, methods)`` for the report."""
    from ..audio.windows import envelope, onset_frames
    from ..data.pca import open_rate
    from ..inference.bundle import load_generator
    from ..inference.inputs import AUDIO_RATE, AudioInput, clip_audio, load_reference, resample
    from ..inference.intermediates import mouth_correlation
    from ..inference.pipeline import TalkingHeadPipeline
    from ..inference.reference import slice_reference
    from .metrics import frechet_distance

    pipe = TalkingHeadPipeline.load(models, device=device, preset=preset)
    pipes = {"model": pipe,  # and G's frames upsampled instead of composed at the output size (the former pipeline)
             "model_upsampled": TalkingHeadPipeline(pipe.bundle, device, replace(pipe.settings, full_resolution=False))}
    for name, path in pipe.bundle.ablations.items():
        gen = load_generator(path, device)
        pipes[f"model_{name}"] = TalkingHeadPipeline(replace(pipe.bundle, generator=gen), device, pipe.settings)
    spf = AUDIO_RATE // 25

    # 1. the clips: tracked once, with speech
    clips = []
    for path in list_clips(clips_dir)[: max_clips or None]:
        try:
            ref, _ = load_reference(path)
        except InputError as exc:
            echo(f"skip {path.name}: {exc}")
            continue
        wave = clip_audio(path, AUDIO_RATE, len(ref.frames))
        n_ref = reference_frames(len(ref.frames))
        if wave is None or len(ref.frames) - n_ref < 8:
            echo(f"skip {path.name}: {'no speech' if wave is None else 'too short'}")
            continue
        clips.append((path, ref, wave, n_ref))
    if not clips:
        raise InputError("no clip with a face, speech and at least 16 frames", clips_dir)

    probe = FaceProbe()
    rows: dict[str, list[tuple[dict, int]]] = {}
    desc_sets: dict[str, list[np.ndarray]] = {}
    real_desc_all: list[np.ndarray] = []
    per_clip: dict[str, dict] = {}
    ex_dir = Path(examples) if examples else None
    try:
        for ci, (path, ref, wave, n_ref) in enumerate(clips):
            name = path.stem
            echo(f"[{ci + 1}/{len(clips)}] {name}: {n_ref} reference frames, {len(ref.frames) - n_ref} to generate")
            reference = slice_reference(ref, n_ref)
            n_gen = min(len(ref.frames) - n_ref, max_frames)
            drive = AudioInput(wave[n_ref * spf:(n_ref + n_gen) * spf], AUDIO_RATE, str(path))
            sl = slice(n_ref, n_ref + n_gen)
            real, real_lmk, real_pose = ref.frames[sl], ref.landmarks[sl], ref.pose[sl]
            env = envelope(drive.wave, AUDIO_RATE, n_gen)
            onsets = onset_frames(drive.wave, AUDIO_RATE, n_gen)
            key = reference.frames[reference.key_frame]
            key_lmk = reference.landmarks[reference.key_frame]
            ref_desc = probe.descriptors(key[None])[0]
            real_d = probe.descriptors(real)
            real_desc_all.append(real_d[np.isfinite(real_d).all(1)])
            clip_rows: dict[str, dict] = {}
            real_expr = replace(ref, frontal=ref.frontal[sl])  # the expression driver: only its frontal landmarks

            def run(label, p, prepared, **controls):
                result = p(prepared, drive, **controls)
                gen = _to_crop_size(np.stack(list(result.frames())))[:n_gen]
                metrics, desc = score_frames(probe, gen, real, real_lmk, real_pose, ref_desc, env)
                metrics["sync_plan"] = mouth_correlation(result.plan.frontal, env)
                metrics.update(motion_stats.summarise(result.poses[:n_gen], onsets))
                clip_rows[label] = metrics
                rows.setdefault(label, []).append((metrics, n_gen))
                desc_sets.setdefault(label, []).append(desc[np.isfinite(desc).all(1)])
                if ex_dir is not None:
                    _save_example(ex_dir / f"{name}_{label}.png", real, gen)
                return result

            ref_audio = resample(wave[:n_ref * spf], AUDIO_RATE, pipe.bundle.motion.audio_rate)
            for label, p in pipes.items():
                prepared = p.prepare(reference, reference_audio=ref_audio)
                run(label, p, prepared)
                if label == "model":
                    run("gt_pose", p, prepared, pose_from=real_pose)
                    run("gt_motion", p, prepared, pose_from=real_pose, expression_from=real_expr, blink=False)
                    if cross and len(clips) > 1:
                        _, _, other_wave, _ = clips[(ci + 1) % len(clips)]
                        x_n = min(len(other_wave) // spf, max_frames)
                        x_drive = AudioInput(other_wave[: x_n * spf], AUDIO_RATE, "cross")
                        x_env = envelope(x_drive.wave, AUDIO_RATE, x_n)
                        x_res = p(prepared, x_drive)
                        x_gen = _to_crop_size(np.stack(list(x_res.frames())))[:x_n]
                        x_metrics, _ = score_frames(probe, x_gen, None, None, None, ref_desc, x_env,
                                                    ref_frame=key, ref_landmarks=key_lmk)
                        x_stats = motion_stats.summarise(x_res.poses[:x_n], onset_frames(x_drive.wave, AUDIO_RATE, x_n))
                        x = {"x_csim_ref": x_metrics.get("csim_ref"), "x_sync": x_metrics["sync"],
                             "x_sharp_face": x_metrics.get("sharp_face"),
                             "x_sharp_mouth": x_metrics.get("sharp_mouth"),
                             "x_face_rate": x_metrics["face_rate"],
                             "x_sync_plan": mouth_correlation(x_res.plan.frontal, x_env),
                             **{f"x_{k}": v for k, v in x_stats.items()}}
                        clip_rows[label].update(x)
            # static: the reference key frame repeated; real: the clip itself (statistics only)
            static = np.repeat(key[None], n_gen, 0)
            metrics, desc = score_frames(probe, static, real, real_lmk, real_pose, ref_desc, env)
            metrics.update(motion_stats.summarise(np.repeat(reference.pose[reference.key_frame][None], n_gen, 0),
                                                  onsets))
            clip_rows["static"] = metrics
            rows.setdefault("static", []).append((metrics, n_gen))
            desc_sets.setdefault("static", []).append(desc[np.isfinite(desc).all(1)])
            real_metrics = {"sync": _corr(open_rate(real_lmk), env),
                            "sync_plan": mouth_correlation(ref.frontal[sl], env),
                            **motion_stats.summarise(real_pose, onsets)}
            clip_rows["real"] = real_metrics
            rows.setdefault("real", []).append((real_metrics, n_gen))
            per_clip[name] = clip_rows
    finally:
        probe.close()

    methods = {label: _mean_rows(r) for label, r in rows.items()}
    real_all = np.concatenate(real_desc_all) if real_desc_all else np.zeros((0, 128))
    for label, sets in desc_sets.items():
        gen_all = np.concatenate(sets) if sets else np.zeros((0, 128))
        methods[label]["face_fd"] = frechet_distance(gen_all, real_all) if len(gen_all) > 1 and len(real_all) > 1 \
            else float("nan")
    for label in methods:  # the cross-identity numbers live in the per-clip rows of "model" only
        if label == "model":
            x_rows = [(per_clip[c]["model"], 1) for c in per_clip if "x_csim_ref" in per_clip[c].get("model", {})]
            if x_rows:
                methods[label].update({k: v for k, v in _mean_rows(x_rows).items() if k.startswith("x_")})
    order = ["model", *[k for k in methods if k.startswith("model_")], "gt_pose", "gt_motion", "static", "real"]
    methods = {k: methods[k] for k in order if k in methods}
    settings = {
        "clips": str(clips_dir), "models": str(pipe.bundle.root), "preset": preset, "device": device,
        "clip_names": [p.stem for p, *_ in clips], "max_frames": max_frames,
        "reference": "first 25 % of each clip's 25 fps frames, at least min(64, T/2)",
        "shots": pipe.settings.shots, "ablations": sorted(pipe.bundle.ablations),
        "random_init": any(bool(getattr(m, "config", {}).get("random_init")) for m in
                           (pipe.bundle.generator,)),
        "cross_identity": "each clip's reference driven by the next clip's speech (from its start); x_* columns of "
                          "the model row" if cross else "off",
        "frames": "256² crops; generated frames resized to 256² when G runs at another size",
        "csim": "cosine of dlib 128-d face descriptors, generated vs real frame (csim_ref: vs the reference key "
                "frame); frames without a detected face are left out",
        "face_fd": "Fréchet distance between dlib descriptors of generated and real frames over all clips (not FID)",
        "lmd": "px in the 256² crop; MediaPipe landmarks of the output vs the tracked real landmarks",
        "sync": "Pearson r of the mouth opening (inner-lip gap) with the per-frame speech RMS, lag 0; sync: of the "
                "output as re-detected, sync_plan: of the landmarks G was asked to draw",
        "motion": "motion_stats.summarise of the driving poses (deg, px), beat alignment σ = "
                  f"{motion_stats.DEFAULT_SIGMA} frames against audio onsets",
        "sharpness": "mean variance of the 3x3 Laplacian (grey, 0..255) over the face hull / mouth box of the output "
                     "frames divided by the same over the real frames (x_: over the reference key frame)",
        "averaging": "frame-weighted mean over clips; NaN values skipped",
        "per_clip": per_clip,
    }
    return settings, methods


def _save_example(path: Path, real: np.ndarray, gen: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    idx = np.linspace(0, len(gen) - 1, min(4, len(gen))).astype(int)
    grid = np.concatenate([np.concatenate([real[i], gen[i]], 0) for i in idx], 1)
    Image.fromarray(grid).save(path)


@click.command("end2end")
@click.option("--clips", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder of talking videos with speech.")
@click.option("--models", type=click.Path(file_okay=False), metavar="DIR",
              help="Models folder (default: the bundled models).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), metavar="REPORT.json", help="Report file.")
@click.option("--max-clips", type=click.IntRange(min=1), help="Evaluate only the first N clips.")
@click.option("--max-frames", type=click.IntRange(min=8), default=125, show_default=True,
              help="Generated frames per clip at most.")
@click.option("--preset", type=click.Choice(["fast", "paper"]), default="fast", show_default=True)
@click.option("--no-cross", is_flag=True, help="Skip the cross-identity runs.")
@click.option("--examples", type=click.Path(file_okay=False), metavar="DIR",
              help="Also save PNGs: real (top) and generated (bottom) frames per clip and method.")
@click.option("--device", default="cpu", show_default=True)
def command(clips, models, out, max_clips, max_frames, preset, no_cross, examples, device) -> None:
    """Score the whole pipeline: self-reenactment and cross-identity against static / ground-truth-pose baselines.

    \b
    Example:
      rhythmhead evaluate end2end --clips ../shared/media/talking_video --models runs/bundle --out reports/e2e.json
    """
    from ..inference.options import check_device
    from .inputs import check_report_path
    from .report import format_table, write_report

    check_report_path(out)
    device = check_device(device)
    settings, methods = evaluate_end2end(clips, models, max_clips=max_clips, max_frames=max_frames, device=device,
                                         preset=preset, cross=not no_cross, examples=examples,
                                         echo=lambda m: click.echo(m, err=True))
    shown = {m: {k: v for k, v in row.items() if k in TABLE_COLUMNS} for m, row in methods.items()}
    click.echo(format_table(shown))
    write_report(out, "end2end", settings, methods)
    click.echo(f"wrote {out}")
