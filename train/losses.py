"""Losses on the network's raw output: bce, dice, bce+dice (binary segmentation); ce, dice, ce+dice
(multi-class); mse, mae, huber (regression, on normalized targets)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SMOOTH = 1.0


def soft_dice_loss(probabilities: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice per channel over the whole batch (2D or 3D), averaged over channels."""
    dims = (0, *range(2, probabilities.ndim))
    intersection = (probabilities * one_hot).sum(dims)
    total = probabilities.sum(dims) + one_hot.sum(dims)
    return 1.0 - ((2.0 * intersection + SMOOTH) / (total + SMOOTH)).mean()


def binary_loss(name: str) -> LossFn:
    """Loss for ``(N, 1, Y, X)`` logits and ``(N, Y, X)`` targets in {0, 1}."""

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target.unsqueeze(1).to(logits.dtype)
        value = logits.new_zeros(())
        if name in ("bce", "bce+dice"):
            value = value + F.binary_cross_entropy_with_logits(logits, t)
        if name in ("dice", "bce+dice"):
            value = value + soft_dice_loss(torch.sigmoid(logits), t)
        return value

    return loss


def multiclass_loss(name: str, num_classes: int) -> LossFn:
    """Loss for ``(N, K, Y, X)`` logits and ``(N, Y, X)`` integer targets."""

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value = logits.new_zeros(())
        if name in ("ce", "ce+dice"):
            value = value + F.cross_entropy(logits, target)
        if name in ("dice", "ce+dice"):
            one_hot = F.one_hot(target, num_classes).movedim(-1, 1).to(logits.dtype)
            value = value + soft_dice_loss(torch.softmax(logits, dim=1), one_hot)
        return value

    return loss


def regression_loss(name: str) -> LossFn:
    """Loss for ``(N, C, Y, X)`` outputs and targets of the same shape (normalized units)."""
    functions = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}
    return functions[name]


def make_loss(name: str, num_classes: int, task: str = "semantic") -> LossFn:
    if task == "regression":
        return regression_loss(name)
    return binary_loss(name) if num_classes == 2 else multiclass_loss(name, num_classes)


def predicted_classes(logits: torch.Tensor) -> torch.Tensor:
    """Class map from logits (sigmoid > 0.5 for binary, arg-max otherwise)."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)
