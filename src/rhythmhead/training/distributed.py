"""Multi-process helpers: one code path for 1 or N processes, started plainly or under ``torchrun``.

``init()`` reads the torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); without it the process is a world
of one and every collective below is a no-op, so single-process runs need no launcher and no process group. Backend:
nccl for CUDA, gloo for CPU. Launch N processes with::

    torchrun --standalone --nproc_per_node 2 -m rhythmhead train motion --data store --out runs/motion
"""
from __future__ import annotations

import os
from typing import Iterator

import torch
import torch.distributed as dist


def init(device_type: str = "cpu") -> None:
    """Join the torchrun process group once (no-op for a world of one or when already joined)."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")


def shutdown() -> None:
    """Leave the process group (no-op when none)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over ranks (a new tensor; the input is left unchanged)."""
    out = tensor.detach().clone()
    if dist.is_initialized():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= world_size()
    return out


def all_gather_object(obj):
    """A list with every rank's picklable ``obj`` (``[obj]`` for a world of one)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless per-rank stream of dataset indices.

    Epoch ``e`` is a permutation of ``range(size)`` seeded by ``(seed, e)`` (identity order when ``shuffle`` is False),
    padded by wrapping to a multiple of ``num_replicas``; rank ``r`` takes every ``num_replicas``-th index from ``r``.
    ``start`` is the number of indices this rank has already consumed, so a resumed run continues mid-epoch exactly.
    """

    def __init__(self, size: int, rank: int = 0, num_replicas: int = 1, shuffle: bool = True, seed: int = 0,
                 start: int = 0):
        if size <= 0:
            raise ValueError("InfiniteSampler needs a non-empty dataset")
        self.size, self.rank, self.num_replicas = size, rank, num_replicas
        self.shuffle, self.seed, self.start = shuffle, seed, start
        self.per_rank = -(-size // num_replicas)  # indices per rank per epoch

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's indices for one epoch."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = self.per_rank * self.num_replicas
        order = (order * (-(-total // self.size)))[:total]
        return order[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            yield from self.epoch_indices(epoch)[offset:]
            epoch, offset = epoch + 1, 0
