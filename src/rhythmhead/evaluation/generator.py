"""``rhythmhead evaluate generator``: self-reenactment quality of trained generators (DESIGN.md §5, REFERENCE.md §6).

Protocol, per validation clip of the store (the clips the first model held out: the speaker split recorded in its export,
or recomputed from its config — see :func:`validation_clips`; ``--clips all`` uses every clip): the first 25 % of the clip is the reference part — K references evenly spaced in it, the 3-D render's
key frame is its most frontal frame; every ``stride``-th later frame (at most ``max_frames``) is a target, generated
from the clip's *real* landmarks (label map) and *real* pose (render, warping reference = the most pose-different
reference) and compared with the real frame. The K-shot embedding is computed once per clip and model.

Methods (rows): one per ``--models RUN`` (named by its ablation, e.g. ``none``, ``no_warp``; a repeated name gets the
run folder appended) and ``static`` = the reference frame nearest in pose to the target, repeated.

Every model's frames are made at the 256² crop as at inference (a linear-composition G composed there from the 256²
sources, any other G upsampled), and all metrics are computed there. ``sharp_face`` / ``sharp_mouth`` = mean variance
of the Laplacian over the target's face hull / mouth box, generated over real (:mod:`rhythmhead.evaluation.metrics`). Metrics: ``ssim``, ``psnr_db`` (whole 256² frame, :mod:`rhythmhead.evaluation.metrics`); ``csim`` = cosine of the dlib
128-d descriptors of generated and real frame (frames where dlib finds both faces); ``face_fd`` = Fréchet distance
between the sets of dlib descriptors of generated and of real frames (a face-identity FD, not FID); ``lmd_mouth``,
``lmd_all`` = landmark distance (px at 256²) between MediaPipe's 68 points (``FaceMesher`` + ``mesh_to_68``) on the
generated frame and the real track; ``face_found`` = share of frames where MediaPipe found a face on the output.
Means over all evaluated frames.
"""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch

from ..errors import InputError

TABLE_COLUMNS = ("ssim", "psnr_db", "csim", "face_fd", "sharp_face", "sharp_mouth", "lmd_mouth", "lmd_all", "face_found")


def load_generator(run: str | Path, device: str | torch.device = "cpu"):
    """``(generator (eval), discriminator, meta)`` from a run folder or export file of stage ``generator``."""
    from ..models.checkpoint import load_export
    from ..models.discriminator import Discriminator
    from ..models.generator import Generator

    export = load_export(run, stage="generator")
    kwargs = export.meta.get("generator_kwargs")
    if not kwargs or "generator" not in export.state_dicts:
        raise InputError("generator export lacks generator_kwargs or weights", run)
    gen = Generator(**kwargs)
    try:
        gen.load_state_dict(export.state_dicts["generator"])
    except RuntimeError:
        raise InputError("generator weights do not match their config", run) from None
    disc = None
    if "disc" in export.state_dicts and export.meta.get("discriminator_kwargs"):
        disc = Discriminator(**export.meta["discriminator_kwargs"])
        disc.load_state_dict(export.state_dicts["disc"])
        disc = disc.to(device)
    return gen.to(device).eval(), disc, export.meta


