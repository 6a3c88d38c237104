"""Training task of the unprojection network (PRNet-style image → UV position map, REFERENCE.md §4).

Pairs come from :mod:`rhythmhead.training.unprojection_data` (crops and the position maps of their MediaPipe meshes,
speaker-disjoint train/val split). Loss: MSE on the position map inside the UV face mask, or PRNet's region-weighted MSE
(``loss.region_weighting``: 68 landmarks 16, eyes/nose/mouth 4, rest of the face 3, outside 0; normalised to mean 1).
Adam (PRNet: lr 1e-4, decayed by 0.5 every ``lr_half_every`` steps). With ``model.output: residual`` the network's
base map is set at build time to the mean position map of the training frames (saved with the weights).

Validation reports the position-map MSE and the 68-landmark error of the sampled vertices normalised by the
inter-ocular (outer eye corner) distance, ``nme68``.

    rhythmhead train unprojection --data /work/store --out runs/unprojection --preset fast
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ..config import bounded
from ..data.store import ClipStore, speaker_split
from ..errors import InputError
from ..face.landmarks import MESH_TO_68
from ..geometry.uv import denormalize_positions, face_uv, sample_vertices
from ..models.unprojection import UnprojectionNet, position_map_loss
from .task import TrainerConfig, TrainTask
from .unprojection_data import Augment, PositionMapFrames, face_mask, prnet_weights


@dataclass(frozen=True)
class UnprojectionModelConfig:
    """Exactly the keyword arguments of :class:`~rhythmhead.models.unprojection.UnprojectionNet`."""

    image_size: int = 256
    base_channels: int = 16
    output: str = "sigmoid"


@dataclass(frozen=True)
class UnprojectionOptimConfig:
    lr: float = bounded(1e-4, gt=0)
    betas: tuple[float, float] = bounded((0.9, 0.999), ge=0, lt=1)
    weight_decay: float = bounded(0.0, ge=0)
    lr_half_every: int = bounded(0, ge=0)  # steps between halvings of the learning rate (0 = constant)


@dataclass(frozen=True)
class UnprojectionLossConfig:
    region_weighting: bool = True  # PRNet's weight mask; False = plain MSE over the UV face mask


@dataclass(frozen=True)
class UnprojectionDataConfig:
    val_fraction: float = bounded(0.2, ge=0, le=1)  # speaker split
    split_seed: int = 0
    frame_stride: int = 5
    max_frames_per_clip: int = 48
    val_frame_stride: int = 10
    augment: Augment = field(default_factory=Augment)


@dataclass(frozen=True)
class UnprojectionConfig:
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    model: UnprojectionModelConfig = field(default_factory=UnprojectionModelConfig)
    optim: UnprojectionOptimConfig = field(default_factory=UnprojectionOptimConfig)
    loss: UnprojectionLossConfig = field(default_factory=UnprojectionLossConfig)
    data: UnprojectionDataConfig = field(default_factory=UnprojectionDataConfig)


def landmarks_from_maps(position_maps: torch.Tensor, crop_size: int = 256) -> torch.Tensor:
    """``(B, 3, S, S)`` normalised maps → ``(B, 68, 3)`` iBUG landmarks in crop pixels."""
    uv = face_uv().to(position_maps.device)[list(MESH_TO_68)]
    pts = sample_vertices(position_maps.permute(0, 2, 3, 1), uv)
    return denormalize_positions(pts, crop_size)


def nme68(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean 2-D landmark error ``(B,)`` over 68 points, divided by the outer-eye-corner distance (36–45)."""
    iod = (target[:, 36, :2] - target[:, 45, :2]).norm(dim=-1).clamp(min=1e-6)
    return (pred[..., :2] - target[..., :2]).norm(dim=-1).mean(-1) / iod


class UnprojectionTask(TrainTask):
    """PRNet-style unprojection on MediaPipe position maps (see the module docstring)."""

    stage = "unprojection"
    config_class = UnprojectionConfig

    def __init__(self, cfg: UnprojectionConfig, data_dir: str | None):
        super().__init__(cfg, data_dir)
        self.store = ClipStore(data_dir) if data_dir is not None else None
        self.device = torch.device("cpu")
        self._weights: torch.Tensor | None = None
        self._datasets: dict[str, PositionMapFrames] = {}

    # -- data -----------------------------------------------------------------------------------------------------
    def split(self, split: str) -> list[str]:
        if self.store is None:
            raise ValueError("this task has no data store")
        d = self.cfg.data
        train, val = speaker_split(self.store.manifest(), val_fraction=d.val_fraction, seed=d.split_seed)
        return train if split == "train" else val

    def dataset(self, split: str) -> PositionMapFrames:
        if split not in self._datasets:
            self._datasets[split] = self._make_dataset(split)
        return self._datasets[split]

    def _make_dataset(self, split: str) -> PositionMapFrames:
        d, ids = self.cfg.data, self.split(split)
        if split == "train" and not ids:
            raise InputError("no training clips in this store", self.data_dir)
        train = split == "train"
        return PositionMapFrames(self.store, ids, image_size=self.cfg.model.image_size,
                                 frame_stride=d.frame_stride if train else d.val_frame_stride,
                                 max_frames_per_clip=d.max_frames_per_clip, augment=d.augment if train else None)

    # -- networks -------------------------------------------------------------------------------------------------
    def build(self, device: torch.device) -> dict[str, torch.nn.Module]:
        self.device = torch.device(device)
        net = UnprojectionNet(**asdict(self.cfg.model))
        if self.cfg.model.output == "residual" and self.store is not None:
            train = self.dataset("train")  # the mean face of the training frames is the residual's base
            net.set_mean_map(train.target(train.meshes.mean(0)))
        self.modules = {"unprojection": net.to(self.device)}
        return self.modules

    def make_optimizers(self, modules):
        o = self.cfg.optim
        return {"unprojection": torch.optim.Adam(modules["unprojection"].parameters(), lr=o.lr, betas=tuple(o.betas),
                                                 weight_decay=o.weight_decay)}

    @property
    def weights(self) -> torch.Tensor:
        if self._weights is None:
            size = self.cfg.model.image_size
            w = prnet_weights(size) if self.cfg.loss.region_weighting else face_mask(size)
            self._weights = w.to(self.device)
        return self._weights

    # -- steps ----------------------------------------------------------------------------------------------------
    def _lr(self, step: int) -> float:
        o = self.cfg.optim
        return o.lr * (0.5 ** (step // o.lr_half_every) if o.lr_half_every > 0 else 1.0)

    def train_step(self, batch, step: int, optimizers) -> dict[str, float]:
        net = self.modules["unprojection"]
        net.train()
        opt = optimizers["unprojection"]
        for group in opt.param_groups:
            group["lr"] = self._lr(step)
        image = batch["image"].to(self.device, non_blocking=True)
        target = batch["position_map"].to(self.device, non_blocking=True)
        loss = position_map_loss(net(image), target, self.weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"Loss/position": loss.item()}

    @torch.no_grad()
    def validate(self, batches) -> dict[str, float]:
        net = self.modules["unprojection"]
        mse = err = 0.0
        n = 0
        mask = face_mask(self.cfg.model.image_size).to(self.device)
        for batch in batches:
            image, target = batch["image"].to(self.device), batch["position_map"].to(self.device)
            pred = net(image)
            mse += float(position_map_loss(pred, target, mask))
            err += float(nme68(landmarks_from_maps(pred), landmarks_from_maps(target)).mean())
            n += 1
        n = max(n, 1)
        return {"mse": mse / n, "nme68": err / n}
