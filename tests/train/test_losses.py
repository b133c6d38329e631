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


def test_binary_focal_loss_is_torchvisions_and_down_weights_easy_pixels() -> None:
    from torchvision.ops import sigmoid_focal_loss

    logits = torch.tensor([[[[4.0, -4.0], [0.2, -0.3]]]])
    target = torch.tensor([[[1, 0], [0, 1]]])
    t = target.unsqueeze(1).float()
    p = torch.sigmoid(logits)
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = 0.25 * t + 0.75 * (1 - t)
    by_hand = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).mean()
    value = make_loss("focal", 2)(logits, target)
    assert float(value) == pytest.approx(float(by_hand), rel=1e-5)
    assert float(value) == pytest.approx(float(sigmoid_focal_loss(logits, t, reduction="mean")), rel=1e-6)
    # the two confident, right pixels contribute almost nothing; bce counts them far more
    easy = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t))[..., 0, :].sum() / by_hand / 4
    assert float(easy) < 1e-3


def test_multiclass_focal_loss_with_gamma_zero_is_cross_entropy() -> None:
    from idl.train.losses import multiclass_focal_loss

    logits = torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 4, (2, 5, 6), generator=torch.Generator().manual_seed(1))
    ce = F.cross_entropy(logits, target)
    assert float(multiclass_focal_loss(logits, target, gamma=0.0)) == pytest.approx(float(ce), rel=1e-6)
    p_t = torch.softmax(logits, 1).gather(1, target.unsqueeze(1)).squeeze(1)
    by_hand = (-((1 - p_t) ** 2) * torch.log(p_t)).mean()
    assert float(make_loss("focal", 4)(logits, target)) == pytest.approx(float(by_hand), rel=1e-5)


def test_tversky_weights_misses_more_than_false_alarms() -> None:
    from idl.train.losses import soft_tversky_loss

    truth = torch.zeros(1, 1, 4, 4)
    truth[..., :2, :] = 1  # 8 true pixels
    missed = truth.clone()
    missed[..., 0, :] = 0  # 4 false negatives
    extra = truth.clone()
    extra[..., 2, :] = 1  # 4 false positives
    # (tp + 0.5) / (tp + 0.3 fp + 0.7 fn + 0.5)
    assert float(soft_tversky_loss(missed, truth)) == pytest.approx(1 - 4.5 / (4 + 0.7 * 4 + 0.5))
    assert float(soft_tversky_loss(extra, truth)) == pytest.approx(1 - 8.5 / (8 + 0.3 * 4 + 0.5))
    assert float(soft_tversky_loss(missed, truth)) > float(soft_tversky_loss(extra, truth))
    probabilities = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(2))
    one_hot = (torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    assert float(soft_tversky_loss(probabilities, one_hot, 0.5, 0.5)) == pytest.approx(
        float(soft_dice_loss(probabilities, one_hot)), rel=1e-6
    )
    assert float(make_loss("tversky", 3)(torch.randn(1, 3, 4, 4), torch.randint(0, 3, (1, 4, 4)))) > 0


def test_instantdl_loss_names_map_to_ours_everywhere() -> None:
    from idl.train.config import TrainConfig

    assert TrainConfig(int8=False, loss="Binary CrossEntropy Dice Loss").loss == "bce+dice"
    assert (
        TrainConfig(int8=False, loss="tversky_loss").loss == "tversky"
        and TrainConfig(int8=False, loss="focal_loss").loss == "focal"
    )
    assert TrainConfig(int8=False, loss="dice").loss == "dice"
    with pytest.raises(Exception, match="unknown loss 'hinge'.*focal, tversky"):
        TrainConfig(int8=False, loss="hinge")