def _u8(images: torch.Tensor) -> np.ndarray:
    """``(N,3,H,W)`` in [−1,1] → ``(N,H,W,3)`` uint8."""
    return np.ascontiguousarray(((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy())


def clip_targets(n_frames: int, shots: int, stride: int, max_frames: int, ref_fraction: float = 0.25
                 ) -> tuple[list[int], list[int]]:
    """``(references, targets)`` frame indices of the protocol for a clip of ``n_frames``."""
    from ..training.generator_data import reference_pool

    n_pool = reference_pool(n_frames, ref_fraction, shots)
    refs = sorted({int(round(x)) for x in np.linspace(0, n_pool - 1, shots)})
    refs = (refs * shots)[:shots] if len(refs) < shots else refs
    targets = list(range(n_pool, n_frames, max(1, stride)))[:max_frames]
    return refs, targets


def generate_clip(gen, frames: np.ndarray, track: dict, refs: list[int], targets: list[int], device="cpu",
                  batch_size: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generated, real and static frames ``(N, 256, 256, 3)`` uint8 of one clip's targets, made as the inference
    pipeline makes them: G runs at its own image size; a G with linear composition is composed at the 256² crop from
    the 256² warping reference and render (:meth:`Generator.compose`), any other G's frames are upsampled to it — so
    that generators of any size are scored against the same real frames."""
    from ..geometry.labelmap import mouth_mask
    from ..geometry.mesh import render_textured
    from ..training.generator_data import CROP, make_sample, reference_mesh, worst_reference

    s = gen.image_size
    mesh, key = reference_mesh(frames, track, 0.25, len(refs))
    slots = [worst_reference(track["pose"], refs, t) for t in targets]
    samples = [make_sample(frames, track, mesh, key, refs, w, t, image_size=s) for w, t in zip(slots, targets)]
    ref_images = samples[0]["ref_images"][None].to(device)
    ref_labels = samples[0]["ref_labels"][None].to(device)
    preds = []
    with torch.no_grad():
        emb = gen.embed_references(ref_images, ref_labels)
        for i in range(0, len(samples), batch_size):
            chunk = samples[i:i + batch_size]
            get = lambda k: torch.stack([x[k] for x in chunk]).to(device)  # noqa: E731
            out = gen.generate(emb.expand(len(chunk)), get("target_label"), get("warp_ref_image"),
                               get("warp_ref_label"), get("render_image"), get("render_label"),
                               mouth_mask=get("mouth_mask"), need_raw=False)
            if gen.composes_linearly:
                tg = targets[i:i + batch_size]
                warp_ref = torch.from_numpy(np.stack([frames[refs[w]] for w in slots[i:i + batch_size]]))
                render, _ = render_textured(mesh, torch.from_numpy(np.asarray(track["pose"])[tg]), CROP)
                masks = mouth_mask(torch.from_numpy(np.asarray(track["landmarks"], np.float32)[tg][..., :2]), CROP)
                as_net = lambda u8: (u8.permute(0, 3, 1, 2).float() / 127.5 - 1.0).to(device)  # noqa: E731
                image = gen.compose(out, as_net(warp_ref), as_net(render), masks.to(device))
            else:
                image = out["image"].float()
                if s != CROP:
                    image = torch.nn.functional.interpolate(image, size=(CROP, CROP), mode="bilinear",
                                                            align_corners=False)
            preds.append(_u8(image))
    real = np.ascontiguousarray(frames[targets])
    rot = np.asarray(track["pose"])[:, :3]
    nearest = [refs[int(np.abs(rot[refs] - rot[t]).mean(-1).argmin())] for t in targets]
    static = np.ascontiguousarray(frames[nearest])
    return np.concatenate(preds), real, static


class _Scorer:
    """Accumulates the metrics of one method over clips."""

    def __init__(self, identity, mesher):
        self.identity, self.mesher = identity, mesher
        self.ssim, self.psnr, self.csim, self.lmd_mouth, self.lmd_all, self.found = [], [], [], [], [], []
        self.sharp: dict[str, list] = {"face": [], "mouth": []}
        self.desc_pred, self.desc_real = [], []

    def add(self, pred: np.ndarray, real: np.ndarray, real_desc: list, real_lmk: np.ndarray):
        from ..face.landmarks import mesh_to_68
        from .metrics import csim, laplacian_variance, lmd, psnr, region_masks, ssim

        for region, pairs in self.sharp.items():  # the targets' own landmarks: G draws the face where they are
            masks = region_masks(real_lmk, pred.shape[1], region)
            pairs.append((laplacian_variance(pred, masks), laplacian_variance(real, masks)))
        for p, r in zip(pred, real):
            self.ssim.append(ssim(p[None], r[None]))
            self.psnr.append(min(psnr(p[None], r[None]), 100.0))
        if self.identity is not None:
            for p, rd in zip(pred, real_desc):
                pd = self.identity.descriptor(p)
                if pd is not None:
                    self.desc_pred.append(pd)
                    if rd is not None:
                        self.csim.append(csim(pd, rd))
        if self.mesher is not None:
            for p, rl in zip(pred, real_lmk):
                mesh = self.mesher(p)
                self.found.append(mesh is not None)
                if mesh is not None:
                    m68 = np.asarray(mesh_to_68(mesh))
                    self.lmd_mouth.append(lmd(m68[None], rl[None], "mouth"))
                    self.lmd_all.append(lmd(m68[None], rl[None], "all"))

    def result(self, real_descs: list) -> dict[str, float]:
        from .metrics import frechet_distance

        mean = lambda v: float(np.mean(v)) if len(v) else float("nan")  # noqa: E731
        out = {"ssim": mean(self.ssim), "psnr_db": mean(self.psnr), "frames": len(self.ssim)}
        for region, pairs in self.sharp.items():
            if pairs:
                p, r = np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs])
                out[f"sharp_{region}"] = float(np.nanmean(p) / np.nanmean(r)) if np.isfinite(r).any() else float("nan")
        if self.identity is not None:
            out["csim"] = mean(self.csim)
            real = [d for d in real_descs if d is not None]
            out["face_fd"] = (frechet_distance(np.stack(self.desc_pred), np.stack(real))
                              if len(self.desc_pred) >= 2 and len(real) >= 2 else float("nan"))
        if self.mesher is not None:
            out.update(lmd_mouth=mean(self.lmd_mouth), lmd_all=mean(self.lmd_all), face_found=mean(self.found))
        return out


def evaluate_generator(data: str | Path, runs: list[str], *, shots: int | None = None, stride: int = 4,
                       max_frames: int = 20, clips: str = "val", limit: int | None = None, device: str = "cpu",
                       identity: bool = True, landmarks: bool = True, examples: str | Path | None = None,
                       clip_ids: list[str] | None = None) -> tuple[dict, dict]:
    """Run the protocol of the module docstring; returns ``(settings, methods)``. ``clip_ids`` (optional) names the
    clips explicitly and overrides ``clips``."""
    from ..data.store import ClipStore

    if not runs:
        raise InputError("name at least one trained generator with --models RUN")
    models = []
    names: dict[str, int] = {}
    for run in runs:
        gen, _disc, meta = load_generator(run, device)
        name = meta.get("config", {}).get("ablation", "none")
        if name in names:
            name = f"{name}:{Path(run).name}"
        names[name] = 1
        models.append((name, gen, meta))
    store = ClipStore(data)
    cfg0 = models[0][2].get("config", {})
    split_note = "every clip of the store"
    if clip_ids:
        unknown = sorted(set(clip_ids) - set(store.ids()))
        if unknown:
            raise InputError(f"no clip(s) {', '.join(unknown)} in this store", data)
        ids, split_note = list(clip_ids), "clips named with --clip"
    elif clips == "val":
        ids, split_note = validation_clips(models[0][2], store)
        if not ids:
            raise InputError("none of this store's clips is a validation clip of the first model (use --clips all)",
                             data)
    else:
        ids = store.ids()
    ids = ids[:limit] if limit else ids
    k = shots or int(cfg0.get("data", {}).get("shots", 8))

    face = None
    if identity:
        from ..face.dlib_face import DlibFace
        face = DlibFace()
    mesher = None
    if landmarks:
        from ..face.landmarks import FaceMesher
        mesher = FaceMesher(static_image_mode=True)
    scorers = {name: _Scorer(face, mesher) for name, _, _ in models}
    scorers["static"] = _Scorer(face, mesher)
    real_descs_all: list = []
    used = []
    for clip_id in ids:
        frames, track = store.frames(clip_id), store.track(clip_id)
        n = min(len(frames), track["pose"].shape[0])
        if n < 3:
            continue
        refs, targets = clip_targets(n, k, stride, max_frames)
        if not targets:
            continue
        used.append(clip_id)
        outputs = {}
        for name, gen, _meta in models:
            pred, real, static = generate_clip(gen, frames, track, refs, targets, device)
            outputs[name] = pred
        outputs["static"] = static
        s = real.shape[1]
        real_lmk = np.asarray(track["landmarks"])[targets, :, :2] * (s / frames.shape[1])
        real_descs = [face.descriptor(r) for r in real] if face is not None else [None] * len(real)
        real_descs_all += real_descs
        for name, pred in outputs.items():
            scorers[name].add(pred, real, real_descs, real_lmk)
        if examples is not None:
            _save_examples(Path(examples), clip_id, real, outputs)
    if mesher is not None:
        mesher.close()
    if not used:
        raise InputError("no clip long enough to evaluate (needs frames after the reference part)", data)
    methods = {name: sc.result(real_descs_all) for name, sc in scorers.items()}
    settings = {
        "store": str(data), "models": list(runs), "clips": used, "split": clips, "split_source": split_note,
        "shots": k, "stride": stride,
        "max_frames_per_clip": max_frames, "reference_part": "first 25% of each clip, K evenly spaced references",
        "inputs": "real landmarks (label map) and real pose (3-D render, warping reference) of each target frame",
        "static": "the reference frame nearest in pose (mean |Δ rotation vector|) to the target",
        "csim": "cosine of dlib 128-d face descriptors (generated vs real), frames where both faces are found",
        "face_fd": "Fréchet distance between dlib descriptor sets of generated and real frames (not FID)",
        "lmd": "MediaPipe 68 points of the generated frame vs the real track, pixels at 256²",
        "resolution": "every frame scored at the 256² crop (G's output upsampled when smaller)",
        "averaging": "mean over all evaluated frames", "device": str(device),
    }
    return settings, methods


def validation_clips(meta: dict, store) -> tuple[list[str], str]:
    """Clip ids of ``store`` that the model held out (its training speaker split), and how they were found.

    The split recorded in the export (``meta["split"]``) is used when one of its stores is ``store`` (same folder, or
    the same set of clip ids); otherwise the split is recomputed from the model's config over ``store`` and the
    config's ``extra_stores`` that exist here, exactly as training did.
    """
    from ..data.store import ClipStore
    from ..training.generator_data import split_clips

    ids = set(store.ids())
    split = meta.get("split")
    if split:
        for i, root in enumerate(split["stores"]):
            here = Path(root).resolve() == store.root.resolve()
            val = [c for j, c in split["val"] if j == i]
            train = [c for j, c in split["train"] if j == i]
            if here or (set(val) | set(train)) == ids:
                return [c for c in store.ids() if c in set(val)], "split recorded in the export"
    cfg = meta.get("config", {})
    extra = [p for p in cfg.get("data", {}).get("extra_stores", []) if Path(p, "manifest.jsonl").is_file()]
    stores = [store] + [ClipStore(p) for p in extra]
    _train, val = split_clips(stores, cfg.get("data", {}).get("val_fraction", 0.2), cfg.get("trainer", {}).get("seed", 0))
    missing = len(cfg.get("data", {}).get("extra_stores", [])) - len(extra)
    note = "split recomputed from the config over this store" + (f" + {len(extra)} extra store(s)" if extra else "")
    if missing:
        note += f" ({missing} extra store(s) of the config not found here: the split may differ from training's)"
    return [c for i, c in val if i == 0], note


def _save_examples(folder: Path, clip_id: str, real: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
    """A PNG per clip: rows = real then each method, columns = up to 4 targets."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    cols = np.linspace(0, len(real) - 1, min(4, len(real))).astype(int)
    rows = [np.concatenate(list(real[cols]), 1)] + [np.concatenate(list(o[cols]), 1) for o in outputs.values()]
    grid = np.ascontiguousarray(np.concatenate(rows, 0))
    for i, name in enumerate(["real"] + list(outputs)):
        cv2.putText(grid, name, (4, 14 + i * real.shape[1]), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1)
    cv2.imwrite(str(folder / f"{clip_id}.png"), grid[:, :, ::-1])


@click.command("generator")
@click.option("--data", required=True, type=click.Path(file_okay=False), metavar="STORE", help="Clip store.")
@click.option("--models", "runs", required=True, multiple=True, metavar="RUN",
              help="Trained generator run folder or export (repeat for ablations).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), metavar="REPORT.json", help="Report file.")
@click.option("--shots", type=click.IntRange(min=1), help="K references (default: the first model's training K).")
@click.option("--stride", type=click.IntRange(min=1), default=4, show_default=True, help="Every N-th target frame.")
@click.option("--max-frames", type=click.IntRange(min=1), default=20, show_default=True, help="Targets per clip.")
@click.option("--clips", type=click.Choice(["val", "all"]), default="val", show_default=True,
              help="Validation speakers of the first model's split, or every clip.")
@click.option("--clip", "clip_ids", multiple=True, metavar="ID", help="Evaluate these clips (repeatable; overrides --clips).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N clips.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--no-identity", is_flag=True, help="Skip the dlib metrics (csim, face_fd).")
@click.option("--no-landmarks", is_flag=True, help="Skip the MediaPipe landmark metrics (lmd).")
@click.option("--examples", type=click.Path(file_okay=False), metavar="DIR", help="Also save a PNG grid per clip.")
def command(data, runs, out, shots, stride, max_frames, clips, clip_ids, limit, device, no_identity, no_landmarks,
            examples) -> None:
    """Self-reenactment of trained generators (and the static baseline) on the store's validation clips.

    \b
    Example:
      rhythmhead evaluate generator --data store --models runs/gen --models runs/gen_nowarp --out reports/gen.json
    """
    from .inputs import check_inputs, check_models_path
    from .report import format_table, write_report

    device = check_inputs(data, out, None, "generator", device)
    for run in runs:
        check_models_path(run, "generator")
    settings, methods = evaluate_generator(data, list(runs), shots=shots, stride=stride, max_frames=max_frames,
                                           clips=clips, limit=limit, device=device, identity=not no_identity,
                                           landmarks=not no_landmarks, examples=examples,
                                           clip_ids=list(clip_ids) or None)
    click.echo(f"{len(settings['clips'])} clips")
    click.echo(format_table(methods))
    write_report(out, "generator", settings, methods)
    click.echo(f"wrote {out}")
