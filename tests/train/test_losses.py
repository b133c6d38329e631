from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from idl.train.losses import make_loss, predicted_classes, soft_dice_loss


def test_dice_loss_values() -> None:
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1  # 8 foreground pixels
    assert float(soft_dice_loss(target, target)) == pytest.approx(0.0)
    half = torch.full_like(target, 0.5)
    # 2 * 4 / (8 + 8) with smoothing 1: 1 - (8 + 1) / (16 + 1)
    assert float(soft_dice_loss(half, target)) == pytest.approx(1 - 9 / 17)


def test_bce_dice_is_the_sum_of_its_parts() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8)
    target = (torch.rand(2, 8, 8) > 0.5).long()
    bce = F.binary_cross_entropy_with_logits(logits, target[:, None].float())
    both = make_loss("bce+dice", 2)(logits, target)
    dice = make_loss("dice", 2)(logits, target)
    assert float(make_loss("bce", 2)(logits, target)) == pytest.approx(float(bce))
    assert float(both) == pytest.approx(float(bce + dice))


def test_multiclass_ce_and_prediction() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    assert float(make_loss("ce", 3)(logits, target)) == pytest.approx(float(F.cross_entropy(logits, target)))
    assert torch.equal(predicted_classes(logits), logits.argmax(1))
    assert 0 < float(make_loss("ce+dice", 3)(logits, target)) - float(F.cross_entropy(logits, target)) < 1


def test_dice_losses_work_on_volumes() -> None:
    from idl.train.losses import make_loss, soft_dice_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 6, 5)
    target = torch.randint(0, 3, (2, 4, 6, 5))
    one_hot = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float()
    p = torch.softmax(logits, dim=1)
    dims = (0, 2, 3, 4)
    expected = 1 - ((2 * (p * one_hot).sum(dims) + 1) / (p.sum(dims) + one_hot.sum(dims) + 1)).mean()
    assert float(soft_dice_loss(p, one_hot)) == pytest.approx(float(expected), rel=1e-6)
    value = make_loss("ce+dice", 3)(logits, target)
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert float(value) == pytest.approx(float(ce + expected), rel=1e-6)
    binary = make_loss("bce+dice", 2)(logits[:, :1], (target > 0).long())
    assert torch.isfinite(binary)
