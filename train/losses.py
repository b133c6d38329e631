"""Losses on the network's raw output: bce, dice, bce+dice, focal, tversky (binary segmentation); ce,
dice, ce+dice, focal, tversky (multi-class); mse, mae, huber (regression, on normalized targets).

Focal loss (Lin et al. 2017) down-weights pixels that are already right, ``(1 - p_t) ** gamma``; the
binary one is torchvision's ``sigmoid_focal_loss`` (alpha 0.25, gamma 2), the multi-class one the same
without alpha. Tversky (Salehi et al. 2017) is Dice with false positives weighted by alpha = 0.3 and
false negatives by beta = 0.7, favouring recall of small objects; alpha = beta = 0.5 is Dice.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

BINARY_LOSSES = ("bce", "dice", "bce+dice", "focal", "tversky")
MULTICLASS_LOSSES = ("ce", "dice", "ce+dice", "focal", "tversky")
REGRESSION_LOSSES = ("mse", "mae", "huber")
SMOOTH = 1.0


def soft_dice_loss(probabilities: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice per channel over the whole batch (2D or 3D), averaged over channels."""
    dims = (0, *range(2, probabilities.ndim))
    intersection = (probabilities * one_hot).sum(dims)
    total = probabilities.sum(dims) + one_hot.sum(dims)
    return 1.0 - ((2.0 * intersection + SMOOTH) / (total + SMOOTH)).mean()


FOCAL_GAMMA = 2.0
FOCAL_ALPHA = 0.25
TVERSKY_ALPHA, TVERSKY_BETA = 0.3, 0.7


def soft_tversky_loss(
    probabilities: torch.Tensor,
    one_hot: torch.Tensor,
    alpha: float = TVERSKY_ALPHA,
    beta: float = TVERSKY_BETA,
) -> torch.Tensor:
    """1 - Tversky index per channel over the whole batch, averaged over channels; with
    ``alpha = beta = 0.5`` exactly :func:`soft_dice_loss`."""
    dims = (0, *range(2, probabilities.ndim))
    tp = (probabilities * one_hot).sum(dims)
    fp = (probabilities * (1 - one_hot)).sum(dims)
    fn = ((1 - probabilities) * one_hot).sum(dims)
    return 1.0 - ((tp + SMOOTH / 2) / (tp + alpha * fp + beta * fn + SMOOTH / 2)).mean()


def multiclass_focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = FOCAL_GAMMA
) -> torch.Tensor:
    """Mean of ``-(1 - p_t) ** gamma * log p_t`` over pixels (``gamma = 0`` is cross-entropy)."""
    log_p = F.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()


def binary_loss(name: str) -> LossFn:
    """Loss for ``(N, 1, Y, X)`` logits and ``(N, Y, X)`` targets in {0, 1}."""

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target.unsqueeze(1).to(logits.dtype)
        value = logits.new_zeros(())
        if name in ("bce", "bce+dice"):
            value = value + F.binary_cross_entropy_with_logits(logits, t)
        if name in ("dice", "bce+dice"):
            value = value + soft_dice_loss(torch.sigmoid(logits), t)
        if name == "focal":
            from torchvision.ops import sigmoid_focal_loss

            value = value + sigmoid_focal_loss(logits, t, FOCAL_ALPHA, FOCAL_GAMMA, reduction="mean")
        if name == "tversky":
            value = value + soft_tversky_loss(torch.sigmoid(logits), t)
        return value

    return loss


def multiclass_loss(name: str, num_classes: int) -> LossFn:
    """Loss for ``(N, K, Y, X)`` logits and ``(N, Y, X)`` integer targets."""

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value = logits.new_zeros(())
        if name in ("ce", "ce+dice"):
            value = value + F.cross_entropy(logits, target)
        if name in ("dice", "ce+dice", "tversky"):
            one_hot = F.one_hot(target, num_classes).movedim(-1, 1).to(logits.dtype)
            overlap = soft_tversky_loss if name == "tversky" else soft_dice_loss
            value = value + overlap(torch.softmax(logits, dim=1), one_hot)
        if name == "focal":
            value = value + multiclass_focal_loss(logits, target)
        return value

    return loss


def regression_loss(name: str) -> LossFn:
    """Loss for ``(N, C, Y, X)`` outputs and targets of the same shape (normalized units)."""
    functions = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}
    return functions[name]


def make_loss(name: str, num_classes: int) -> LossFn:
    """A segmentation loss: binary (one logit channel) for two classes, else multi-class."""
    return binary_loss(name) if num_classes == 2 else multiclass_loss(name, num_classes)


def predicted_classes(logits: torch.Tensor) -> torch.Tensor:
    """Class map from logits (sigmoid > 0.5 for binary, arg-max otherwise)."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)
