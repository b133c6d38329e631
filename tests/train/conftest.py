"""The smallest training settings the training tests share (a depth-2 U-Net of 4 filters on 48-px
patches, a few steps: seconds on a CPU)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from idl.train.config import TrainConfig

# no int8 graphs (each run's quantization and agreement cost seconds): tests/export/test_quantize.py
# and the session's trained fixtures (tests/conftest.py) cover them
TINY: dict[str, Any] = dict(
    depth=2, base_filters=4, image_size=48, batch_size=4, steps_per_epoch=3, uncertainty=False, int8=False
)


def tiny(**settings: Any) -> TrainConfig:
    """A semantic-segmentation config of :data:`TINY`, changed by ``settings``."""
    return TrainConfig(**{"task": "semantic", **TINY, **settings})


def fresh_copy(project: Path, target: Path) -> Path:
    """``project``'s images alone (``train/``, ``test/``) at ``target``: the session's projects may
    already hold a model that a training fixture wrote."""
    for part in ("train", "test"):
        shutil.copytree(project / part, target / part)
    return target
