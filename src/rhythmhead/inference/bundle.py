"""The models folder ("bundle") that inference loads: one export per stage plus the default motion style.

Layout of a bundle folder (``rhythmhead/models_bundled/`` inside the package by default, or ``--models DIR``)::

    motion.safetensors      + motion.json        Φ, the head-motion learner (+ pose_mean / pose_std extras)
    expression.safetensors  + expression.json    Ψ, the expression learner (+ its expression PCA as pca_* extras)
    generator.safetensors   + generator.json     G and D (D is used only by test-time fine-tuning)
    unprojection.safetensors + .json             optional: the PRNet-style unprojection network
    mouth.safetensors + .json                    optional: the mouth synthesis network (photo references' mouths)
    generator_<ablation>.safetensors + .json     optional: ablated generators, scored by `rhythmhead evaluate end2end`
    motion_style.npz                             optional: the default motion style for photo references

``motion_style.npz`` holds Φ's extrapolating layer averaged over a clip store — ``weight (F, 6)``, ``bias (6,)`` in
normalised pose units — and ``anchor_pose (6,)``, the mean raw pose of the clips it was computed on (a record of where
the style's poses sit; inference re-centres a style's poses on the photo's own pose, see
:mod:`rhythmhead.inference.reference`).

A bundle may also hold one sub-folder per preset (``fast/``, ``paper/``); :func:`resolve_models_dir` picks it.
Every file is an export written by :func:`rhythmhead.models.checkpoint.save_export`; nothing is pickled.
:func:`check_bundle` reads only the headers (fast, before any model is built) so the CLI can fail early on a missing,
corrupt or wrong-stage checkpoint; :func:`load_bundle` builds the networks.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError

REQUIRED = ("motion", "expression", "generator")
OPTIONAL = ("unprojection", "mouth")
STYLE_FILE = "motion_style.npz"
ABLATION_PREFIX = "generator_"


def default_models_dir() -> Path:
    """The bundle shipped inside the package: ``rhythmhead/models_bundled``."""
    return Path(str(resources.files("rhythmhead") / "models_bundled"))


def resolve_models_dir(models_dir: str | Path | None = None, preset: str | None = None) -> Path:
    """The folder to load: ``models_dir`` (default: the packaged bundle), or its ``<preset>/`` sub-folder if present."""
    root = Path(models_dir) if models_dir is not None else default_models_dir()
    if not root.is_dir():
        if models_dir is None:
            raise InputError("no bundled models in this install; pass --models DIR (a folder made by "
                             "tools/make_bundle.py)", root)
        raise InputError("models folder not found", root)
    if preset and (root / preset).is_dir() and (root / preset / "generator.safetensors").is_file():
        return root / preset
    return root


def _header(path: Path) -> dict[str, Any]:
    """The rhythmhead meta of an export, reading only the safetensors header."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"not a readable safetensors checkpoint ({str(exc).splitlines()[0][:100]})", path) from None
    if "rhythmhead" not in header:
        raise InputError("not a rhythmhead export (no rhythmhead metadata)", path)
    try:
        return json.loads(header["rhythmhead"])
    except json.JSONDecodeError:
        raise InputError("damaged rhythmhead metadata", path) from None


def _check_stage(path: Path, stage: str) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"the models folder has no {stage} checkpoint ({path.name})", path.parent)
    meta = _header(path)
    if meta.get("stage") != stage:
        raise InputError(f"is a '{meta.get('stage', '?')}' checkpoint, expected '{stage}'", path)
    return meta


def ablation_paths(models_dir: Path) -> dict[str, Path]:
    """``generator_<name>.safetensors`` files of the bundle → ``{name: path}``."""
    return {p.stem[len(ABLATION_PREFIX):]: p for p in sorted(models_dir.glob(f"{ABLATION_PREFIX}*.safetensors"))}


def check_bundle(models_dir: Path) -> dict[str, dict[str, Any]]:
    """Check a bundle from its headers only: every required export present, readable, of the right stage.

    Returns ``{stage: meta}`` for the exports found (optional ones included).

    Raises:
        InputError: a missing, corrupt or wrong-stage checkpoint, or a damaged motion style file.
    """
    metas = {stage: _check_stage(models_dir / f"{stage}.safetensors", stage) for stage in REQUIRED}
    for stage in OPTIONAL:
        if (models_dir / f"{stage}.safetensors").exists():
            metas[stage] = _check_stage(models_dir / f"{stage}.safetensors", stage)
    for name, path in ablation_paths(models_dir).items():
        metas[f"{ABLATION_PREFIX}{name}"] = _check_stage(path, "generator")
    if (models_dir / STYLE_FILE).exists():
        load_style(models_dir / STYLE_FILE)
    return metas


