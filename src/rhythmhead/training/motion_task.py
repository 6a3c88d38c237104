"""Training task of Φ, the head-motion learner (REFERENCE.md §2.4).

Losses: MSE between predicted and real normalised poses of the T−τ extrapolated frames, plus ``adv_weight`` times the
non-saturating adversarial term of the moments discriminator (:class:`~rhythmhead.models.motion.MotionDiscriminator`),
which is itself trained every step with BCE on real vs predicted windows. The paper describes the GAN; the released
code never passes the adversarial term to the generator and its weight is unknown — see ``adv_weight`` in the presets.

Adam (lr 3e-4, weight decay 2e-5) for both networks, as §2.4; the learning rate is constant (the paper's epoch-based
halving is left to a schedule hook). Poses are normalised per dimension with the mean/std of the *training* store's
smoothed poses, exported beside the weights as ``pose_mean``/``pose_std``.

    rhythmhead train motion --data /work/store --out runs/motion --preset fast
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..config import bounded
from ..models.motion import HeadMotionLearner, MotionDiscriminator
from .learner_data import MotionWindows, pose_statistics
from .learner_task import LearnerTask
from .task import TrainerConfig


@dataclass(frozen=True)
class MotionModelConfig:
    """Exactly the keyword arguments of :class:`~rhythmhead.models.motion.HeadMotionLearner`."""

    audio_rate: int = 16000
    fps: int = 25
    conv_channels: tuple[int, int] = (8, 16)
    conv_strides: tuple[int, int] = (1, 1)
    hidden_channels: int = 512
    feature_dim: int = 256
    pose_hidden: int = 128
    encoder_channels: int = 512
    dropout: float = 0.1


@dataclass(frozen=True)
class MotionOptimConfig:
    lr: float = bounded(3e-4, gt=0)  # Adam learning rate of Φ and of the discriminator
    weight_decay: float = bounded(2e-5, ge=0)
    betas: tuple[float, float] = bounded((0.9, 0.999), ge=0, lt=1)


@dataclass(frozen=True)
class MotionDataConfig:
    tau_min: int = 32  # reference frames τ ~ U{tau_min..tau_max} in training
    tau_max: int = 96
    pred_min: int = 16  # predicted frames T−τ ~ U{pred_min..pred_max} in training
    pred_max: int = 96
    val_tau: int = 64  # validation/evaluation windows
    val_pred: int = 64
    smooth_taps: int = 11  # Hanning smoothing of the pose channels (REFERENCE.md §2.1)
    frames_per_item: int = 64  # a clip is drawn once per this many of its frames per epoch
    val_fraction: float = bounded(0.2, ge=0, le=1)  # speaker split (when folds = 0)
    split_seed: int = 0  # seed of the speaker split or of the folds
    # K ≥ 2: speaker-disjoint K-fold cross-validation, train on every fold but `fold` (0 = val_fraction)
    folds: int = bounded(0, ge=0)
    fold: int = bounded(0, ge=0)  # the held-out fold, 0..K−1


@dataclass(frozen=True)
class MotionConfig:
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    model: MotionModelConfig = field(default_factory=MotionModelConfig)
    optim: MotionOptimConfig = field(default_factory=MotionOptimConfig)
    data: MotionDataConfig = field(default_factory=MotionDataConfig)
    # weight of the adversarial term in Φ's loss (0 = the released code's pure MSE); presets set it
    adv_weight: float = bounded(0.1, ge=0)


def _unwrap(module):
    return getattr(module, "module", module)


class MotionTask(LearnerTask):
    """Φ + moments discriminator (see the module docstring)."""

    stage = "motion"
    config_class = MotionConfig

    def __init__(self, cfg: MotionConfig, data_dir: str | None):
        super().__init__(cfg, data_dir)
        self._stats: tuple[np.ndarray, np.ndarray] | None = None

    # -- data -----------------------------------------------------------------------------------------------------
    def pose_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension ``(mean, std)`` of the training clips' smoothed poses."""
        if self._stats is None:
            self._stats = pose_statistics(self.clips("train"), self.cfg.data.smooth_taps)
        return self._stats

    def dataset(self, split: str) -> MotionWindows:
        d = self.cfg.data
        mean, std = self.pose_stats()
        return MotionWindows(self.clips(split), mean, std, train=split == "train", tau_range=(d.tau_min, d.tau_max),
                             pred_range=(d.pred_min, d.pred_max), val_tau=d.val_tau, val_pred=d.val_pred,
                             smooth_taps=d.smooth_taps, frames_per_item=d.frames_per_item)

    def collate(self, items):
        return MotionWindows.collate(items)

    # -- networks -------------------------------------------------------------------------------------------------
    def build(self, device: torch.device) -> dict[str, torch.nn.Module]:
        self.device = torch.device(device)
        self.modules = {"motion": HeadMotionLearner(**asdict(self.cfg.model)).to(self.device),
                        "disc": MotionDiscriminator().to(self.device)}
        return self.modules

    def make_optimizers(self, modules):
        o = self.cfg.optim
        return {name: torch.optim.Adam(modules[name].parameters(), lr=o.lr, betas=tuple(o.betas),
                                       weight_decay=o.weight_decay) for name in ("motion", "disc")}

    # -- steps ----------------------------------------------------------------------------------------------------
    def _unpack(self, batch):
        audio = batch["audio"].to(self.device, non_blocking=True)
        pose = batch["pose"].to(self.device, non_blocking=True)
        return audio, pose, int(batch["tau"])

    def train_step(self, batch, step: int, optimizers) -> dict[str, float]:
        net, disc = self.modules["motion"], self.modules["disc"]
        net.train()
        disc.train()
        audio, pose, tau = self._unpack(batch)
        real = pose[:, tau:]
        pred = net(audio, pose[:, :tau])

        stats: dict[str, float] = {}
        adversarial = self.cfg.adv_weight > 0 and real.shape[1] >= 2  # the statistics need two frames
        if adversarial:
            # D: one call on real and fake together (a single DDP forward per backward)
            logits = disc(torch.cat([real, pred.detach()]))
            target = torch.cat([torch.ones(len(real)), torch.zeros(len(real))]).to(logits)
            loss_d = F.binary_cross_entropy_with_logits(logits, target)
            optimizers["disc"].zero_grad(set_to_none=True)
            loss_d.backward()
            optimizers["disc"].step()
            stats["Loss/disc"] = loss_d.item()
            stats["Disc/acc"] = float(((logits > 0).float() == target).float().mean())

        mse = F.mse_loss(pred, real)
        loss = mse
        if adversarial:
            raw_disc = _unwrap(disc)
            raw_disc.requires_grad_(False)  # G's term must not touch D's gradients (nor DDP's hooks on them)
            adv = F.binary_cross_entropy_with_logits(raw_disc(pred), torch.ones(len(pred), device=pred.device))
            raw_disc.requires_grad_(True)
            loss = mse + self.cfg.adv_weight * adv
            stats["Loss/adv"] = adv.item()
        optimizers["motion"].zero_grad(set_to_none=True)
        loss.backward()
        optimizers["motion"].step()
        stats["Loss/mse"] = mse.item()
        stats["Loss/total"] = loss.item()
        return stats

    @torch.no_grad()
    def validate(self, batches) -> dict[str, float]:
        net = self.modules["motion"]
        was_training = net.training
        net.eval()
        std = torch.as_tensor(self.pose_stats()[1], device=self.device)
        sums = {"mse": 0.0, "l1_rot_deg": 0.0, "l1_trans_px": 0.0, "std_ratio": 0.0}
        n = 0
        for batch in batches:
            audio, pose, tau = self._unpack(batch)
            real = pose[:, tau:]
            pred = net(audio, pose[:, :tau])
            err = ((pred - real) * std).abs().mean(dim=(0, 1))  # (6,) in rad / px
            sums["mse"] += float(F.mse_loss(pred, real))
            sums["l1_rot_deg"] += float(err[:3].mean()) * 180.0 / np.pi
            sums["l1_trans_px"] += float(err[3:].mean())
            if pred.shape[1] > 1:
                sums["std_ratio"] += float((pred.std(dim=1).mean() / real.std(dim=1).mean().clamp_min(1e-6)))
            n += 1
        net.train(was_training)
        return {k: v / max(n, 1) for k, v in sums.items()}

    # -- export ---------------------------------------------------------------------------------------------------
    def export_extra(self) -> dict[str, torch.Tensor]:
        if self.data_dir is None and self._stats is None:
            return {}
        mean, std = self.pose_stats()
        return {"pose_mean": torch.from_numpy(mean.copy()), "pose_std": torch.from_numpy(std.copy())}
