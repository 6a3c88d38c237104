"""Small helpers shared by the networks."""
from __future__ import annotations

from typing import Sequence

import torch


def assert_shape(tensor: torch.Tensor, shape: Sequence[int | None], name: str = "tensor") -> None:
    """Raise ValueError unless ``tensor.shape`` matches ``shape`` (``None`` matches any size)."""
    if tensor.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, tensor.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(tensor.shape)}")
