"""Small helpers shared by the networks."""
from __future__ import annotations

from typing import Sequence

import torch


def assert_shape(tensor: torch.Tensor, shape: Sequence[int | None], name: str = "tensor") -> None:
    """Raise ValueError unless ``tensor.shape`` matches ``shape`` (``None`` matches any size)."""
    if tensor.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, tensor.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(tensor.shape)}")


@torch.no_grad()
def fold_for_inference(module: torch.nn.Module) -> torch.nn.Module:
    """Make an eval-mode network cheaper to run, in place, with the same outputs (to float rounding): spectral-norm
    parametrisations are baked into plain weights, every BatchNorm2d that directly follows a Conv2d inside an
    ``nn.Sequential`` is folded into that conv (its running statistics and affine) and replaced by ``nn.Identity``, and
    4-D weights move to channels-last memory (faster oneDNN convolutions on CPU). For inference only (no spectral norm
    to train, no batch statistics). Returns ``module``."""
    from torch import nn
    from torch.nn.utils import parametrize

    if module.training:
        raise ValueError("fold_for_inference needs a network in eval mode")
    for m in list(module.modules()):
        if parametrize.is_parametrized(m):
            for name in list(m.parametrizations.keys()):
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats):
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
                1 / torch.sqrt(bn.running_var + bn.eps)
            shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight.copy_(conv.weight * scale[:, None, None, None])
            conv.bias = nn.Parameter(bias * scale + shift, requires_grad=False)
            seq[i + 1] = nn.Identity()
    return module.to(memory_format=torch.channels_last)


def fast_precision(device: torch.device | str) -> torch.autocast:
    """Autocast context for running the networks at inference: bfloat16 on a CPU that computes it natively (oneDNN
    with AVX-512-BF16 / AMX: convolutions about 2× faster), float32 everywhere else (a CPU without native bfloat16
    would emulate it, slower). Outputs are cast back to float32 by the caller; geometry (rasteriser, flows, warps)
    never runs under it."""
    kind = torch.device(device).type
    enabled = kind == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=enabled)
