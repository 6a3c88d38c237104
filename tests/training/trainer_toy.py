"""A tiny TrainTask (an MLP regressing a synthetic function) for the Trainer tests; also a torchrun entry point.

Randomness on purpose: dropout in the net and noise drawn from the global torch RNG in ``__getitem__``, so that a resume
that forgets the RNG or the sampler position gives a different next step.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/training/trainer_toy.py RUN MAX_STEPS
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from torch import nn

from rhythmhead.training.task import TrainerConfig, TrainTask


@dataclass(frozen=True)
class ToyModelConfig:
    in_features: int = 4
    hidden: int = 16
    dropout: float = 0.1


@dataclass(frozen=True)
class ToyConfig:
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(
        batch_size=4, max_steps=10, log_every=2, val_every=5, checkpoint_every=3, keep_last=2, val_batches=2))
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    lr: float = 1e-2
    ablation: str = "none"


class ToyNet(nn.Module):
    def __init__(self, in_features: int, hidden: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, in_features) → (B, 1)."""
        return self.body(x)


class ToySet(torch.utils.data.Dataset):
    def __init__(self, n: int, in_features: int, offset: int):
        g = torch.Generator().manual_seed(1234 + offset)
        self.x = torch.randn(n, in_features, generator=g)
        self.y = self.x @ torch.linspace(-1.0, 1.0, in_features)[:, None] + 0.5

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i] + 0.01 * torch.randn(self.x.shape[1]), "y": self.y[i], "index": torch.tensor(i)}


class ToyTask(TrainTask):
    stage = "toy"
    config_class = ToyConfig

    def build(self, device):
        m = self.cfg.model
        return {"net": ToyNet(in_features=m.in_features, hidden=m.hidden, dropout=m.dropout).to(device)}

    def make_optimizers(self, modules):
        return {"net": torch.optim.Adam(modules["net"].parameters(), lr=self.cfg.lr)}

    def dataset(self, split):
        return ToySet(64 if split == "train" else 10, self.cfg.model.in_features, 0 if split == "train" else 1)

    def train_step(self, batch, step, optimizers):
        opt = optimizers["net"]
        loss = ((self.modules["net"](batch["x"]) - batch["y"]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.seen = getattr(self, "seen", []) + batch["index"].tolist()
        return {"Loss/mse": loss.detach()}

    @torch.no_grad()
    def validate(self, batches):
        errs = [((self.modules["net"](b["x"]) - b["y"]) ** 2).mean() for b in batches]
        return {"mse": float(torch.stack(errs).mean()), "training_flag": float(self.modules["net"].training)}


def flat_params(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in getattr(module, "module", module).parameters()])


if __name__ == "__main__":  # torchrun worker: train, then save this rank's parameters and seen indices
    from rhythmhead.training import distributed
    from rhythmhead.training.trainer import Trainer

    torch.set_num_threads(1)
    run, steps = sys.argv[1], int(sys.argv[2])
    task = ToyTask(ToyConfig(), None)
    trainer = Trainer(task, run, "cpu").fit(steps)
    torch.save({"params": flat_params(trainer.modules["net"]), "seen": task.seen},
               f"{run}/rank{distributed.rank()}.pt")
    distributed.shutdown()
