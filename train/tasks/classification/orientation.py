"""Whether mirroring and quarter turns keep an image's class: decided from the data, not assumed.

Flips and quarter turns are the right augmentation for blood cells and nuclei, which have no up or
down, and wrong wherever a mirrored or turned image belongs to another class (letters and digits,
cell polarity, a direction of migration, left and right organs). So a classifier trains its first
epochs without them, and then classifies its validation images as they are and as mirrored and
turned copies. A network that learned the classes from upright images still recognises most
mirrored blood cells, but calls a mirrored ``b`` a ``d``: among the images it gets right, the share
whose copies keep their class is high for every class in the first case and near nil for some class
in the second (:func:`decide`). Counting per class, among correctly classified images only, keeps
the measure apart from how much the young network still gets wrong, and catches one mirrored pair
among many classes that leaves the overall accuracy almost unchanged. With a network still too weak
to say (its accuracy near chance) the probe waits for a later epoch, and at the last chance leaves
the transforms off, which never teaches a wrong label.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("idl")

# each family of right-angle transforms of ``(N, C, H, W)`` images, as the augmentations name them
FAMILIES: dict[str, tuple[Callable[[np.ndarray], np.ndarray], ...]] = {
    "flip": (lambda x: x[..., ::-1], lambda x: x[..., ::-1, :]),  # mirrored left-right, top-bottom
    "rot90": tuple((lambda x, k=k: np.rot90(x, k, axes=(-2, -1))) for k in (1, 2, 3)),
}
# how the evidence names each family's copies
COPIES = {"flip": "mirrored", "rot90": "turned"}
# the probe's accuracy must lie this far from chance towards 1 before it can tell a family apart
INFORMATIVE = 0.5
# a family is kept when, in every class, at least this share of the correctly classified images
# keeps its class under each of its transforms: a transform that changes a class sends most of them
# elsewhere. Shares within UNSURE of it wait for a better trained network, up to the last chance.
KEEPS = 0.5
UNSURE = 0.25


@dataclass(frozen=True)
class Probe:
    """Validation accuracy on the images as they are; per family and class, the share of the
    correctly classified images whose copies keep their class (the lowest over the family's
    transforms)."""

    accuracy: float
    kept: dict[str, dict[str, float]]  # family -> class name -> share
    images: int
    classes: int

    @property
    def chance(self) -> float:
        return 1.0 / self.classes

    @property
    def informative(self) -> bool:
        """Whether the network is past chance far enough for its copies' answers to mean anything."""
        return self.accuracy >= self.chance + INFORMATIVE * (1.0 - self.chance)

    def lowest(self, family: str) -> tuple[str, float]:
        """The class whose copies keep their class least often, and that share."""
        name = min(self.kept[family], key=self.kept[family].__getitem__)
        return name, self.kept[family][name]


def probe(
    predict: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
) -> Probe:
    """Classify ``images`` ``(N, C, H, W)`` (``predict``: images -> class indices) as they are and
    as every transform's copies; quarter turns only for square images. Classes without a correctly
    classified image are left out of the shares."""
    k = int(max(2, labels.max() + 1, len(class_names or ())))
    names = list(class_names) if class_names else [str(i) for i in range(k)]
    first = predict(images)
    right = first == labels
    square = images.shape[-1] == images.shape[-2]
    kept: dict[str, dict[str, float]] = {}
    for family, transforms in FAMILIES.items():
        if family == "rot90" and not square:
            continue
        shares: dict[str, float] = {}
        for t in transforms:
            same = predict(np.ascontiguousarray(t(images[right]))) == labels[right]
            for c in range(k):
                if np.any(labels[right] == c):
                    share = float(same[labels[right] == c].mean())
                    shares[names[c]] = min(share, shares.get(names[c], 1.0))
        kept[family] = shares
    return Probe(float(right.mean()), kept, len(labels), k)


@dataclass(frozen=True)
class Decision:
    """The families kept, whether the probe could tell, and why, as the plan says it."""

    keep: tuple[str, ...]
    informative: bool
    evidence: str


