"""Metrics against known values and edge cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rhythmhead.evaluation import metrics as M


def rng_images(n=2, h=32, w=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def test_identical_images():
    img = rng_images()
    assert M.ssim(img, img) == pytest.approx(1.0)
    assert M.psnr(img, img) == math.inf
    assert M.psnr(img[0], img[0].copy()) == math.inf  # single (H,W,3) image


def test_psnr_of_known_noise_and_both_conventions():
    sigma = 0.05  # on the [0,1] scale → PSNR = 10·log10(1/σ²) = 26.02 dB
    g = torch.Generator().manual_seed(0)
    real = torch.zeros(4, 3, 64, 64)  # mid grey in [-1,1]
    noisy = real + 2 * sigma * torch.randn(real.shape, generator=g)  # σ doubles on the [-1,1] scale
    assert M.psnr(noisy, real) == pytest.approx(10 * math.log10(1 / sigma**2), abs=0.1)
    # uint8 and [-1,1] give the same number for the same picture
    u8 = rng_images(1, 16, 16, seed=1)
    u8b = np.clip(u8.astype(int) + 10, 0, 255).astype(np.uint8)
    as_tensor = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).double() / 127.5 - 1  # noqa: E731
    assert M.psnr(u8, u8b) == pytest.approx(M.psnr(as_tensor(u8), as_tensor(u8b)), abs=1e-9)
    assert M.ssim(u8, u8b) == pytest.approx(M.ssim(as_tensor(u8), as_tensor(u8b)), abs=1e-9)


def test_ssim_orders_degradations_and_masks():
    img = rng_images(1, 48, 48, seed=2)
    rng = np.random.default_rng(3)
    mild = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
    strong = np.clip(img + rng.normal(0, 60, img.shape), 0, 255).astype(np.uint8)
    assert 1.0 > M.ssim(mild, img) > M.ssim(strong, img) > -1.0
    # damage only the right half: the left-half mask scores near 1, PSNR inside it is infinite
    half = img.copy()
    half[:, :, 24:] = 255 - half[:, :, 24:]
    mask = np.zeros((48, 48), bool)
    mask[:, :12] = True  # away from the seam (SSIM's window reaches ~5 px)
    assert M.ssim(half, img, mask=mask) == pytest.approx(1.0, abs=1e-6)
    assert M.ssim(half, img) < 0.7
    assert M.psnr(half, img, mask=mask) == math.inf
    assert M.psnr(half, img, mask=torch.from_numpy(~mask)[None, None]) < 10


def test_bad_images_are_rejected():
    with pytest.raises(ValueError, match="uint8"):
        M.psnr(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="differ"):
        M.ssim(rng_images(1, 16, 16), rng_images(1, 16, 20))


def test_lmd_and_pose_l1():
    real = np.random.default_rng(0).uniform(0, 256, (5, 68, 2))
    pred = real.copy()
    pred[:, 48:68] += [3.0, 4.0]  # mouth off by 5 px
    assert M.lmd(pred, real, "mouth") == pytest.approx(5.0)
    assert M.lmd(pred, real, "all") == pytest.approx(5.0 * 20 / 68)
    assert M.lmd(np.concatenate([pred, np.ones((5, 68, 1))], -1), real) == pytest.approx(5.0)  # z ignored
    with pytest.raises(ValueError):
        M.lmd(pred[:, :60], real[:, :60])
    pose = np.zeros((4, 6))
    moved = pose + np.r_[np.radians([2.0, 2.0, 2.0]), [1.0, 3.0, 5.0]]
    assert M.pose_l1(moved, pose, "rotation") == pytest.approx(2.0)
    assert M.pose_l1(moved, pose, "translation") == pytest.approx(3.0)


def test_csim():
    a = np.random.default_rng(0).normal(size=(3, 128))
    assert M.csim(a, 2 * a) == pytest.approx(1.0)
    assert M.csim(a[0], -a[0]) == pytest.approx(-1.0)
    b = a.copy()
    b[:, :64] = 0
    assert 0 < M.csim(a, b) < 1


def test_frechet_distance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    assert M.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    shifts = [M.frechet_distance(x, x + d) for d in (0.5, 1.0, 2.0)]
    assert shifts == pytest.approx([8 * 0.25, 8 * 1.0, 8 * 4.0], rel=1e-6)  # ‖Δμ‖², covariances equal
    y = rng.normal(size=(400, 8)) * 2
    assert M.frechet_distance(x, y) > 4  # tr(Σ) terms: ≈ 8·(1 + 4 − 2·2) = 8
    few = rng.normal(size=(5, 128))  # fewer samples than dimensions: singular covariances still give a number
    assert math.isfinite(M.frechet_distance(few, few + 0.1))
    with pytest.raises(ValueError):
        M.frechet_distance(x[:1], x)


def test_streaming_evaluators_match_batch_values():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 6)), rng.normal(size=(200, 6)) + 0.3
    fd = M.StreamingFrechet()
    for i in range(0, 300, 70):
        fd.process(a[i:i + 70], b[i:i + 70] if i < 200 else None)
    assert fd.result() == pytest.approx(M.frechet_distance(a, b), rel=1e-6)
    fd.reset()
    assert math.isnan(fd.result())

    mean = M.StreamingMean(M.lmd, subset="all")
    clips = [rng.uniform(0, 100, (n, 68, 2)) for n in (3, 7)]
    for c in clips:
        mean.process(c + 1.0, c)
    assert mean.result() == pytest.approx(math.sqrt(2))
    psnr = M.StreamingMean(M.psnr)
    img = rng_images(2)
    psnr.process(img, img)
    assert math.isinf(psnr.result()) and psnr.n_inf == 1


def test_registry_and_fid_hook(tmp_path):
    assert {"ssim", "psnr", "lmd_mouth", "lmd_all", "csim", "face_fd"} <= set(M.METRICS)
    img = rng_images(1)
    assert M.METRICS["psnr"](img, img) == math.inf
    from rhythmhead.errors import InputError
    with pytest.raises(InputError, match="Inception weights"):
        M.inception_features(img, None)
    junk = tmp_path / "inception.pt"
    junk.write_bytes(b"junk")
    with pytest.raises(InputError, match="not a TorchScript model"):
        M.inception_features(img, junk)


# -- evaluation/report.py and the `evaluate` group ---------------------------------------------------------------------
def test_report_round_trip_and_table(tmp_path):
    from rhythmhead.evaluation.report import format_table, read_report, write_report

    methods = {"ours": {"ssim": np.float32(0.71234), "psnr": 24.31234, "lmd_mouth": 1234.5},
               "static": {"ssim": 0.5, "psnr": math.inf, "fid": 0.000123}}
    path = write_report(tmp_path / "r" / "report.json", "generator", {"clips": 3, "tau": 64}, methods)
    data = read_report(path)
    assert data["task"] == "generator" and data["settings"] == {"clips": 3, "tau": 64}
    assert data["methods"]["ours"]["ssim"] == pytest.approx(0.71234, rel=1e-6)
    assert data["methods"]["static"]["psnr"] == "inf" and float(data["methods"]["static"]["psnr"]) == math.inf
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temp file left
    lines = format_table(methods).splitlines()
    assert lines[0].split() == ["method", "ssim", "psnr", "lmd_mouth", "fid"]
    assert lines[2].split() == ["ours", "0.712", "24.31", "1234", "–"]
    assert lines[3].split() == ["static", "0.500", "inf", "–", "1.23e-04"]
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_evaluate_group_dispatches_from_its_table(monkeypatch, capsys):
    import types

    import click

    from rhythmhead import cli as root_cli
    from rhythmhead.evaluation import cli as eval_cli

    fake = types.ModuleType("fake_eval_mod")

    @click.command()
    @click.option("--out", required=True)
    def command(out):
        click.echo(f"fake wrote {out}")

    fake.command = command
    monkeypatch.setitem(__import__("sys").modules, "fake_eval_mod", fake)
    monkeypatch.setattr(eval_cli.evaluate, "table", {"fake": "fake_eval_mod:command"})
    root_cli.main(["evaluate", "--help"])
    listing = capsys.readouterr().out
    assert listing.split("Commands:")[1].split() == ["fake"]
    root_cli.main(["evaluate", "fake", "--out", "x.json"])
    assert "fake wrote x.json" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        root_cli.main(["evaluate", "ghost"])
    assert info.value.code == 2 and "No such command" in capsys.readouterr().err


def test_sharpness_ratio_falls_with_blur_and_is_one_for_real_frames():
    import cv2

    from rhythmhead.evaluation.metrics import METRICS, laplacian_variance, region_masks, sharpness_ratio
    from rhythmhead.face.landmarks import canonical_68

    rng = np.random.default_rng(0)
    # a textured "face": noise with structure at several scales
    frames = np.stack([cv2.GaussianBlur(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), (3, 3), 0.6)
                       for _ in range(3)])
    lm = np.repeat(canonical_68()[None], 3, 0)
    assert sharpness_ratio(frames, lm, frames, lm) == pytest.approx(1.0)
    other = np.stack([cv2.GaussianBlur(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), (3, 3), 0.6)
                      for _ in range(3)])
    assert sharpness_ratio(other, lm, frames, lm) == pytest.approx(1.0, abs=0.1)  # same kind of detail ≈ 1
    ratios = [sharpness_ratio(np.stack([cv2.GaussianBlur(f, (0, 0), s) for f in frames]), lm, frames, lm)
              for s in (0.8, 1.5, 3.0)]
    assert ratios[0] < 0.8 and ratios[0] > ratios[1] > ratios[2] > 0
    # 128² upsampled to 256² (what the old pipeline did) loses most of the face detail
    up = np.stack([cv2.resize(cv2.resize(f, (128, 128), interpolation=cv2.INTER_AREA), (256, 256)) for f in frames])
    assert sharpness_ratio(up, lm, frames, lm, "mouth") < 0.5
    # the regions: the mouth box lies inside the face hull; an unknown face gives NaN
    face, mouth = region_masks(lm[:1], 256, "face")[0], region_masks(lm[:1], 256, "mouth")[0]
    assert mouth.sum() > 100 and (face & mouth).sum() > 0.9 * mouth.sum() and face.sum() > 4 * mouth.sum()
    assert np.isnan(laplacian_variance(frames[:1], np.zeros((1, 256, 256), bool))[0])
    assert METRICS["sharp_face"]((frames, lm), (frames, lm)) == pytest.approx(1.0)


def test_training_validation_scores_images_as_evaluate_does():
    """models.losses.image_scores (G's validation) gives evaluate's SSIM and PSNR on the same images."""
    import torch.nn.functional as F

    from rhythmhead.evaluation.metrics import psnr, ssim
    from rhythmhead.models.losses import image_scores

    g = torch.Generator().manual_seed(0)
    for smooth in (True, False):
        real = torch.rand(3, 3, 16, 16, generator=g) if smooth else torch.rand(3, 3, 64, 64, generator=g)
        real = (F.interpolate(real, size=64, mode="bilinear") if smooth else real) * 2 - 1
        pred = (real + 0.2 * torch.randn(3, 3, 64, 64, generator=g)).clamp(-1, 1)
        scores = image_scores(pred, real)
        assert abs(scores["ssim"] - ssim(pred, real)) < 1e-5
        assert abs(scores["psnr"] - psnr(pred, real)) < 1e-4