# ----------------------------------------------------------------------------------------------------------------------
# motion style


@dataclass(frozen=True)
class MotionStyle:
    """Φ's extrapolating layer for one speaking style: ``pose_norm = features · weight + bias``.

    Attributes:
        weight: ``(F, 6)`` float32 (F = Φ's ``feature_dim``), normalised pose units.
        bias: ``(6,)`` float32.
        anchor_pose: ``(6,)`` float32 raw mean pose of the clip(s) the style comes from (rad, px).
        source: where it came from (for messages and reports).
        pose_std: ``(6,)`` float32 the motion amplitude of a typical speaker of those clips (the mean over clips of
            :func:`rhythmhead.inference.controls.motion_amplitude`), which inference gives a photo's motion; None in
            style files written before it existed; pose_speed: ``(6,)`` likewise their mean |Δ| per frame.
        opening_quantiles: ``(Q,)`` float32 a typical speaker's inner-lip opening during speech ÷ the mouth width
            (:func:`rhythmhead.inference.controls.relative_openings`), at Q evenly spaced quantiles, pooled over the
            clips: the openings a photo's mouth is given (:func:`rhythmhead.inference.controls.map_openings`);
            None in older style files (a photo then keeps Ψ's own openings).
    """

    weight: np.ndarray
    bias: np.ndarray
    anchor_pose: np.ndarray
    source: str = ""
    pose_std: np.ndarray | None = None
    pose_speed: np.ndarray | None = None
    opening_quantiles: np.ndarray | None = None


def save_style(path: str | Path, style: MotionStyle, **info: Any) -> Path:
    """Write ``motion_style.npz`` atomically (``info`` is stored as a JSON string ``info``)."""
    from ..media.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            extra = {k: np.asarray(v, np.float32) for k, v in (("pose_std", style.pose_std),
                                                                ("pose_speed", style.pose_speed),
                                                                ("opening_quantiles", style.opening_quantiles))
                     if v is not None}
            np.savez(f, weight=style.weight.astype(np.float32), bias=style.bias.astype(np.float32),
                     anchor_pose=style.anchor_pose.astype(np.float32), **extra,
                     info=np.array(json.dumps({"source": style.source, **info}, default=str)))
    return path


