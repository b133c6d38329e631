"""The classifier's flips and quarter turns, decided from the data: the probe and its rule on
hand-built predictors, and two short runs on toy sets whose classes do and do not depend on
orientation (a mirrored ``L`` is a ``J``; a mirrored disk is a disk)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from idl.infer.io.images import write_tiff
from idl.train.config import TrainConfig
from idl.train.tasks.classification.orientation import Probe, decide, probe


def _hook(mirrored: bool, rng: np.random.Generator, size: int = 24) -> np.ndarray:
    """A vertical bar with a foot to the right (an ``L``) or, mirrored, to the left (a ``J``), at a
    random place and size, on a noisy background."""
    img = rng.normal(0.2, 0.05, (size, size)).astype(np.float32)
    h, w = rng.integers(10, 15), rng.integers(5, 8)
    y0, x0 = rng.integers(2, size - h - 2), rng.integers(w + 1, size - w - 1)
    img[y0 : y0 + h, x0 : x0 + 2] = 1.0
    if mirrored:
        img[y0 + h - 2 : y0 + h, x0 - w + 2 : x0 + 2] = 1.0
    else:
        img[y0 + h - 2 : y0 + h, x0 : x0 + w] = 1.0
    return img


def _blob(ring: bool, rng: np.random.Generator, size: int = 24) -> np.ndarray:
    """A disk or a ring (both look the same mirrored or turned) at a random place and size."""
    img = rng.normal(0.2, 0.05, (size, size)).astype(np.float32)
    r = int(rng.integers(6, 9))
    cy, cx = rng.integers(r + 1, size - r - 1, 2)
    d2 = (np.mgrid[:size, :size] - np.array([cy, cx])[:, None, None]) ** 2
    d2 = d2.sum(axis=0)
    img[(d2 < r * r) & ((d2 >= (r - 3) ** 2) if ring else True)] = 1.0
    return img


def _foot_side(images: np.ndarray) -> np.ndarray:
    """A hand-built classifier of hooks: 1 (``J``) where the bright pixels of the lowest bright row
    reach further left than the bar, else 0."""
    out = []
    for img in images[:, 0]:
        rows = np.nonzero((img > 0.6).sum(axis=1))[0]
        bottom = np.nonzero(img[rows.max()] > 0.6)[0]
        bar = np.nonzero(img[rows.min()] > 0.6)[0]
        out.append(int(bottom.min() < bar.min()))
    return np.array(out)


def _hollow(images: np.ndarray) -> np.ndarray:
    """A hand-built classifier of blobs: 1 (ring) where the object's centre is dark."""
    out = []
    for img in images[:, 0]:
        ys, xs = np.nonzero(img > 0.6)
        out.append(int(img[(ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2] < 0.6))
    return np.array(out)


def _set(make, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    return np.stack([make(bool(c), rng) for c in labels])[:, None], labels


def test_mirror_classes_leave_flips_and_turns_off() -> None:
    images, labels = _set(_hook, 40, 0)
    result = probe(_foot_side, images, labels, ("L", "J"))
    assert result.accuracy == 1.0 and result.images == 40 and result.classes == 2
    # mirrored left-right, every L is called J and every J an L
    assert result.kept["flip"] == {"L": 0.0, "J": 0.0}
    assert result.lowest("rot90")[1] <= 0.2
    decision = decide(result)
    assert decision is not None and decision.keep == () and decision.informative
    assert "left off flip, rot90 (they change the class)" in decision.evidence
    assert "validation accuracy 1.000; correct images whose copies keep their class: mirrored 0.00" in (
        decision.evidence
    )


def test_symmetric_classes_keep_flips_and_turns() -> None:
    images, labels = _set(_blob, 40, 1)
    result = probe(_hollow, images, labels, ("disk", "ring"))
    assert result.accuracy == 1.0
    assert result.kept == {"flip": {"disk": 1.0, "ring": 1.0}, "rot90": {"disk": 1.0, "ring": 1.0}}
    decision = decide(result)
    assert decision is not None and decision.keep == ("flip", "rot90")
    assert decision.evidence.endswith("kept flip, rot90")


def test_shares_count_correct_images_per_class() -> None:
    """Four classes, one pair of them mirror images (b and d): the overall accuracy on the copies
    stays at 0.5, but class b's copies all become d, so flips are left off."""
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    images = np.broadcast_to((labels + 2.0)[:, None, None, None], (8, 1, 4, 4)).astype(np.float32)
    images[1] = 3 + 2  # a b that the network calls x
    images[:, 0, 3, 3] = 1  # which way round the image is

    def predict(x: np.ndarray) -> np.ndarray:
        c = x[:, 0, 1, 1].astype(int) - 2
        mirrored = x[:, 0, 3, 3] != 1
        return np.where(mirrored & (c < 2), 1 - c, c)  # a mirrored b is a d and the other way round

    result = probe(predict, images, labels, ("b", "d", "o", "x"))
    assert result.accuracy == 7 / 8 and result.classes == 4
    assert result.kept["flip"] == {"b": 0.0, "d": 0.0, "o": 1.0, "x": 1.0}
    assert result.lowest("flip") == ("b", 0.0)
    decision = decide(result)
    assert decision is not None and decision.keep == ()


def test_quarter_turns_are_not_probed_on_oblong_images() -> None:
    images, labels = _set(_blob, 10, 2)
    result = probe(_hollow, images[..., :20], labels)
    assert set(result.kept) == {"flip"} and result.classes == 2


def test_the_rule_waits_near_chance() -> None:
    weak = Probe(accuracy=0.70, kept={"flip": {"a": 1.0, "b": 1.0}}, images=50, classes=2)
    assert not weak.informative  # 0.70 < 0.5 + 0.5 * 0.5
    assert decide(weak) is None
    last = decide(weak, last_chance=True)
    assert last is not None and last.keep == () and not last.informative
    assert "too close to chance to tell, so left off" in last.evidence
    # three classes: chance 1/3, informative from 2/3 on
    assert Probe(0.67, {}, 30, 3).informative and not Probe(0.66, {}, 30, 3).informative
    # a share near 0.5 (within 0.25) waits for a better trained network; at the last chance the
    # family is kept from 0.5 on, in every class
    half = Probe(0.9, {"flip": {"a": 0.5, "b": 0.9}, "rot90": {"a": 0.95, "b": 0.45}}, 100, 2)
    assert decide(half) is None
    clear = decide(Probe(0.9, {"flip": {"a": 0.76, "b": 0.9}, "rot90": {"a": 0.9, "b": 0.24}}, 100, 2))
    assert clear is not None and clear.keep == ("flip",)
    decision = decide(half, last_chance=True)
    assert decision is not None and decision.keep == ("flip",)
    assert "mirrored 0.70 (lowest a 0.50), turned 0.70 (lowest b 0.45)" in decision.evidence
    assert decision.evidence.endswith("kept flip; left off rot90 (they change the class)")


def _project(root: Path, make, names: tuple[str, str], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", 80), ("test", 20)):
        rows = ["filename,groundtruth"]
        for i in range(n):
            write_tiff(root / split / "image" / f"{i:03d}.tif", make(bool(i % 2), rng))
            rows.append(f"{i:03d}.tif,{names[i % 2]}")
        (root / split / "groundtruth").mkdir(parents=True, exist_ok=True)
        (root / split / "groundtruth" / "groundtruth.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.slow  # trains two small classifiers
def test_a_run_decides_from_its_data_and_resume_keeps_the_decision(tmp_path: Path) -> None:
    from idl.train.pipeline import train_project
    from idl.train.tasks.classification.data import ImageDataset

    config = TrainConfig(
        int8=False,
        task="classification",
        epochs=4,
        steps_per_epoch=8,
        batch_size=16,
        package=False,
        uncertainty=False,
    )
    assert config.augment == ("shift", "contrast", "brightness") and config.augment_planned
    hooks = _project(tmp_path / "hooks", _hook, ("L", "J"), 0)
    run = train_project(hooks, config, progress=False)
    plan = json.loads((hooks / "model" / "plan.json").read_text())
    decision = run.state.decisions["orientation"]
    assert decision["keep"] == [] and decision["informative"]
    assert plan["augmentation"].startswith(
        f"shift, contrast, brightness (after epoch {decision['epoch']}: validation accuracy"
    )
    assert "left off flip, rot90 (they change the class)" in plan["augmentation"]
    assert json.loads((hooks / "model" / "config.json").read_text())["augment_planned"] is True

    blobs = _project(tmp_path / "blobs", _blob, ("disk", "ring"), 1)
    first = train_project(blobs, replace(config, epochs=3), progress=False)
    assert first.state.decisions["orientation"]["keep"] == ["flip", "rot90"]
    assert first.state.decisions["orientation"]["informative"]
    applied: list[tuple[str, ...]] = []
    original = ImageDataset.__setattr__

    def spy(self: ImageDataset, key: str, value: object) -> None:
        if key == "augment" and value is not None:
            applied.append(tuple(value))  # type: ignore[arg-type]
        original(self, key, value)

    ImageDataset.__setattr__ = spy  # type: ignore[method-assign]
    try:
        resumed = train_project(blobs, config, resume=True, progress=False)
    finally:
        ImageDataset.__setattr__ = original  # type: ignore[method-assign]
    assert resumed.state.epoch == 4
    assert resumed.state.decisions["orientation"] == first.state.decisions["orientation"]
    assert sorted(applied[-1]) == ["brightness", "contrast", "flip", "rot90", "shift"]
    assert "kept flip, rot90" in json.loads((blobs / "model" / "plan.json").read_text())["augmentation"]

    # --augment given: nothing is decided, and the plan has no augmentation line
    fixed = train_project(
        blobs,
        replace(config, augment=("flip",), augment_settings={}, augment_planned=None, epochs=1),
        overwrite=True,
        progress=False,
    )
    assert fixed.state.decisions == {}
    assert json.loads((blobs / "model" / "plan.json").read_text())["augmentation"] == ""
