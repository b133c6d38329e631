from __future__ import annotations

import numpy as np
import pytest
import torch

from idl.infer.core.errors import IdlError
from idl.models import UNet2D, UNetSpec
from idl.train.data import PatchDataset, Sample
from idl.train.loop import LoopSettings, TrainState, fit
from idl.train.losses import make_loss
from idl.train.tasks.semantic import MaskJaccard
from idl.train.validation import WholeImageValidation


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
    # the first epoch has no checkpoint to resume from: no --resume advice
    with pytest.raises(IdlError, match=r"training diverged in epoch 1 .*Lower --learning-rate\.$"):
        fit(
            net,
            torch.optim.SGD(net.parameters(), lr=0.0),
            PatchDataset(_samples(2), 32, (), seed=0, steps=1, batch_size=2),
            None,
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
    loss = make_loss("bce", 2)
    state = fit(
        net,
        frozen,
        PatchDataset(_samples(4), 32, (), seed=0, steps=2, batch_size=2),
        WholeImageValidation(_samples(2), lambda: MaskJaccard(2), loss, (32, 32), (2, 2), (2, 2)),
        loss,
        LoopSettings(epochs=50, batch_size=2, patience=3, seed=0, num_classes=2, progress=False),
        TrainState(),
        torch.device("cpu"),
        lambda s, improved: calls.append((s.epoch, improved)),
    )
    # 50 epochs: a burn-in of 13, then 3 without a better score
    assert state.finished and state.epoch == 16 and state.best_epoch == 13 and state.bad_epochs == 3
    assert calls == [(e, True) for e in range(1, 14)] + [(14, False), (15, False), (16, False)]


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


class _Scripted:
    """A validator returning given (loss, score) pairs, one per epoch."""

    def __init__(self, results: list[tuple[float, float]]) -> None:
        self.results = list(results)

    def __call__(self, model, device) -> tuple[float, float]:
        return self.results.pop(0)


def _fit(
    validation,
    epochs: int,
    patience: int = 10,
    lr: float = 0.0,
    calls=None,
    max_epochs: int = 0,
    reference: float | None = None,
    net: torch.nn.Module | None = None,
) -> TrainState:
    net = net or UNet2D(UNetSpec(depth=1, base_filters=2, dropout=0.0))
    optimizer = torch.optim.Adam(net.parameters(), lr=1.0)
    settings = LoopSettings(
        epochs=epochs,
        batch_size=2,
        patience=patience,
        seed=0,
        num_classes=2,
        progress=False,
        metric="jaccard",
        steps_per_epoch=2,
        learning_rate=lr,
        warmup_steps=1,
        max_epochs=max_epochs,
        reference=reference,
        reference_name="Otsu threshold, dark objects",
    )
    rates: list[float] = []

    def on_epoch(state: TrainState, improved: bool) -> None:
        rates.append(optimizer.param_groups[0]["lr"])
        if calls is not None:
            calls.append((state.epoch, improved))

    state = fit(
        net,
        optimizer,
        PatchDataset(_samples(3), 32, (), seed=0, steps=2, batch_size=2),
        validation,
        make_loss("bce", 2),
        settings,
        TrainState(),
        torch.device("cpu"),
        on_epoch,
    )
    state.rates = rates  # type: ignore[attr-defined]
    return state


def test_the_best_epoch_has_the_best_score_and_ties_go_to_the_lower_loss() -> None:
    calls: list[tuple[int, bool]] = []
    # 8 epochs: the first 2 are the burn-in, kept whatever they score (an untrained network's
    # threshold can score like a threshold of the raw image)
    scripted = [
        (0.9, 0.9),
        (0.8, 0.0),
        (0.5, 0.0),
        (0.7, 0.6),
        (0.2, 0.55),
        (0.6, 0.6),
        (0.3, 0.6),
        (0.1, 0.5),
    ]
    state = _fit(_Scripted(scripted), epochs=8, calls=calls)
    assert [improved for _, improved in calls] == [True, True, True, True, False, True, True, False]
    assert (state.best_epoch, state.best_score, state.best_val_loss) == (7, 0.6, 0.3)
    assert state.history[4] == {
        "epoch": 5,
        "train_loss": state.history[4]["train_loss"],
        "val_loss": 0.2,
        "val_jaccard": 0.55,
    }


def test_patience_counts_epochs_without_a_better_score_after_the_burn_in() -> None:
    state = _fit(_Scripted([(0.1, 0.9), (1.0, 0.5)] + [(0.1, 0.4)] * 10), epochs=8, patience=3)
    assert state.finished and state.epoch == 5 and state.best_epoch == 2


def test_without_validation_the_last_epoch_is_kept_and_the_rate_decays_to_zero() -> None:
    calls: list[tuple[int, bool]] = []
    state = _fit(None, epochs=3, lr=1e-3, calls=calls)
    assert calls == [(1, True), (2, True), (3, True)] and state.best_epoch == 3
    assert set(state.history[0]) == {"epoch", "train_loss"}
    # 6 steps, the first a warm-up, the last 2 of the other 5 decaying (from step 4: 1 - 2 / 5 * 5):
    # each epoch's last step (1, 3, 5) at 1e-3, 1e-3 and 1e-3 * (6 - 5) / 2
    np.testing.assert_allclose(state.rates, [1e-3, 1e-3, 0.5e-3], rtol=1e-9)


def test_a_run_still_rising_extends_its_budget_up_to_the_cap() -> None:
    """5 planned epochs, at most 12: checked where the decay would start (epoch 3 of 5), extended by
    half the planned epochs (3) while the latest third's best beats the earlier best by 0.01."""
    rising = [(1.0, 0.1 * e) for e in range(1, 20)]
    state = _fit(_Scripted(rising), epochs=5, max_epochs=12, lr=1e-3)
    # epoch 3: 0.3 against 0.2 -> 8 epochs; epoch 4 (60 % of 8): 0.4 against 0.3 -> 11; epoch 6
    # (60 % of 11): -> 12, the cap; then no more checks
    assert state.epoch == 12 and state.epochs == 12 and state.finished
    assert state.extensions == [
        "after epoch 3: validation jaccard 0.3000 in the last 1 epoch(s), 0.2000 before, still rising: "
        "extended to 8 epochs (16 steps)",
        "after epoch 4: validation jaccard 0.4000 in the last 2 epoch(s), 0.2000 before, still rising: "
        "extended to 11 epochs (22 steps)",
        "after epoch 6: validation jaccard 0.6000 in the last 2 epoch(s), 0.4000 before, still rising: "
        "extended to 12 epochs (24 steps)",
    ]
    # the learning rate is held until the decay of the extended budget (the last 40 % of 24 steps)
    assert state.rates[:7] == [1e-3] * 7  # type: ignore[attr-defined]
    assert state.rates[-1] == pytest.approx(1e-3 * 1 / (0.4 * 23))  # type: ignore[attr-defined]


def test_a_plateau_or_a_set_budget_is_not_extended() -> None:
    plateau = [(1.0, s) for s in (0.5, 0.8, 0.805, 0.79, 0.8, 0.8, 0.8)]
    state = _fit(_Scripted(plateau), epochs=5, max_epochs=15)
    assert state.epoch == 5 and state.epochs == 0 and state.extensions == []  # 0.805 < 0.8 + 0.01
    rising = [(1.0, 0.1 * e) for e in range(1, 10)]
    assert _fit(_Scripted(rising), epochs=5).epoch == 5  # max_epochs 0: never


def test_budget_trend_and_steps() -> None:
    from idl.train import budget

    assert budget.trend([0.1, 0.2]) is None  # too few epochs to tell
    assert budget.trend([0.1, float("nan"), 0.3]) is None
    trend = budget.trend([0.5, 0.7, 0.6, 0.69, 0.709, 0.705])
    assert (trend.latest, trend.before, trend.recent) == (0.709, 0.7, 2) and not trend.rising
    assert budget.trend([0.5, 0.7, 0.6, 0.69, 0.72, 0.705]).rising
    assert [budget.check_epoch(e) for e in (1, 2, 5, 10, 15)] == [1, 1, 3, 6, 9]
    assert budget.max_epochs(10, 3.0) == 30 and budget.max_epochs(10, 1.0) == 10
    assert budget.extended(10, 10, 30) == 15 and budget.extended(28, 10, 30) == 30


def test_a_run_at_the_trivial_answer_starts_again_with_a_lower_rate() -> None:
    """6 planned epochs, at most 18: at epoch 3 (60 % of 6) the best score since the burn-in (2
    epochs), 0.27, is within 0.02 of the reference 0.27, so the network is drawn anew and trains 6
    more epochs at half the rate."""
    torch.manual_seed(0)
    net = UNet2D(UNetSpec(depth=1, base_filters=2, dropout=0.0))
    stuck = [(1.0, 0.27), (1.0, 0.28), (1.0, 0.27)] + [(1.0, s) for s in (0.4, 0.5, 0.6)] + [(1.0, 0.6)] * 6
    first = {k: v.clone() for k, v in net.state_dict().items()}
    calls: list[tuple[int, bool]] = []
    state = _fit(_Scripted(stuck), epochs=6, max_epochs=18, reference=0.27, lr=1e-3, net=net, calls=calls)
    assert state.restarts == [
        "after epoch 3: best validation jaccard since the burn-in 0.2700, no better than Otsu threshold, "
        "dark objects (0.2700) + 0.02: started again from a new initialisation at learning rate 0.0005, "
        "to epoch 9"
    ]
    assert (state.restart_epoch, state.lr_scale) == (3, 0.5)
    # the new attempt: rising at its own check (epoch 3 + 3: 0.6 against 0.5) -> extended by 3; at the
    # next (epoch 3 + 5 of its 9) on a plateau
    assert state.epoch == 12 and state.epochs == 12 and len(state.extensions) == 1
    assert state.extensions[0].startswith("after epoch 6: validation jaccard 0.6000 in the last 1 epoch(s)")
    # the new attempt has no burn-in: an epoch is the best when it beats 0.28 (epoch 2)
    assert calls[3:6] == [(4, True), (5, True), (6, True)] and state.best_epoch == 6
    # half the rate after the restart, held until the decay of the 9-epoch attempt
    assert state.rates[:3] == [1e-3] * 3 and state.rates[3:6] == [5e-4] * 3  # type: ignore[attr-defined]
    changed = [
        k for k, v in net.state_dict().items() if v.is_floating_point() and not torch.equal(v, first[k])
    ]
    assert any(k.endswith("weight") for k in changed)


def test_no_restart_without_room_in_the_budget_or_a_reference() -> None:
    stuck = [(1.0, 0.27)] * 8
    assert _fit(_Scripted(stuck), epochs=6, reference=0.27).restarts == []  # max_epochs 0: the user's budget
    assert _fit(_Scripted(stuck), epochs=6, max_epochs=18).restarts == []  # no reference
    late = _fit(
        _Scripted([(1.0, 0.27), (1.0, 0.5), (1.0, 0.5)] + stuck), epochs=6, max_epochs=18, reference=0.27
    )
    assert late.restarts == [] and late.epoch == 6  # 0.5 beats it: not stuck, and not rising either


def test_a_restart_keeps_a_better_epoch_from_before_it() -> None:
    """A run that scored 0.6 in its burn-in and then fell to the trivial answer starts again, but its
    epoch 2 stays the best until the new attempt beats 0.6 (here it never does)."""
    collapsed = [(1.0, 0.5), (1.0, 0.6), (1.0, 0.27)] + [(1.0, 0.4)] * 6
    calls: list[tuple[int, bool]] = []
    state = _fit(_Scripted(collapsed), epochs=6, max_epochs=18, reference=0.27, calls=calls)
    assert len(state.restarts) == 1 and state.epoch == 9
    assert state.best_epoch == 2 and state.best_score == 0.6
    assert [improved for _, improved in calls] == [True, True, False] + [False] * 6


def test_an_extended_run_that_stops_improving_decays_before_it_stops() -> None:
    """Extended while rising (5 planned epochs, to 8 and 11), then no better score for the patience
    of 2 epochs: the end moves to 2 epochs (40 % of the planned 5) from there, over which the rate
    falls to zero, instead of stopping at the full rate."""
    scores = [(1.0, s) for s in (0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3)]
    state = _fit(_Scripted(scores), epochs=5, patience=2, max_epochs=15, lr=1e-3)
    assert state.epoch == 7 and state.epochs == 7 and state.finished
    assert state.extensions[-1] == (
        "after epoch 5: no better validation jaccard for 2 epochs of the extended budget: the learning "
        "rate decays to zero by epoch 7 (14 steps)"
    )
    assert state.rates[4] == 1e-3 and state.rates[-1] < 0.2e-3  # type: ignore[attr-defined]
    # a run on its planned budget stops as before: at epoch 5 of 8, its patience spent
    assert _fit(_Scripted(scores), epochs=8, patience=2).epoch == 5