def load_style(path: str | Path) -> MotionStyle:
    """Read a ``motion_style.npz`` (InputError naming the file when it is missing or damaged)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("motion style file not found", path)
    try:
        with np.load(path, allow_pickle=False) as data:
            weight, bias, anchor = (np.asarray(data[k], np.float32) for k in ("weight", "bias", "anchor_pose"))
            pose_std, pose_speed, quantiles = (np.asarray(data[k], np.float32) if k in data.files else None
                                               for k in ("pose_std", "pose_speed", "opening_quantiles"))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"not a motion style file ({str(exc).splitlines()[0][:80]})", path) from None
    if weight.ndim != 2 or weight.shape[1] != 6 or bias.shape != (6,) or anchor.shape != (6,):
        raise InputError(f"motion style arrays have wrong shapes (weight {weight.shape}, bias {bias.shape})", path)
    for name, v in (("pose_std", pose_std), ("pose_speed", pose_speed)):
        if v is not None and (v.shape != (6,) or not (np.isfinite(v).all() and (v >= 0).all())):
            raise InputError(f"motion style {name} must be 6 finite values ≥ 0, got shape {v.shape}", path)
    if quantiles is not None and (quantiles.ndim != 1 or len(quantiles) < 8 or not np.isfinite(quantiles).all()
                                  or (quantiles < 0).any() or (np.diff(quantiles) < 0).any()):
        raise InputError(f"motion style opening_quantiles must be ≥ 8 ascending finite values ≥ 0, got shape "
                         f"{quantiles.shape}", path)
    if not (np.isfinite(weight).all() and np.isfinite(bias).all() and np.isfinite(anchor).all()):
        raise InputError("motion style holds NaN or inf", path)
    return MotionStyle(weight, bias, anchor, str(path), pose_std, pose_speed, quantiles)


# ----------------------------------------------------------------------------------------------------------------------
# loading


@dataclass
class MotionModel:
    """Φ ready to run: network (eval), pose normalisation, reference settings."""

    net: torch.nn.Module
    pose_mean: np.ndarray
    pose_std: np.ndarray
    audio_rate: int
    fps: int
    smooth_taps: int
    tau: int
    config: dict


@dataclass
class ExpressionModel:
    """Ψ ready to run: network (eval), its expression PCA, reference settings."""

    net: torch.nn.Module
    pca: Any
    audio_rate: int
    fps: int
    keep_identity: bool
    config: dict


@dataclass
class GeneratorModel:
    """G (eval) and, for fine-tuning, D (``disc``: read on first use by :meth:`discriminator`); the image size and
    mouth-box margin G was trained with."""

    net: torch.nn.Module
    disc: torch.nn.Module | None
    image_size: int
    mouth_margin: float
    config: dict
    path: Path | None = None
    kwargs: dict = field(default_factory=dict)  # Generator(**kwargs) builds ``net``'s architecture
    frozen: torch.nn.Module | None = None  # ``net`` folded for generation (see :meth:`freeze`); made by load_generator

    def discriminator(self) -> torch.nn.Module | None:
        """D (eval mode, on G's device), read from the export on first use: only test-time fine-tuning needs it.
        None when the export has none."""
        if self.disc is None and self.path is not None:
            from ..models.checkpoint import load_export
            from ..models.discriminator import Discriminator

            export = load_export(self.path, stage="generator", device="cpu")
            disc_kwargs = export.meta.get("discriminator_kwargs") or export.config.get("disc")
            if disc_kwargs and "disc" in export.state_dicts:
                disc = _load_state(_build(Discriminator, disc_kwargs, self.path), export.state_dicts["disc"],
                                   self.path, "disc")
                self.disc = disc.to(next(self.net.parameters()).device).eval()
        return self.disc

    def freeze(self, net: torch.nn.Module | None = None) -> torch.nn.Module:
        """A generation-only copy of ``net`` (default: this G): spectral norm and BatchNorm folded into the convs
        and channels-last memory (:func:`rhythmhead.models.util.fold_for_inference`) — the same images, less time.
        The copy is built anew from ``kwargs`` (folding a deep copy would strip the original's spectral norm)."""
        from ..models.generator import Generator
        from ..models.util import fold_for_inference

        net = self.net if net is None else net
        device = next(net.parameters()).device
        copy = Generator(**self.kwargs)
        copy.load_state_dict(net.state_dict())
        return fold_for_inference(copy.to(device).eval())


@dataclass
class Bundle:
    """Every network inference needs, loaded once."""

    root: Path
    motion: MotionModel
    expression: ExpressionModel
    generator: GeneratorModel
    unprojection: torch.nn.Module | None = None
    style: MotionStyle | None = None
    mouth: torch.nn.Module | None = None
    ablations: dict[str, Path] = field(default_factory=dict)


def _load_state(module: torch.nn.Module, state: dict | None, path: Path, name: str) -> torch.nn.Module:
    if state is None:
        raise InputError(f"export lacks the '{name}' network", path)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"weights do not match the exported config ({str(exc).splitlines()[0][:120]})", path) from None
    return module


def _build(cls, kwargs: dict, path: Path):
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise InputError(f"exported config does not build {cls.__name__} ({exc})", path) from None


def load_motion(path: Path, device: str | torch.device = "cpu") -> MotionModel:
    """Φ from ``motion.safetensors``."""
    from ..models.checkpoint import load_export
    from ..models.motion import HeadMotionLearner

    export = load_export(path, stage="motion", device="cpu")
    if not {"pose_mean", "pose_std"} <= set(export.extra):
        raise InputError("motion export lacks the pose statistics (pose_mean, pose_std)", path)
    model_cfg = export.config.get("model", {})
    net = _load_state(_build(HeadMotionLearner, model_cfg, path), export.state_dicts.get("motion"), path, "motion")
    data = export.config.get("data", {})
    return MotionModel(net.to(device).eval(), export.extra["pose_mean"].numpy().astype(np.float32),
                       np.maximum(export.extra["pose_std"].numpy().astype(np.float32), 1e-6),
                       int(model_cfg.get("audio_rate", 16000)), int(model_cfg.get("fps", 25)),
                       int(data.get("smooth_taps", 11)), int(data.get("val_tau", 64)), export.config)


def load_expression(path: Path, device: str | torch.device = "cpu") -> ExpressionModel:
    """Ψ and its PCA from ``expression.safetensors``."""
    from ..data.pca import ExpressionPCA
    from ..models.checkpoint import load_export
    from ..models.expression import ExpressionLearner

    export = load_export(path, stage="expression", device="cpu")
    pca = ExpressionPCA.from_arrays({k[4:]: v for k, v in export.extra.items() if k.startswith("pca_")}, path)
    model_cfg = export.config.get("model", {})
    net = _load_state(_build(ExpressionLearner, model_cfg, path), export.state_dicts.get("expression"), path,
                      "expression")
    if net.n_components != pca.n_components:
        raise InputError(f"Ψ predicts {net.n_components} codes but its PCA has {pca.n_components}", path)
    data = export.config.get("data", {})
    return ExpressionModel(net.to(device).eval(), pca, int(model_cfg.get("audio_rate", 16000)),
                           int(model_cfg.get("fps", 25)), bool(data.get("reference_keeps_identity", True)),
                           export.config)


def load_generator(path: Path, device: str | torch.device = "cpu") -> GeneratorModel:
    """G from ``generator.safetensors`` (or an ablation's ``generator_<name>.safetensors``); D is read only when
    test-time fine-tuning asks for it (:meth:`GeneratorModel.discriminator`)."""
    from ..models.checkpoint import load_export
    from ..models.generator import Generator

    export = load_export(path, stage="generator", device="cpu")
    kwargs = export.meta.get("generator_kwargs") or export.config.get("model")
    if not kwargs:
        raise InputError("generator export has no generator_kwargs", path)
    net = _load_state(_build(Generator, kwargs, path), export.state_dicts.get("generator"), path, "generator")
    data = export.config.get("data", {})
    model = GeneratorModel(net.to(device).eval(), None, int(kwargs.get("image_size", 256)),
                           float(data.get("mouth_margin", 0.15)), export.meta, Path(path), dict(kwargs))
    model.frozen = model.freeze()
    return model


def load_unprojection(path: Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The unprojection network from ``unprojection.safetensors``."""
    from ..models.checkpoint import load_export
    from ..models.unprojection import UnprojectionNet

    export = load_export(path, stage="unprojection", device="cpu")
    net = _build(UnprojectionNet, export.config.get("model", {}), path)
    return _load_state(net, export.state_dicts.get("unprojection"), path, "unprojection").to(device).eval()


def load_mouth(path: Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The mouth synthesis network from ``mouth.safetensors``, folded for inference (channels-last)."""
    from ..models.checkpoint import load_export
    from ..models.mouth import MouthNet
    from ..models.util import fold_for_inference

    export = load_export(path, stage="mouth", device="cpu")
    net = _build(MouthNet, export.config.get("model", {}), path)
    return fold_for_inference(_load_state(net, export.state_dicts.get("mouth"), path, "mouth").to(device).eval())


def load_bundle(models_dir: str | Path | None = None, device: str | torch.device = "cpu",
                preset: str | None = None) -> Bundle:
    """Check then load every export of a bundle (see the module docstring).

    Raises:
        InputError: missing folder, missing/corrupt/wrong-stage checkpoint, weights that do not fit their config,
            a damaged motion style, or a style whose width does not match Φ.
    """
    root = resolve_models_dir(models_dir, preset)
    check_bundle(root)
    motion = load_motion(root / "motion.safetensors", device)
    expression = load_expression(root / "expression.safetensors", device)
    generator = load_generator(root / "generator.safetensors", device)
    unproj = None
    if (root / "unprojection.safetensors").is_file():
        unproj = load_unprojection(root / "unprojection.safetensors", device)
    style = None
    if (root / STYLE_FILE).is_file():
        style = load_style(root / STYLE_FILE)
        feature_dim = motion.net.encoder.feature_dim
        if style.weight.shape[0] != feature_dim:
            raise InputError(f"motion style is for a Φ with {style.weight.shape[0]} features, this Φ has "
                             f"{feature_dim} (rebuild it with tools/make_bundle.py)", root / STYLE_FILE)
    mouth = load_mouth(root / "mouth.safetensors", device) if (root / "mouth.safetensors").is_file() else None
    return Bundle(root, motion, expression, generator, unproj, style, mouth=mouth, ablations=ablation_paths(root))
