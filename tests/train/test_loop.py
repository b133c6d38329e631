from __future__ import annotations

import numpy as np
import pytest
import torch

from idl.infer.errors import IdlError
from idl.models import UNet2D, UNetSpec
from idl.train.data import PatchDataset, Sample, TileDataset
from idl.train.loop import LoopSettings, TrainState, fit
from idl.train.losses import make_loss


def _samples(n: int) -> list[Sample]:
    rng = np.random.default_rng(0)
    return [
        Sample(
            str(i), rng.random((32, 32, 1)).astype(np.float32), (rng.random((32, 32)) > 0.5).astype(np.uint8)
        )
        for i in range(n)
    ]


def test_diverging_loss_stops_with_advice() -> None:
    net = UNet2D(UNetSpec(depth=1, base_filters=2))
    with pytest.raises(IdlError, match="training diverged in epoch 1.*--learning-rate"):
        fit(
            net,
            torch.optim.SGD(net.parameters(), lr=0.0),
            PatchDataset(_samples(2), 32, (), seed=0),
            TileDataset(_samples(1), 32),
            lambda logits, target: logits.sum() * float("nan"),
            LoopSettings(epochs=5, batch_size=2, patience=3, seed=0, num_classes=2, progress=False),
            TrainState(),
            torch.device("cpu"),
            lambda s, improved: None,
        )


def test_early_stopping_after_patience_without_improvement() -> None:
    torch.manual_seed(0)
    net = UNet2D(UNetSpec(depth=1, base_filters=2, dropout=0.0))
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.0  # running statistics stay put
    frozen = torch.optim.SGD(net.parameters(), lr=0.0)  # nothing changes: no epoch after the first improves
    calls: list[tuple[int, bool]] = []
    state = fit(
        net,
        frozen,
        PatchDataset(_samples(4), 32, (), seed=0),
        TileDataset(_samples(2), 32),
        make_loss("bce", 2),
        LoopSettings(epochs=50, batch_size=2, patience=3, seed=0, num_classes=2, progress=False),
        TrainState(),
        torch.device("cpu"),
        lambda s, improved: calls.append((s.epoch, improved)),
    )
    assert state.finished and state.epoch == 4 and state.best_epoch == 1 and state.bad_epochs == 3
    assert calls == [(1, True), (2, False), (3, False), (4, False)]


def test_recomputed_batch_norm_statistics_are_the_exact_average() -> None:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from idl.train.loop import recompute_batch_norm

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3))
    net[2].weight.requires_grad_(False)
    net.train()
    net[2].eval()  # a frozen layer (as freeze_encoder leaves it) keeps its statistics
    frozen_mean = net[2].running_mean.clone()
    x = torch.randn(20, 2, 4, 4) * 3 + 1
    loader = DataLoader(TensorDataset(x, torch.zeros(20)), batch_size=5)
    assert recompute_batch_norm(net, loader, torch.device("cpu")) == 1
    with torch.no_grad():
        features = net[0](x)
    torch.testing.assert_close(net[1].running_mean, features.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-5)
    # the unbiased variance of each batch, averaged over the four batches
    per_batch = torch.stack([features[i : i + 5].var(dim=(0, 2, 3), unbiased=True) for i in range(0, 20, 5)])
    torch.testing.assert_close(net[1].running_var, per_batch.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net[2].running_mean, frozen_mean)
    assert net[1].momentum == 0.1
