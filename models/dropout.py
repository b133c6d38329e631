"""Dropout that can stay active at inference time and survives ONNX export.

ONNX Runtime's default graph optimizer removes ``Dropout`` nodes even when they are exported with
``training_mode=True``. To keep Monte Carlo dropout stochastic in the exported graph, the MC path is
written as an explicit random mask, ``x * (rand_like(x) > p) / (1 - p)``, which exports to
``RandomUniformLike`` and is left alone by the optimizer.
"""

from __future__ import annotations

import torch
from torch import nn


class MCDropout(nn.Module):
    """Element-wise dropout with an explicit switch for Monte Carlo sampling.

    - training mode: ordinary inverted dropout (``torch.nn.functional.dropout``);
    - eval mode, ``mc=False``: identity (deterministic prediction);
    - eval mode, ``mc=True``: a fresh random mask on every call (Monte Carlo dropout).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.mc = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0:
            return x
        if self.training:
            return nn.functional.dropout(x, self.p, training=True)
        if self.mc:
            keep = (torch.rand_like(x) > self.p).to(x.dtype)
            return x * keep / (1.0 - self.p)
        return x

    def extra_repr(self) -> str:
        return f"p={self.p}, mc={self.mc}"


def set_mc_dropout(module: nn.Module, enabled: bool) -> int:
    """Switch Monte Carlo sampling on or off in every ``MCDropout`` of ``module``.

    Returns the number of dropout layers switched, so callers can tell a model without any.
    """
    count = 0
    for child in module.modules():
        if isinstance(child, MCDropout):
            child.mc = enabled
            count += 1
    return count
