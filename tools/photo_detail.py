"""How much of a photo's face detail and identity survive generation, at 256², 512² and pasted back at 1280 px.

For each photo: generate ``--frames`` frames from the speech with the bundled (or ``--models``) models, find the face
on every output frame (MediaPipe) and score against the photo itself at the same resolution — the reference crop at
256² / 512², or the photo shrunk to the output size for paste-back:

* ``sharp_face`` / ``sharp_mouth`` — :func:`rhythmhead.evaluation.metrics.sharpness_ratio` (variance of the Laplacian
  over the face hull / mouth box, output ÷ photo);
* ``csim_min`` / ``csim_mean`` — cosine of dlib face descriptors, each output frame vs the photo's crop (identity on
  every frame: the minimum).

    python tools/photo_detail.py ../shared/media/face_photo/lp_s2.jpg ... --audio speech.wav --out photos.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np


def _crop_like(frame: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return frame if frame.shape[0] == size else cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)


def score_photo(pipe, probe, photo: Path, audio, frames: int, mode: str) -> dict:
    import cv2

    from rhythmhead.data.preprocess import reference_crops
    from rhythmhead.evaluation.metrics import csim, sharpness_ratio
    from rhythmhead.inference.inputs import load_reference
    from rhythmhead.inference.paste import key_frame_source, output_scale

    ref, _ = load_reference(photo)
    controls = {"paste_back": True} if mode == "paste" else {"size": int(mode)}
    result = pipe(ref, audio, seed=0, **controls)
    out = np.stack([f for _, f in zip(range(frames), result.frames())])
    if mode == "paste":
        src = key_frame_source(ref)
        s = output_scale(*src.shape[:2])
        real = cv2.resize(src, (out.shape[2], out.shape[1]), interpolation=cv2.INTER_AREA) if s < 1 else src
    else:
        real = reference_crops(ref, [0], int(mode))[0]
    real_lmk = probe.landmarks(real[None])
    gen_lmk = probe.landmarks(out)
    row = {"photo": photo.name, "mode": mode, "output": list(out.shape[1:3]), "frames": len(out),
           "face_found": float(np.isfinite(gen_lmk).all(axis=(1, 2)).mean())}
    for region in ("face", "mouth"):
        row[f"sharp_{region}"] = sharpness_ratio(out, gen_lmk, real[None], real_lmk, region)
    crop = ref.frames[0]
    ref_desc = probe.descriptors(crop[None])[0]
    # identity on the 256² face crop of every output frame (paste-back frames cut with the reference's box)
    faces = out if mode != "paste" else np.stack([_crop_like(f[int(ref.boxes[0][1] * s):, int(ref.boxes[0][0] * s):]
                                                            [:int(ref.boxes[0][2] * s), :int(ref.boxes[0][2] * s)], 256)
                                                   for f in out])
    desc = probe.descriptors(np.stack([_crop_like(f, 256) for f in faces]))
    ok = np.isfinite(desc).all(1)
    sims = [csim(d, ref_desc) for d in desc[ok]] if np.isfinite(ref_desc).all() else []
    row["csim_min"] = float(min(sims)) if sims else float("nan")
    row["csim_mean"] = float(np.mean(sims)) if sims else float("nan")
    return row


@click.command()
@click.argument("photos", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--audio", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--models", type=click.Path(file_okay=False), default=None)
@click.option("--frames", type=int, default=50, show_default=True)
@click.option("--modes", default="256,512,paste", show_default=True, help="Comma-separated: 256, 512, paste.")
@click.option("--out", type=click.Path(dir_okay=False), required=True)
def main(photos, audio, models, frames, modes, out):
    from rhythmhead.evaluation.end2end import FaceProbe
    from rhythmhead.inference.inputs import load_driving_audio
    from rhythmhead.inference.pipeline import TalkingHeadPipeline

    pipe = TalkingHeadPipeline.load(models, preset="fast")
    speech = load_driving_audio(audio)
    probe = FaceProbe()
    rows = []
    try:
        for photo in photos:
            for mode in modes.split(","):
                row = score_photo(pipe, probe, Path(photo), speech, frames, mode)
                click.echo(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}))
                rows.append(row)
    finally:
        probe.close()
    summary = {}
    for mode in modes.split(","):
        sel = [r for r in rows if r["mode"] == mode]
        summary[mode] = {k: float(np.nanmean([r[k] for r in sel])) for k in ("sharp_face", "sharp_mouth", "csim_mean")}
        summary[mode]["csim_min"] = float(np.nanmin([r["csim_min"] for r in sel]))
    Path(out).write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    click.echo(json.dumps(summary, indent=2))


if __name__ == "__main__":
    sys.exit(main())
