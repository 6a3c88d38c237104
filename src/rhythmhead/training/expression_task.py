"""Training task of Ψ, the facial-expression learner (REFERENCE.md §3).

Loss: MSE on the PCA coefficients (with orthonormal components, this is the squared landmark error in pixels² inside the
PCA subspace). Adam with betas (0.5, 0.999); the paper's learning rate 2e-5 in the ``paper`` preset.

The expression PCA is fitted on the training speakers' frontal landmarks at start-up (or loaded from ``data.pca``, a
file written by ``rhythmhead fit-pca``), and exported with the weights (``pca_mean``, ``pca_components``,
``pca_template``, ``pca_explained_variance``), so inference needs only the export.

    rhythmhead train expression --data /work/store --out runs/expression --preset fast
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ..data.pca import ExpressionPCA
from ..errors import InputError
from ..models.expression import ExpressionLearner
from .learner_data import GAINS_DB, ExpressionFrames
from .learner_task import LearnerTask
from .task import TrainerConfig


@dataclass(frozen=True)
class ExpressionModelConfig:
    """Exactly the keyword arguments of :class:`~rhythmhead.models.expression.ExpressionLearner`."""

    audio_rate: int = 16000
    fps: int = 25
    conv_channels: tuple[int, ...] = (64, 64, 128, 128, 256, 256, 512)
    kernel_size: int = 21
    stride: int = 2
    feature_dim: int = 256
    n_components: int = 20
    dropout: float = 0.2


@dataclass(frozen=True)
class ExpressionOptimConfig:
    lr: float = 2e-5
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0


@dataclass(frozen=True)
class ExpressionDataConfig:
    pca: str = ""  # a PCA file from `rhythmhead fit-pca`; empty = fit on the training speakers at start-up
    smooth_taps: int = 5  # Hanning smoothing of the landmark tracks (REFERENCE.md §3)
    gains_db: tuple[float, ...] = GAINS_DB  # random training gains
    reference_keeps_identity: bool = True  # reference code of the closed-mouth frame with the identity kept
    val_fraction: float = 0.2  # speaker split (when folds = 0)
    split_seed: int = 0  # seed of the speaker split or of the folds
    folds: int = 0  # K ≥ 2: speaker-disjoint K-fold cross-validation, train on every fold but `fold` (0 = val_fraction)
    fold: int = 0  # the held-out fold, 0..K−1


@dataclass(frozen=True)
class ExpressionConfig:
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    model: ExpressionModelConfig = field(default_factory=ExpressionModelConfig)
    optim: ExpressionOptimConfig = field(default_factory=ExpressionOptimConfig)
    data: ExpressionDataConfig = field(default_factory=ExpressionDataConfig)


class ExpressionTask(LearnerTask):
    """Ψ with an MSE loss on PCA codes (see the module docstring)."""

    stage = "expression"
    config_class = ExpressionConfig

    def __init__(self, cfg: ExpressionConfig, data_dir: str | None):
        super().__init__(cfg, data_dir)
        self._pca: ExpressionPCA | None = None

    # -- data -----------------------------------------------------------------------------------------------------
    @property
    def pca(self) -> ExpressionPCA:
        """The expression PCA (loaded from ``data.pca`` or fitted on the training clips), checked against the model."""
        if self._pca is None:
            n = self.cfg.model.n_components
            if self.cfg.data.pca:
                pca = ExpressionPCA.load(self.cfg.data.pca)
            else:
                pca = ExpressionPCA.fit([c.frontal for c in self.clips("train")], n_components=n)
            if pca.n_components != n:
                raise InputError(f"PCA has {pca.n_components} components but model.n_components is {n}",
                                 self.cfg.data.pca or "data.pca")
            self._pca = pca
        return self._pca

    def dataset(self, split: str) -> ExpressionFrames:
        d = self.cfg.data
        return ExpressionFrames(self.clips(split), self.pca, train=split == "train", smooth_taps=d.smooth_taps,
                                gains_db=d.gains_db, reference_keeps_identity=d.reference_keeps_identity)

    # -- networks -------------------------------------------------------------------------------------------------
    def build(self, device: torch.device) -> dict[str, torch.nn.Module]:
        self.device = torch.device(device)
        self.modules = {"expression": ExpressionLearner(**asdict(self.cfg.model)).to(self.device)}
        return self.modules

    def make_optimizers(self, modules):
        o = self.cfg.optim
        return {"expression": torch.optim.Adam(modules["expression"].parameters(), lr=o.lr, betas=tuple(o.betas),
                                               weight_decay=o.weight_decay)}

    # -- steps ----------------------------------------------------------------------------------------------------
    def _unpack(self, batch):
        return (batch["audio"].to(self.device, non_blocking=True), batch["ref_code"].to(self.device, non_blocking=True),
                batch["code"].to(self.device, non_blocking=True))

    def train_step(self, batch, step: int, optimizers) -> dict[str, float]:
        net = self.modules["expression"]
        net.train()
        audio, ref_code, code = self._unpack(batch)
        loss = F.mse_loss(net(audio, ref_code), code)
        optimizers["expression"].zero_grad(set_to_none=True)
        loss.backward()
        optimizers["expression"].step()
        return {"Loss/mse": loss.item()}

    @torch.no_grad()
    def validate(self, batches) -> dict[str, float]:
        net = self.modules["expression"]
        was_training = net.training
        net.eval()
        mse = base = 0.0
        n = 0
        for batch in batches:
            audio, ref_code, code = self._unpack(batch)
            mse += float(F.mse_loss(net(audio, ref_code), code))
            base += float(code.pow(2).mean())  # the mean-expression (zero code) baseline
            n += 1
        net.train(was_training)
        n = max(n, 1)
        return {"mse": mse / n, "mse_zero_code": base / n}

    # -- export ---------------------------------------------------------------------------------------------------
    def export_extra(self) -> dict[str, torch.Tensor]:
        if self.data_dir is None and self._pca is None:
            return {}
        return {f"pca_{k}": torch.from_numpy(v.copy()) for k, v in self.pca.arrays().items()}
