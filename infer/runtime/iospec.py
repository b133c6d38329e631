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
from idl.infer.core.processing import SPACE, Op, ScaleLinear, ScaleRange, Sigmoid, Softmax

__all__ = ["SPACE", "IOSpec", "io_for_info"]

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


def io_for_info(info: ModelInfo) -> IOSpec:
    """The :class:`IOSpec` of an idl model: channels-first batches, percentile normalization, and
    sigmoid/softmax on the logits (unless the graph already outputs probabilities), or for regression
    the mapping back to ground-truth units. Classifiers take one image of their fixed input size and
    output one value per class (axes ``bc``)."""
    spatial = SPACE[-info.dims :]
    norm = info.normalization
    if info.task == "classification":  # one image of a fixed size in, class logits out
        return IOSpec(
            input_axes="bc" + spatial,
            output_axes="bc",
            in_channels=info.in_channels,
            out_channels=info.num_classes,
            sizes={a: AxisSize(n, 0) for a, n in zip(spatial, info.input_size, strict=True)},
            preprocessing=(ScaleRange(spatial, norm.low, norm.high, norm.eps),),
            postprocessing=(Softmax("c"),) if info.output == "logits" else (),
        )
    if info.output == "labels":  # Mask R-CNN: one image of any size in, labels and scores out
        return IOSpec(
            input_axes="bc" + spatial,
            output_axes="bc" + spatial,
            in_channels=info.in_channels,
            out_channels=2,
            sizes={a: AxisSize(DETECTOR_MIN_SIZE, 1) for a in spatial},
            halo={a: info.halo_of(a) for a in spatial},
            preprocessing=(ScaleRange(spatial, norm.low, norm.high, norm.eps),),
            max_batch=1,
        )
    post: tuple[Op, ...] = ()
    if info.task == "regression":
        post = (ScaleLinear(info.target_std or 1.0, info.target_mean or 0.0, "c"),)
    elif info.output == "logits":
        post = (Sigmoid(),) if info.out_channels == 1 else (Softmax("c"),)
    return IOSpec(
        input_axes="bc" + spatial,
        output_axes="bc" + spatial,
        in_channels=info.in_channels,
        out_channels=info.out_channels,
        sizes={a: AxisSize(info.multiple_of(a), info.multiple_of(a)) for a in spatial},
        halo={a: info.halo_of(a) for a in spatial},
        preprocessing=(ScaleRange(spatial, norm.low, norm.high, norm.eps),),
        postprocessing=post,
        uncertainty="std" if info.task == "regression" else "probability",
    )
