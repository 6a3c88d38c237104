"""Training task of the generator G and its discriminator D (REFERENCE.md §5.7–§5.10).

Per batch: one G step (hinge GAN + 10·feature matching + reconstruction L1 + 1 − SSIM + 10·warp + 10·flow against the
mesh pseudo-ground-truth, + 10·VGG19 when ``vgg_weights`` is given; on the final and the raw image), then one D step
(hinge), both in :func:`rhythmhead.models.losses.gan_step` (shared with test-time fine-tuning). Adam with TTUR
(G 2e-4, D 8e-4, betas (0, 0.999)). The ``ablation`` field maps onto G's switches
(:data:`rhythmhead.models.generator.ABLATIONS`). The export holds G and D (D for test-time fine-tuning,
:func:`rhythmhead.models.finetune.finetune`) and, in its JSON, the resolved ``generator_kwargs`` / ``discriminator_kwargs``.

    rhythmhead train generator --data /work/store --out runs/generator --preset fast
    rhythmhead train generator --data /work/store --out runs/gen_noatt --preset fast --ablation no_attention
    torchrun --standalone --nproc_per_node 2 -m rhythmhead train generator --data STORE --out RUN --preset paper --device cuda
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from ..config import bounded
from ..errors import InputError
from ..models.discriminator import Discriminator
from ..models.generator import ABLATIONS, Generator, apply_ablation
from ..models.losses import VGG19Features, gan_step, image_scores
from . import distributed
from .generator_data import GeneratorDataConfig, GeneratorDataset, open_stores, split_clips
from .task import TrainerConfig, TrainTask


@dataclass(frozen=True)
class GeneratorModelConfig:
    """Exactly the keyword arguments of :class:`~rhythmhead.models.generator.Generator` (before the ablation)."""

    image_size: int = 256
    ngf: int = 32
    n_downsample: int = 5
    max_channels: int = 1024
    n_adaptive_layers: int = 4
    n_fc_layers: int = 2
    fc_hidden: int = 256
    n_downsample_attn: int = 2
    attn_channels: int = 32
    n_composition_layers: int = 2
    attention: Literal["hybrid", "mean"] = "hybrid"
    composition: Literal["nonlinear", "linear"] = "nonlinear"
    warp: bool = True
    render3d: bool = True
    flow_ngf: int = 32
    flow_n_downsample: int = 3
    flow_n_blocks: int = 6
    flow_max_channels: int = 256
    flow_input_scale: int = 1
    norm: Literal["batch", "instance"] = "batch"
    spectral: bool = True
    spade_hidden: int = 64
    spade_kernel: int = 1


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Exactly the keyword arguments of :class:`~rhythmhead.models.discriminator.Discriminator`."""

    in_channels: int = 8
    ndf: int = 32
    n_layers: int = 4
    max_channels: int = 512
    spectral: bool = True


@dataclass(frozen=True)
class GeneratorLossConfig:
    gan: float = bounded(1.0, ge=0)  # hinge GAN (image + raw)
    feat: float = bounded(10.0, ge=0)  # feature matching
    vgg: float = bounded(10.0, ge=0)  # perceptual (only with vgg_weights)
    flow: float = bounded(10.0, ge=0)  # flow L1 against the mesh pseudo-GT
    warp: float = bounded(10.0, ge=0)  # warped reference / render against the target
    rec: float = bounded(1.0, ge=0)  # L1 + (1 − SSIM)
    raw: float = bounded(1.0, ge=0)  # multiplier of the raw image's GAN / rec / vgg terms


@dataclass(frozen=True)
class GeneratorOptimConfig:
    lr_g: float = bounded(2e-4, gt=0)
    lr_d: float = bounded(8e-4, gt=0)
    betas: tuple[float, float] = bounded((0.0, 0.999), ge=0, lt=1)


@dataclass(frozen=True)
class GeneratorConfig:
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    model: GeneratorModelConfig = field(default_factory=GeneratorModelConfig)
    disc: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: GeneratorLossConfig = field(default_factory=GeneratorLossConfig)
    optim: GeneratorOptimConfig = field(default_factory=GeneratorOptimConfig)
    data: GeneratorDataConfig = field(default_factory=GeneratorDataConfig)
    ablation: Literal[tuple(ABLATIONS)] = "none"  # a name of models.generator.ABLATIONS (checked on load)
    vgg_weights: str = ""  # user-supplied VGG19 state_dict (.pth/.safetensors); empty = no perceptual loss
    finetune_steps: int = bounded(70, ge=0)  # test-time fine-tuning steps inference uses by default (0 = none)
    sync_bn: bool = False  # SyncBatchNorm in G under DDP on CUDA (ignored on CPU)
    amp: bool = False  # bfloat16 autocast on CUDA
    # Warm-start G and D from a generator export (run folder or .safetensors): every tensor with the same name and shape
    # is copied (an export at another resolution or without an ablation's branches fits); empty = random.
    init_from: str = ""


def generator_kwargs(cfg: GeneratorConfig) -> dict:
    """G's constructor kwargs: the ``model`` fields with the ablation's switches applied (ValueError for an unknown
    one, :func:`~rhythmhead.models.generator.apply_ablation`)."""
    return apply_ablation(asdict(cfg.model), cfg.ablation)


def _unwrap(module):
    return getattr(module, "module", module)


G_KEYS = ("ref_images", "ref_labels", "target_label", "warp_ref_image", "warp_ref_label", "render_image",
          "render_label")


