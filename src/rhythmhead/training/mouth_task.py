"""Training task of the mouth synthesis network (:mod:`rhythmhead.models.mouth`), for photo references.

Samples (:class:`MouthCrops`): a target frame of a clip, and a *reference* frame of the same clip with a closed mouth
(the situation of a photo: one neutral mouth), at least ``min_gap`` frames away; the inputs are
:func:`rhythmhead.geometry.mouth.mouth_inputs` of the reference for the target's landmarks — exactly what inference
computes — and the target is the real mouth crop of the target frame (the same crop, from the target frame itself).
Training clips get a random scale (± 10 %) and shift (± 4 % of the crop) of the crop and a horizontal flip.

Loss: L1 inside the soft lip mask (× ``loss.l1``), plus, with ``loss.adv`` > 0, a hinge PatchGAN (spectral norm,
:class:`rhythmhead.models.discriminator.Discriminator`) on (crop, label) pairs, which is what puts edges on teeth and
lips that an L1 loss alone averages away. D sees the crop as inference makes it — the prediction blended into the
real crop through the mask — so only the mouth itself is judged. Adam.

    rhythmhead train mouth --data /work/store --out runs/mouth --preset fast
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..config import bounded
from ..data.store import ClipStore, speaker_split
from ..errors import InputError
from ..geometry.mouth import mouth_inputs
from ..geometry.pose import mouth_openness
from ..models.discriminator import Discriminator
from ..models.losses import hinge_d, hinge_g
from ..models.mouth import MouthNet
from .task import TrainerConfig, TrainTask


@dataclass(frozen=True)
class MouthModelConfig:
    """Exactly the keyword arguments of :class:`~rhythmhead.models.mouth.MouthNet`."""

    image_size: int = 128
    ngf: int = 32
    n_down: int = 4
    max_channels: int = 256


@dataclass(frozen=True)
class MouthDiscConfig:
    ndf: int = 32
    n_layers: int = 3


@dataclass(frozen=True)
class MouthLossConfig:
    l1: float = bounded(10.0, ge=0)
    adv: float = bounded(1.0, ge=0)


@dataclass(frozen=True)
class MouthOptimConfig:
    lr_g: float = bounded(2e-4, gt=0)
    lr_d: float = bounded(2e-4, gt=0)
    betas: tuple[float, float] = bounded((0.5, 0.999), ge=0, lt=1)


@dataclass(frozen=True)
class MouthDataConfig:
    val_fraction: float = bounded(0.2, ge=0, le=1)  # speaker split (the same as the other stages' at the same seed)
    split_seed: int = 0
    min_gap: int = 10  # frames between the reference and the target
    # reference frames: mouth opening within this lowest fraction of the clip's
    closed_quantile: float = bounded(0.3, ge=0, le=1)


@dataclass(frozen=True)
class MouthConfig:
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    model: MouthModelConfig = field(default_factory=MouthModelConfig)
    disc: MouthDiscConfig = field(default_factory=MouthDiscConfig)
    loss: MouthLossConfig = field(default_factory=MouthLossConfig)
    optim: MouthOptimConfig = field(default_factory=MouthOptimConfig)
    data: MouthDataConfig = field(default_factory=MouthDataConfig)


def to_net(image: np.ndarray) -> torch.Tensor:
    """``(S, S, 3)`` uint8 → ``(3, S, S)`` float32 in [−1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0


class MouthCrops(torch.utils.data.Dataset):
    """Mouth-crop samples of a list of clips (see the module docstring): dicts of ``reference (3,S,S)``, ``label
    (1,S,S)``, ``mask (1,S,S)``, ``target (3,S,S)``. Index ``i`` maps to a fixed (clip, target) pair; the reference and
    (for training) the augmentation are drawn from a generator seeded by ``i``, so a sample is reproducible."""

    def __init__(self, store: ClipStore, ids: list[str], *, size: int, train: bool, min_gap: int = 10,
                 closed_quantile: float = 0.3, seed: int = 0):
        self.size, self.train, self.min_gap, self.seed = int(size), bool(train), int(min_gap), int(seed)
        self.clips = []
        for cid in ids:
            frames, track = store.frames(cid), store.track(cid)
            opening = mouth_openness(track["frontal"])
            closed = np.where(opening <= np.quantile(opening, closed_quantile))[0]
            self.clips.append((frames, np.asarray(track["landmarks"], np.float32), closed))
        self.index = [(c, t) for c, (frames, _, _) in enumerate(self.clips) for t in range(len(frames))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        c, t = self.index[i]
        frames, lmk, closed = self.clips[c]
        rng = np.random.default_rng((self.seed, i) if self.train else (self.seed, i, 0))
        far = closed[np.abs(closed - t) >= self.min_gap]
        pool = far if len(far) else closed
        r = int(pool[rng.integers(len(pool))]) if len(pool) else int(t)
        target_lmk = lmk[t]
        crop_lmk = target_lmk
        if self.train:  # jitter the crop: the landmarks it is cut around move (scale about the mouth, shift)
            centre = target_lmk[48:68, :2].mean(0)
            width = np.linalg.norm(target_lmk[54, :2] - target_lmk[48, :2])
            shift = rng.uniform(-0.04, 0.04, 2) * 2.2 * width
            xy = (target_lmk[:, :2] - centre) * rng.uniform(0.9, 1.1) + centre + shift
            crop_lmk = np.concatenate([xy, target_lmk[:, 2:]], 1)
        # the inputs as inference makes them, and the real mouth of the target frame seen through the same crop (a
        # similarity of the frame when jittered, so its lips land where crop_lmk says)
        inputs = mouth_inputs(frames[r], lmk[r], crop_lmk, self.size)
        crop = mouth_inputs(frames[t], target_lmk, crop_lmk, self.size)
        sample = {"reference": to_net(inputs["reference"]), "label": torch.from_numpy(inputs["label"])[None],
                  "mask": torch.from_numpy(inputs["mask"])[None], "target": to_net(crop["reference"])}
        if self.train and rng.random() < 0.5:
            sample = {k: v.flip(-1) for k, v in sample.items()}
        return sample


class MouthTask(TrainTask):
    """The mouth network with L1 + hinge GAN (see the module docstring)."""

    stage = "mouth"
    config_class = MouthConfig

    def __init__(self, cfg: MouthConfig, data_dir: str | None):
        super().__init__(cfg, data_dir)
        self.store = ClipStore(data_dir) if data_dir is not None else None
        self.device = torch.device("cpu")

    def dataset(self, split: str) -> MouthCrops:
        if self.store is None:
            raise ValueError("this task has no data store")
        d = self.cfg.data
        train, val = speaker_split(self.store.manifest(), d.val_fraction, d.split_seed)
        ids = train if split == "train" else val
        if not ids:
            raise InputError(f"no {split} clips in this store (the speaker split needs two or more speakers)",
                             self.data_dir)
        return MouthCrops(self.store, ids, size=self.cfg.model.image_size, train=split == "train",
                          min_gap=d.min_gap, closed_quantile=d.closed_quantile, seed=self.cfg.trainer.seed)

    def build(self, device: torch.device) -> dict[str, torch.nn.Module]:
        self.device = torch.device(device)
        self.modules = {"mouth": MouthNet(**asdict(self.cfg.model)).to(self.device),
                        "disc": Discriminator(in_channels=4, **asdict(self.cfg.disc)).to(self.device)}
        return self.modules

    def make_optimizers(self, modules):
        o = self.cfg.optim
        return {"mouth": torch.optim.Adam(modules["mouth"].parameters(), lr=o.lr_g, betas=tuple(o.betas)),
                "disc": torch.optim.Adam(modules["disc"].parameters(), lr=o.lr_d, betas=tuple(o.betas))}

    def _unpack(self, batch):
        return [batch[k].to(self.device, non_blocking=True) for k in ("reference", "label", "mask", "target")]

    def train_step(self, batch, step: int, optimizers) -> dict[str, float]:
        net, disc = self.modules["mouth"], self.modules["disc"]
        net.train()
        reference, label, mask, target = self._unpack(batch)
        pred = net(reference, label)
        l1 = ((pred - target).abs() * mask).sum() / (mask.sum() * 3).clamp_min(1.0)
        loss = self.cfg.loss.l1 * l1
        stats = {"Loss/l1": l1.item()}
        adv = self.cfg.loss.adv
        blended = pred * mask + target * (1 - mask)  # what inference pastes
        if adv > 0:
            fake_logits, _ = disc(torch.cat([blended, label], 1))
            g_adv = hinge_g(fake_logits)
            loss = loss + adv * g_adv
            stats["Loss/g_adv"] = g_adv.item()
        optimizers["mouth"].zero_grad(set_to_none=True)
        loss.backward()
        optimizers["mouth"].step()
        if adv > 0:
            real_logits, _ = disc(torch.cat([target, label], 1))
            fake_logits, _ = disc(torch.cat([blended.detach(), label], 1))
            d_loss = hinge_d(real_logits, fake_logits)
            optimizers["disc"].zero_grad(set_to_none=True)
            d_loss.backward()
            optimizers["disc"].step()
            stats["Loss/d"] = d_loss.item()
        return stats

    @torch.no_grad()
    def validate(self, batches) -> dict[str, float]:
        """Masked L1 of the network and of the warped reference alone (the baseline it must beat)."""
        net = self.modules["mouth"]
        was = net.training
        net.eval()
        l1 = base = 0.0
        n = 0
        for batch in batches:
            reference, label, mask, target = self._unpack(batch)
            norm = (mask.sum() * 3).clamp_min(1.0)
            l1 += float(((net(reference, label) - target).abs() * mask).sum() / norm)
            base += float(((reference - target).abs() * mask).sum() / norm)
            n += 1
        net.train(was)
        n = max(n, 1)
        return {"l1": l1 / n, "l1_reference": base / n}
