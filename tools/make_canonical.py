"""Build the canonical frontal face shipped in the package: ``assets/canonical_68.npy`` and ``assets/canonical_mesh_478.npy``.

How (all steps below are in this script, run it to reproduce the assets)::

    .venv/bin/python tools/make_canonical.py                 # writes src/rhythmhead/assets/canonical_{68,mesh_478}.npy
    .venv/bin/python tools/make_canonical.py --fit-map       # re-derives face.landmarks.MESH_TO_68 (prints it)

1. Samples: MediaPipe Face Mesh (478 points, static mode) on every 5th frame of the real talking clips of
   ``../shared/media/talking_video`` plus the face photos of ``../shared/media/face_photo``.
2. Generalised Procrustes on the mesh vertices behind the 27 stable iBUG points (``MESH_TO_68[STABLE_68]``): every
   sample is centred and scaled to unit RMS on those vertices, then rotated onto the current mean by Kabsch; the mean is
   re-averaged over all 478 points; repeated until it stops changing. Scale is removed here only to average faces of
   different pixel sizes; the pose fit of preprocessing is rigid (no scale), as in the paper.
3. Orientation: the mean rotation of the samples relative to the mean shape (chordal L2 mean, i.e. the SVD projection
   of the summed rotation matrices) is applied, so pitch is how faces in talking videos typically face the camera; then
   yaw and roll are removed with the face's bilateral symmetry: the new x axis is the mean direction from the left to
   the right point of 29 mirrored iBUG pairs (jaw, brows, eyes, nose, mouth), so mirrored points share depth and height.
4. Placement in the 256² paper crop (REFERENCE.md §7): with d = max(width, height) of the 68 points' 2-D box, the crop
   side is 205·d/90 and its top-left is the eye centre − (80·d/90 rows, 100·d/90 cols). So in the crop d is
   256·90/205 ≈ 112.4 px and the eye centre sits at (x, y) = (256·100/205, 256·80/205) ≈ (124.9, 99.9). The mesh's
   depth is centred (mean z = 0), and z keeps the same scale as x, y.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from rhythmhead.face.landmarks import MESH_TO_68, FaceMesher, mesh_to_68  # noqa: E402
from rhythmhead.geometry.pose import STABLE_68, kabsch  # noqa: E402
from rhythmhead.media.io import iter_frames, read_image  # noqa: E402

CROP = 256
FACE_SIZE = CROP * 90 / 205  # d in crop pixels
EYE_CENTRE = np.array([CROP * 100 / 205, CROP * 80 / 205])  # (x, y)
# iBUG-68 mirror pairs (image-left point, image-right point): jaw, brows, eyes, nose, mouth.
SYMMETRIC_PAIRS = [(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] + [
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46), (31, 35), (32, 34), (48, 54), (49, 53), (50, 52),
    (59, 55), (58, 56), (60, 64), (61, 63), (67, 65)]


def collect(media: Path, every: int) -> list[np.ndarray]:
    """Meshes (478, 3) in image pixels from the talking clips (every ``every``-th frame) and the photos."""
    samples = []
    with FaceMesher(static_image_mode=True) as mesher:
        for clip in sorted((media / "talking_video").glob("*.mp4")):
            n = 0
            for i, frame in enumerate(iter_frames(clip)):
                if i % every == 0 and (m := mesher(frame)) is not None:
                    samples.append(m)
                    n += 1
            print(f"{clip.name}: {n} samples", flush=True)
        for photo in sorted((media / "face_photo").iterdir()):
            if (m := mesher(read_image(photo))) is not None:
                samples.append(m)
    return samples


def _normalise(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    x = x - x[..., idx, :].mean(-2, keepdim=True)
    rms = x[..., idx, :].pow(2).sum(-1).mean(-1).sqrt()
    return x / rms[..., None, None]


def procrustes_mean(meshes: np.ndarray, iters: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Generalised Procrustes mean (478, 3) and the per-sample rotations (S, 3, 3) that map the mean onto each sample."""
    idx = torch.as_tensor([MESH_TO_68[i] for i in STABLE_68])
    x = _normalise(torch.as_tensor(meshes, dtype=torch.float64), idx)
    mean = x[0]
    for _ in range(iters):
        rot, _ = kabsch(x[..., idx, :], mean[idx])  # sample -> mean (both centred on the stable points)
        aligned = x @ rot.transpose(-1, -2)
        new = _normalise(aligned.mean(0), idx)
        rot_new, _ = kabsch(new[idx], mean[idx])  # keep the mean's orientation from drifting
        new = new @ rot_new.T
        delta = (new - mean).abs().max().item()
        mean = new
        if delta < 1e-7:
            break
    rot, _ = kabsch(x[..., idx, :], mean[idx])
    return mean.numpy(), rot.transpose(-1, -2).numpy()  # mean -> sample is the transpose


