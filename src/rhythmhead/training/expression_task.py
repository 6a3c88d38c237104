"""Training task of Ψ, the facial-expression learner (REFERENCE.md §3).

Loss: ``loss.code_mse`` × MSE on the PCA coefficients (the paper's loss; with orthonormal components, the squared
landmark error in pixels² inside the PCA subspace) + ``loss.mouth_l1`` × the mean absolute error in pixels of the mouth
landmarks (48–67) decoded through the PCA. Adam with betas (0.5, 0.999); the paper's learning rate 2e-5 in the ``paper``
preset.

The expression PCA is fitted on the training speakers' frontal landmarks at start-up (or loaded from ``data.pca``, a
file written by ``rhythmhead fit-pca``), and exported with the weights (``pca_mean``, ``pca_components``,
``pca_template``, ``pca_explained_variance``), so inference needs only the export.

    rhythmhead train expression --data /work/store --out runs/expression --preset fast
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..config import bounded
from ..data.pca import INNER_LIP_PAIRS, ExpressionPCA
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
    frontend: str = "raw"  # "raw" (paper: convs over the waveform) or "mel" (log-mel computed inside the network)
    n_mels: int = 40
    residual: bool = False  # code = reference code + the network's output


@dataclass(frozen=True)
class ExpressionLossConfig:
    code_mse: float = bounded(1.0, ge=0)  # weight of the MSE on the PCA codes (the paper's loss)
    # weight of the L1 (px) on the mouth landmarks (48–67) decoded through the PCA
    mouth_l1: float = bounded(0.0, ge=0)
    # weight of the L1 (px) on the mouth opening (inner-lip gap, data.pca.open_rate) decoded
    open_l1: float = bounded(0.0, ge=0)


@dataclass(frozen=True)
class ExpressionOptimConfig:
    lr: float = bounded(2e-5, gt=0)
    betas: tuple[float, float] = bounded((0.5, 0.999), ge=0, lt=1)
    weight_decay: float = bounded(0.0, ge=0)


@dataclass(frozen=True)
class ExpressionDataConfig:
    pca: str = ""  # a PCA file from `rhythmhead fit-pca`; empty = fit on the training speakers at start-up
    smooth_taps: int = 5  # Hanning smoothing of the landmark tracks (REFERENCE.md §3)
    gains_db: tuple[float, ...] = GAINS_DB  # random training gains
    reference_keeps_identity: bool = True  # reference code of the closed-mouth frame with the identity kept
    val_fraction: float = bounded(0.2, ge=0, le=1)  # speaker split (when folds = 0)
    split_seed: int = 0  # seed of the speaker split or of the folds
    # K ≥ 2: speaker-disjoint K-fold cross-validation, train on every fold but `fold` (0 = val_fraction)
    folds: int = bounded(0, ge=0)
    fold: int = bounded(0, ge=0)  # the held-out fold, 0..K−1


@dataclass(frozen=True)
class ExpressionConfig:
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    model: ExpressionModelConfig = field(default_factory=ExpressionModelConfig)
    optim: ExpressionOptimConfig = field(default_factory=ExpressionOptimConfig)
    loss: ExpressionLossConfig = field(default_factory=ExpressionLossConfig)
    data: ExpressionDataConfig = field(default_factory=ExpressionDataConfig)


class ExpressionTask(LearnerTask):
    """Ψ with an MSE loss on PCA codes (see the module docstring)."""

    stage = "expression"
    config_class = ExpressionConfig

    def __init__(self, cfg: ExpressionConfig, data_dir: str | None):
        super().__init__(cfg, data_dir)
        self._pca: ExpressionPCA | None = None
        self._mouth_components: torch.Tensor | None = None  # (n, 40): the PCA components at the mouth's x,y
        self._lip_gap: tuple[torch.Tensor, torch.Tensor] | None = None  # components, mean of the inner-lip differences

    # -- data -----------------------------------------------------------------------------------------------------
    @property
    def pca(self) -> ExpressionPCA:
        """The expression PCA (loaded from ``data.pca`` or fitted on the training clips), checked against the model."""
        if self._pca is None:
            n = self.cfg.model.n_components
            if self.data_dir is None and not self.cfg.data.pca:  # data-free runs (bench.train): a stand-in basis for
                eye = np.eye(136, dtype=np.float32)[:n]          # the decoded losses, never exported
                self._pca = ExpressionPCA(mean=np.zeros(136, np.float32), components=eye,
                                          template=np.zeros((68, 3), np.float32),
                                          explained_variance=np.ones(n, np.float32))
                return self._pca
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

    def _mouth_l1(self, pred: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """Mean absolute x,y error (px) of the mouth landmarks 48–67 decoded from the codes (the decoding is linear,
        so the code difference through the components is the landmark difference; the identity offset cancels)."""
        if self._mouth_components is None or self._mouth_components.device != pred.device:
            comps = torch.from_numpy(self.pca.components).reshape(-1, 68, 2)[:, 48:68].reshape(self.pca.n_components, -1)
            self._mouth_components = comps.to(pred.device)
        return ((pred - code) @ self._mouth_components).abs().mean()

    def _opening(self, code: torch.Tensor) -> torch.Tensor:
        """``(B,)`` inner-lip gap (px, :func:`~rhythmhead.data.pca.open_rate`) of the codes decoded in the template's
        frame (the identity offset of a closed mouth barely moves the gap)."""
        if self._lip_gap is None or self._lip_gap[0].device != code.device:
            upper, lower = [a for a, _ in INNER_LIP_PAIRS], [b for _, b in INNER_LIP_PAIRS]
            comps = torch.from_numpy(self.pca.components).reshape(-1, 68, 2)
            mean = torch.from_numpy(self.pca.mean).reshape(68, 2)
            self._lip_gap = ((comps[:, upper] - comps[:, lower]).reshape(self.pca.n_components, -1).to(code.device),
                             (mean[upper] - mean[lower]).reshape(-1).to(code.device))
        d = (code @ self._lip_gap[0] + self._lip_gap[1]).reshape(len(code), -1, 2)
        return d.pow(2).sum(-1).add(1e-8).sqrt().mean(-1)

    def losses(self, pred: torch.Tensor, code: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted terms of ``loss`` (zero weights skipped) and their sum ``total``."""
        w = self.cfg.loss
        terms: dict[str, torch.Tensor] = {}
        total = pred.new_zeros(())
        if w.code_mse:
            terms["mse"] = F.mse_loss(pred, code)
            total = total + w.code_mse * terms["mse"]
        if w.mouth_l1:
            terms["mouth_l1"] = self._mouth_l1(pred, code)
            total = total + w.mouth_l1 * terms["mouth_l1"]
        if w.open_l1:
            terms["open_l1"] = (self._opening(pred) - self._opening(code)).abs().mean()
            total = total + w.open_l1 * terms["open_l1"]
        if not terms:
            raise InputError("every loss weight is zero", "loss")
        terms["total"] = total
        return terms

    def train_step(self, batch, step: int, optimizers) -> dict[str, float]:
        net = self.modules["expression"]
        net.train()
        audio, ref_code, code = self._unpack(batch)
        terms = self.losses(net(audio, ref_code), code)
        optimizers["expression"].zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizers["expression"].step()
        return {f"Loss/{k}": v.item() for k, v in terms.items()}

    @torch.no_grad()
    def validate(self, batches) -> dict[str, float]:
        net = self.modules["expression"]
        was_training = net.training
        net.eval()
        mse = base = mouth = mouth_base = 0.0
        n = 0
        for batch in batches:
            audio, ref_code, code = self._unpack(batch)
            pred = net(audio, ref_code)
            mse += float(F.mse_loss(pred, code))
            base += float(code.pow(2).mean())  # the mean-expression (zero code) baseline
            mouth += float(self._mouth_l1(pred, code))
            mouth_base += float(self._mouth_l1(torch.zeros_like(code), code))
            n += 1
        net.train(was_training)
        n = max(n, 1)
        return {"mse": mse / n, "mse_zero_code": base / n, "mouth_l1": mouth / n, "mouth_l1_zero_code": mouth_base / n}

    # -- export ---------------------------------------------------------------------------------------------------
    def export_extra(self) -> dict[str, torch.Tensor]:
        if self.data_dir is None and not self.cfg.data.pca:
            return {}
        return {f"pca_{k}": torch.from_numpy(v.copy()) for k, v in self.pca.arrays().items()}
