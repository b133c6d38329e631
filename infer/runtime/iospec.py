"""How to feed a network and read its output: axes, accepted sizes, halo, pre- and post-processing.

One :class:`IOSpec` describes any model idl can run, whether it is an idl model (built from its
:class:`~idl.infer.core.model_info.ModelInfo`) or someone else's bioimage.io package. Internally images are
channels-last (``"yxc"``, ``"zyxc"``) and network batches are ``"bcyx"``/``"bczyx"``; the spec's
axis strings say how the network itself orders them, and :meth:`IOSpec.to_model` /
:meth:`IOSpec.from_model` convert.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from idl.infer.core.axes import reorder
from idl.infer.core.grid import AxisSize
from idl.infer.core.model_info import ModelInfo
from idl.infer.core.processing import SPACE, Op, ScaleRange, Sigmoid, Softmax

__all__ = ["SPACE", "IOSpec", "activation", "image_io"]

DETECTOR_MIN_SIZE = 64  # Mask R-CNN tiles: at least two cells of its coarsest (stride 32) feature map


@dataclass(frozen=True)
class IOSpec:
    """Axes (letters ``b``, ``c``, ``z``, ``y``, ``x``), sizes, halo and processing of a network."""

    input_axes: str
    output_axes: str
    in_channels: int
    out_channels: int
    sizes: dict[str, AxisSize]
    halo: dict[str, int] = field(default_factory=dict)
    preprocessing: tuple[Op, ...] = ()
    postprocessing: tuple[Op, ...] = ()
    output_dtype: str = "float32"
    # bioimage.io semantics: the whole input is padded by the halo (numpy mode, constant value) before
    # preprocessing, and the output cropped back; None for idl models, which see the image unpadded
    input_pad: str | None = None
    input_pad_value: float = 0.0
    max_batch: int = 0  # tiles per network call at most (0: any)
    uncertainty: str = "probability"  # Monte Carlo uncertainty: "probability" (InstantDL) or "std"
    # the Monte Carlo standard deviation's calibration factor (regression, ModelInfo.sigma_scale)
    sigma_scale: float = 1.0

    @property
    def spatial(self) -> str:
        """The spatial axes in idl's order (``"yx"`` or ``"zyx"``)."""
        return "".join(a for a in SPACE if a in self.input_axes)

    @property
    def image_axes(self) -> str:
        """Axes of a channels-last image for this network."""
        return self.spatial + "c"

    @property
    def batch_axes(self) -> str:
        """Axes of the batches idl's tiler exchanges with the network (channels first)."""
        return "bc" + self.spatial

    def halo_of(self, axis: str) -> int:
        return self.halo.get(axis, 0)

    def to_model(self, batch: np.ndarray) -> np.ndarray:
        """Reorder a ``batch_axes`` array into the network's input axes."""
        return reorder(batch, self.batch_axes, self.input_axes)

    def from_model(self, output: np.ndarray) -> np.ndarray:
        """Reorder a network output into ``batch_axes`` (missing batch/channel axes become size 1)."""
        return reorder(output, self.output_axes, self.batch_axes)


def activation(info: ModelInfo, out_channels: int) -> tuple[Op, ...]:
    """What turns the graph's output into probabilities: a sigmoid for one channel, a softmax over
    channels, or nothing when the graph outputs probabilities itself."""
    if info.output != "logits":
        return ()
    return (Sigmoid(),) if out_channels == 1 else (Softmax("c"),)


def image_io(
    info: ModelInfo,
    out_channels: int,
    postprocessing: tuple[Op, ...],
    uncertainty: str,
    sigma_scale: float = 1.0,
) -> IOSpec:
    """The :class:`IOSpec` of an idl network that maps an image to an image: channels-first batches
    of any size (a multiple of the network's), percentile normalization, the halo that makes tiling
    seamless."""
    spatial = SPACE[-info.dims :]
    norm = info.normalization
    return IOSpec(
        input_axes="bc" + spatial,
        output_axes="bc" + spatial,
        in_channels=info.in_channels,
        out_channels=out_channels,
        sizes={a: AxisSize(info.multiple_of(a), info.multiple_of(a)) for a in spatial},
        halo={a: info.halo_of(a) for a in spatial},
        preprocessing=(ScaleRange(spatial, norm.low, norm.high, norm.eps),),
        postprocessing=postprocessing,
        uncertainty=uncertainty,
        sigma_scale=sigma_scale,
    )