def orient_and_place(mean: np.ndarray, to_samples: np.ndarray) -> np.ndarray:
    """Apply the samples' mean orientation, level the eyes, and place the face in the 256² crop (see module docstring)."""
    u, _, vh = np.linalg.svd(to_samples.sum(0))
    rot = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vh))]) @ vh  # chordal mean rotation
    mesh = mean @ rot.T
    # Left-right axis from the face's bilateral symmetry (removes yaw and roll): mean direction over mirrored pairs.
    lm = mesh_to_68(mesh)
    across = np.stack([lm[b] - lm[a] for a, b in SYMMETRIC_PAIRS])
    x_axis = across.mean(0)
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.array([0.0, 1.0, 0.0]) - x_axis[1] * x_axis  # keep the samples' mean pitch
    y_axis /= np.linalg.norm(y_axis)
    level = np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)])  # rows: new x, y, z (x right, y down, z away)
    mesh = mesh @ level.T
    lm = mesh_to_68(mesh)
    size = max(np.ptp(lm[:, 0]), np.ptp(lm[:, 1]))
    mesh = mesh * (FACE_SIZE / size)
    lm = mesh_to_68(mesh)
    eye = (lm[36:42].mean(0) + lm[42:48].mean(0)) / 2
    mesh[:, :2] += EYE_CENTRE - eye[:2]
    mesh[:, 2] -= mesh[:, 2].mean()
    return mesh.astype(np.float32)


def fit_map(media: Path) -> list[int]:
    """Re-derive MESH_TO_68: per dlib point, the mesh vertex with the smallest median IOD-normalised 2-D distance."""
    from rhythmhead.face.dlib_face import DlibFace

    dl = DlibFace()
    dists = []
    with FaceMesher(static_image_mode=True) as mesher:
        for photo in sorted((media / "face_photo").iterdir()):
            img = read_image(photo)
            boxes = dl.detect(img)
            mesh = mesher(img)
            if not boxes or mesh is None:
                continue
            pts = dl.landmarks68(img, boxes[0])
            iod = np.linalg.norm(pts[36:42].mean(0) - pts[42:48].mean(0))
            dists.append(np.linalg.norm(mesh[None, :468, :2] - pts[:, None], axis=-1) / iod)
    med = np.median(np.stack(dists), axis=0)
    return [int(i) for i in med.argmin(1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    ap.add_argument("--out", type=Path, default=REPO / "src" / "rhythmhead" / "assets")
    ap.add_argument("--every", type=int, default=5, help="use every N-th frame of each clip")
    ap.add_argument("--fit-map", action="store_true", help="print the MESH_TO_68 map fitted against dlib, then exit")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.fit_map:
        print(fit_map(args.media))
        return
    samples = np.stack(collect(args.media, args.every))
    print(f"{len(samples)} meshes")
    mean, to_samples = procrustes_mean(samples)
    mesh = orient_and_place(mean, to_samples)
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "canonical_mesh_478.npy", mesh)
    np.save(args.out / "canonical_68.npy", mesh_to_68(mesh))
    lm = mesh_to_68(mesh)
    print(f"wrote {args.out}/canonical_68.npy and canonical_mesh_478.npy; 68-point box "
          f"{np.ptp(lm[:, 0]):.1f}x{np.ptp(lm[:, 1]):.1f} px, z range {np.ptp(lm[:, 2]):.1f} px")


if __name__ == "__main__":
    main()