def decide(result: Probe, last_chance: bool = False) -> Decision | None:
    """Keep each family whose copies keep their class in at least :data:`KEEPS` of every class's
    correctly classified images. ``None`` while the probe cannot tell yet: its network near chance,
    or a family's lowest share within :data:`UNSURE` of the threshold (a young network that has not
    learned yet what makes a class). At the ``last_chance`` an unsure family is decided by the
    threshold and, with a network still near chance, the families stay off."""
    said = _said(result)
    if not result.informative or not result.kept:
        if not last_chance:
            return None
        return Decision((), False, f"{said}: too close to chance to tell, so left off")
    lowest = {name: result.lowest(name)[1] for name in result.kept}
    if not last_chance and any(abs(share - KEEPS) < UNSURE for share in lowest.values()):
        return None
    keep = tuple(name for name, share in lowest.items() if share >= KEEPS)
    dropped = [name for name in result.kept if name not in keep]
    verdict = (
        ("kept " + ", ".join(keep) if keep else "")
        + ("; " if keep and dropped else "")
        + ("left off " + ", ".join(dropped) + " (they change the class)" if dropped else "")
    )
    return Decision(keep, True, f"{said}; a family is kept from {KEEPS:.2f} in every class: {verdict}")


LAST_CHANCE = 0.5  # of the epochs: after this the probe decides, informative or not


class OrientationChoice:
    """The classifier's orientation decision while training (a :class:`idl.train.setup.Choice`):
    after the burn-in (the first quarter of the epochs, trained without flips and turns) the probe
    runs on the validation images; the families it keeps join the training augmentation for the rest
    of the run."""

    name = "orientation"

    def __init__(
        self,
        train_set: Any,
        images: np.ndarray,
        labels: np.ndarray,
        class_names: Sequence[str],
        names: tuple[str, ...],
        settings: dict,
    ) -> None:
        self.train_set, self.images, self.labels, self.class_names = train_set, images, labels, class_names
        self.names, self.settings = names, settings  # the augmentation before the decision

    def due(self, epoch: int, epochs: int) -> bool:
        from idl.train.loop import burn_in_epochs

        return epoch >= burn_in_epochs(epochs)

    def decide(self, model: Any, device: Any, epoch: int, epochs: int) -> dict[str, Any] | None:
        import torch

        from idl.train.loop import to_device
        from idl.train.losses import predicted_classes

        def predict(x: np.ndarray) -> np.ndarray:
            if not len(x):
                return np.zeros(0, np.int64)
            with torch.no_grad():
                out = [
                    model(to_device(torch.from_numpy(x[i : i + 128]), device)) for i in range(0, len(x), 128)
                ]
            return predicted_classes(torch.cat(out)).cpu().numpy()

        model.eval()
        result = probe(predict, self.images, self.labels, self.class_names)
        decision = decide(result, last_chance=epoch >= math.ceil(LAST_CHANCE * epochs))
        if decision is None:
            log.info("orientation probe after epoch %d: %s; asking again later", epoch, _said(result))
            return None
        return {
            "keep": list(decision.keep),
            "informative": decision.informative,
            "evidence": decision.evidence,
            "epoch": epoch,
        }

    def apply(self, decision: dict[str, Any]) -> None:
        from idl.train.augment import resolve

        names = (*self.names, *decision["keep"])
        self.train_set.augment = resolve(names, self.settings)

    def describe(self, decision: dict[str, Any] | None) -> str:
        base = ", ".join(self.names) or "none"
        if decision is None:
            return (
                f"{base}; flips and quarter turns decided from the data after the first quarter of the epochs"
            )
        added = ", ".join(decision["keep"])
        return (
            f"{base}{', ' + added if added else ''} (after epoch {decision['epoch']}: {decision['evidence']})"
        )


def _said(result: Probe) -> str:
    measured = ", ".join(
        f"{COPIES[family]} {_mean(shares):.2f} (lowest {result.lowest(family)[0]} "
        f"{result.lowest(family)[1]:.2f})"
        for family, shares in result.kept.items()
    )
    copies = f"; correct images whose copies keep their class: {measured}" if measured else ""
    return f"validation accuracy {result.accuracy:.3f}{copies}"


def _mean(shares: dict[str, float]) -> float:
    return sum(shares.values()) / max(1, len(shares))