class GeneratorTask(TrainTask):
    """G + D (see the module docstring)."""

    stage = "generator"
    config_class = GeneratorConfig

    def __init__(self, cfg: GeneratorConfig, data_dir: str | None):
        super().__init__(cfg, data_dir)
        generator_kwargs(cfg)  # an unknown ablation (user input is checked on load; this guards code) → ValueError
        self.device = torch.device("cpu")
        self.vgg: VGG19Features | None = VGG19Features.from_file(cfg.vgg_weights) if cfg.vgg_weights else None
        self._stores = open_stores(data_dir, cfg.data.extra_stores) if data_dir is not None else None
        self._split = None

    # -- data -----------------------------------------------------------------------------------------------------
    def dataset(self, split: str) -> GeneratorDataset:
        if self._stores is None:
            raise ValueError("this task has no data store")
        if self._split is None:
            self._split = split_clips(self._stores, self.cfg.data.val_fraction, self.cfg.trainer.seed)
        train, val = self._split
        clips = train if split == "train" else (val or train)
        return GeneratorDataset(self._stores, clips, self.cfg.data, seed=self.cfg.trainer.seed + (split != "train"),
                                augment=split == "train")

    # -- networks -------------------------------------------------------------------------------------------------
    def build(self, device: torch.device) -> dict[str, torch.nn.Module]:
        self.device = torch.device(device)
        gen = Generator(**generator_kwargs(self.cfg))
        if self.cfg.sync_bn and distributed.world_size() > 1:
            if self.device.type == "cuda":
                gen = torch.nn.SyncBatchNorm.convert_sync_batchnorm(gen)
            else:  # PyTorch's SyncBatchNorm runs on GPUs only
                warnings.warn("sync_bn ignored: SyncBatchNorm needs CUDA; using per-process BatchNorm")
        disc = Discriminator(**asdict(self.cfg.disc))
        if self.cfg.init_from:
            from ..models.checkpoint import load_export, load_matching

            export = load_export(self.cfg.init_from, stage="generator")
            for name, net in (("generator", gen), ("disc", disc)):
                own = net.state_dict()
                fresh = load_matching(net, export.state_dicts.get(name, {}))
                if 2 * sum(own[k].numel() for k in fresh) > sum(v.numel() for v in own.values()):
                    raise InputError(f"init_from: the export fits under half of this config's {name} weights "
                                     "(an export of another preset or network?)", self.cfg.init_from)
                if fresh:
                    warnings.warn(f"init_from: {len(fresh)} of {len(own)} {name} tensors have no "
                                  f"match in the export and keep their random initialisation")
        self.modules = {"generator": gen.to(self.device), "disc": disc.to(self.device)}
        if self.vgg is not None:
            self.vgg = self.vgg.to(self.device)
        return self.modules

    def make_optimizers(self, modules):
        o = self.cfg.optim
        return {"generator": torch.optim.Adam(modules["generator"].parameters(), lr=o.lr_g, betas=tuple(o.betas)),
                "disc": torch.optim.Adam(modules["disc"].parameters(), lr=o.lr_d, betas=tuple(o.betas))}

    # -- steps ----------------------------------------------------------------------------------------------------
    def _autocast(self):
        enabled = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _generate(self, gen, batch, need_raw: bool):
        with self._autocast():
            out = gen(*(batch[k] for k in G_KEYS), mouth_mask=batch.get("mouth_mask"), need_raw=need_raw)
        return {k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in out.items()}

    def train_step(self, batch, step: int, optimizers) -> dict[str, float]:
        gen, disc = self.modules["generator"], self.modules["disc"]
        gen.train()
        disc.train()
        out = self._generate(gen, batch, need_raw=True)
        terms = gan_step(out, batch, disc, (optimizers["generator"], optimizers["disc"]), asdict(self.cfg.loss),
                         self.vgg, autocast=self._autocast)
        stats = {f"Loss/{k}": v for k, v in terms.items()}
        stats["Train/l1"] = float(F.l1_loss(out["image"].detach(), batch["target_image"]))
        return stats

    @torch.no_grad()
    def validate(self, batches) -> dict[str, float]:
        gen = self.modules["generator"]
        was_training = gen.training
        gen.eval()
        sums: dict[str, float] = {}
        n = 0
        for batch in batches:
            out = self._generate(_unwrap(gen), batch, need_raw=False)
            image, target = out["image"], batch["target_image"]
            vals = {"l1": float(F.l1_loss(image, target)), **image_scores(image, target)}  # as evaluate scores
            if out.get("warped_ref") is not None:
                vals["warp_l1"] = float(F.l1_loss(out["warped_ref"], target))
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
        gen.train(was_training)
        return {k: v / max(n, 1) for k, v in sums.items()}

    # -- export ---------------------------------------------------------------------------------------------------
    def export_modules(self):
        return {k: _unwrap(m) for k, m in self.modules.items()}

    def export_config(self):
        out = super().export_config()
        out["generator_kwargs"] = generator_kwargs(self.cfg)
        out["discriminator_kwargs"] = asdict(self.cfg.disc)
        if self._stores is not None:  # the speaker split, so that evaluation scores held-out clips only
            if self._split is None:
                self._split = split_clips(self._stores, self.cfg.data.val_fraction, self.cfg.trainer.seed)
            out["split"] = {"stores": [str(st.root.resolve()) for st in self._stores],
                            "train": [[i, c] for i, c in self._split[0]], "val": [[i, c] for i, c in self._split[1]]}
        return out
