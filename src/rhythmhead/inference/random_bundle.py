"""A bundle of randomly initialised networks, for tests and speed benchmarks before trained models exist.

``write_random_bundle(dir, sizes)`` writes the same files as a real bundle (:mod:`rhythmhead.inference.bundle`), with
``save_export``: Φ, Ψ (+ a random orthonormal expression PCA around the canonical face), G + D, optionally generator
ablations and a default motion style. ``sizes``: ``"tiny"`` (toy widths, 64² generator, 4 kHz audio: a whole
pipeline run takes a second), or a training preset name (``"fast"``, ``"paper"``: the preset's real architecture,
for benchmarks). The outputs are meaningless images; the shapes, the data path and the costs are real.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .bundle import STYLE_FILE, MotionStyle, save_style

TINY_MOTION = dict(audio_rate=4000, fps=25, conv_channels=[2, 2], conv_strides=[4, 4], hidden_channels=8,
                   feature_dim=8, pose_hidden=8, encoder_channels=8, dropout=0.1)
TINY_EXPRESSION = dict(audio_rate=4000, fps=25, conv_channels=[2, 2, 2], kernel_size=5, stride=2, feature_dim=8,
                       n_components=20, dropout=0.2)
TINY_GENERATOR = dict(image_size=64, ngf=4, n_downsample=3, max_channels=16, n_adaptive_layers=2, n_fc_layers=2,
                      fc_hidden=8, n_downsample_attn=1, attn_channels=4, n_composition_layers=2, attention="hybrid",
                      composition="linear", warp=True, render3d=True, flow_ngf=4, flow_n_downsample=2,
                      flow_n_blocks=1, flow_max_channels=8, flow_input_scale=1, norm="instance", spectral=True,
                      spade_hidden=8, spade_kernel=1)
TINY_DISC = dict(in_channels=8, ndf=4, n_layers=2, max_channels=16, spectral=True)
POSE_MEAN = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 10.0], np.float32)
POSE_STD = np.array([0.08, 0.08, 0.04, 4.0, 4.0, 4.0], np.float32)


def _sizes(stage: str, sizes: str) -> dict:
    from ..config import preset_dict

    return preset_dict(stage, sizes)


def random_pca(n_components: int = 20, seed: int = 0):
    """A random orthonormal expression PCA around the canonical face (crop pixels), variances decreasing from 25 px²."""
    from ..data.pca import ExpressionPCA
    from ..face.landmarks import canonical_68

    rng = np.random.default_rng(seed)
    template = canonical_68().astype(np.float32)
    q, _ = np.linalg.qr(rng.standard_normal((136, n_components)))
    variance = (25.0 / (1 + np.arange(n_components))).astype(np.float32)
    return ExpressionPCA(mean=template[:, :2].reshape(-1).copy(), components=q.T.astype(np.float32),
                         template=template, explained_variance=variance)


def write_random_bundle(out_dir: str | Path, sizes: str = "tiny", seed: int = 0, ablations: tuple[str, ...] = (),
                        with_style: bool = True, with_unprojection: bool = False) -> Path:
    """Write a bundle of random networks into ``out_dir`` (see the module docstring); returns the folder."""
    from ..models.checkpoint import save_export
    from ..models.discriminator import Discriminator
    from ..models.expression import ExpressionLearner
    from ..models.generator import Generator, apply_ablation
    from ..models.motion import HeadMotionLearner

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if sizes == "tiny":
        motion_kw, expr_kw, gen_kw, disc_kw = TINY_MOTION, TINY_EXPRESSION, TINY_GENERATOR, TINY_DISC
        motion_data, expr_data, gen_data = {"smooth_taps": 11, "val_tau": 32}, {}, {"mouth_margin": 0.15}
    else:
        m, e, g = _sizes("motion", sizes), _sizes("expression", sizes), _sizes("generator", sizes)
        motion_kw, expr_kw = m["model"], e["model"]
        gen_kw, disc_kw = apply_ablation(g["model"], "none"), g["disc"]
        motion_data, expr_data, gen_data = m.get("data", {}), e.get("data", {}), g.get("data", {})

    motion = HeadMotionLearner(**motion_kw)
    save_export(out / "motion", {"motion": motion},
                {"pose_mean": torch.from_numpy(POSE_MEAN), "pose_std": torch.from_numpy(POSE_STD)},
                {"stage": "motion", "config": {"model": motion_kw, "data": motion_data}, "random_init": True})
    expression = ExpressionLearner(**expr_kw)
    pca = random_pca(expression.n_components, seed)
    save_export(out / "expression", {"expression": expression},
                {f"pca_{k}": torch.from_numpy(v) for k, v in pca.arrays().items()},
                {"stage": "expression", "config": {"model": expr_kw, "data": expr_data}, "random_init": True})
    for name in ("none", *ablations):
        kwargs = apply_ablation(gen_kw, name)
        gen, disc = Generator(**kwargs), Discriminator(**disc_kw)
        stem = "generator" if name == "none" else f"generator_{name}"
        save_export(out / stem, {"generator": gen, "disc": disc}, None,
                    {"stage": "generator", "config": {"model": gen_kw, "disc": disc_kw, "data": gen_data,
                                                      "ablation": name},
                     "generator_kwargs": kwargs, "discriminator_kwargs": disc_kw, "random_init": True})
    if with_unprojection:
        from ..models.unprojection import UnprojectionNet

        kw = dict(image_size=64, base_channels=2, output="sigmoid") if sizes == "tiny" else \
            _sizes("unprojection", sizes)["model"]
        save_export(out / "unprojection", {"unprojection": UnprojectionNet(**kw)}, None,
                    {"stage": "unprojection", "config": {"model": kw}, "random_init": True})
    if with_style:
        rng = np.random.default_rng(seed)
        feature_dim = motion.encoder.feature_dim
        style = MotionStyle(weight=(rng.standard_normal((feature_dim, 6)) * 0.1).astype(np.float32),
                            bias=np.zeros(6, np.float32), anchor_pose=POSE_MEAN.copy(), source="random",
                            pose_std=np.array([0.04, 0.05, 0.03, 2.0, 2.0, 1.0], np.float32),
                            pose_speed=np.array([0.004, 0.005, 0.003, 0.2, 0.2, 0.1], np.float32),
                            opening_quantiles=np.linspace(0.0, 0.25, 21).astype(np.float32))
        save_style(out / STYLE_FILE, style, clips=0)
    return out
