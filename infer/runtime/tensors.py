"""The one description of a network's tensors: every model idl runs has one.

Most networks map one image to one image of the same size (:meth:`Tensors.single` of an
:class:`~idl.infer.runtime.iospec.IOSpec`, the one-entry case). Some bioimage.io packages
(StarDist-style models, multi-tensor U-Nets, networks with down-sampled outputs) take several images
and give several outputs: each input is an IOSpec of its own (axes, channels, sizes, preprocessing,
padding) and each output has its size relative to the inputs (``scale`` output pixels per input
pixel, ``offset``) and its halo. All inputs share one spatial grid: they are tiled together, window
for window.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from idl.infer.core.grid import AxisSize
from idl.infer.core.processing import Op
from idl.infer.runtime.iospec import SPACE, IOSpec

log = logging.getLogger("idl")


@dataclass(frozen=True)
class InputTensor:
    """One input of the network: its tensor id and how to feed it (``io``'s input side)."""

    id: str
    io: IOSpec


@dataclass(frozen=True)
class OutputTensor:
    """One output of the network: axes (network order), channels, and per space axis the output pixels
    per input pixel (``scale``), extra pixels (``offset``) and the halo (output pixels)."""

    id: str
    axes: str
    channels: int
    scale: dict[str, float] = field(default_factory=dict)
    offset: dict[str, int] = field(default_factory=dict)
    halo: dict[str, int] = field(default_factory=dict)
    postprocessing: tuple[Op, ...] = ()
    dtype: str = "float32"

    def size(self, axis: str, input_size: int) -> int:
        """The output's length along ``axis`` for an input of ``input_size`` pixels."""
        return round(input_size * self.scale.get(axis, 1.0)) + self.offset.get(axis, 0)


@dataclass(frozen=True)
class Tensors:
    """All inputs and outputs of a network, in the order the network takes and gives them."""

    inputs: tuple[InputTensor, ...]
    outputs: tuple[OutputTensor, ...]
    max_batch: int = 0  # tiles per network call at most (0: any)

    @property
    def spatial(self) -> str:
        return "".join(a for a in SPACE if a in self.inputs[0].io.input_axes)

    @property
    def simple(self) -> bool:
        """One input and one output of the input's size (or one value per class, a classifier): the
        one-entry case, described by one :class:`IOSpec` as well."""
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            return False
        out = self.outputs[0]
        return all(s == 1.0 for s in out.scale.values()) and not any(out.offset.values())

    @property
    def batch_axes(self) -> str:
        """The axes of the batches the tile loop exchanges with the network (channels first)."""
        return "bc" + self.spatial

    @classmethod
    def single(cls, io: IOSpec, input_id: str = "input", output_id: str = "output") -> Tensors:
        """A network with one input and one output of the input's size, described by ``io``: the
        one-entry case of a network with several tensors."""
        spatial = io.spatial
        output = OutputTensor(
            id=output_id,
            axes=io.output_axes,
            channels=io.out_channels,
            scale={a: 1.0 for a in spatial},
            offset={a: 0 for a in spatial},
            halo={a: io.halo_of(a) for a in spatial},
            postprocessing=io.postprocessing,
            dtype=io.output_dtype,
        )
        return cls((InputTensor(input_id, io),), (output,), io.max_batch)


def fitted_to_graph(tensors: Tensors, shapes: list[list[int | None]], label: str) -> Tensors:
    """``tensors`` with the sizes the ONNX graph itself fixes (``shapes``: each input's dimensions in
    the network's axis order, None where any size goes). Packages are often exported with fixed
    spatial sizes while their description allows others; the graph is what runs, so tiles take
    exactly its size (said once), and a fixed batch size limits the tiles per call."""
    inputs, fixed, batch = [], {}, tensors.max_batch
    for tensor, dims in zip(tensors.inputs, shapes, strict=False):
        io = tensor.io
        sizes = dict(io.sizes)
        for letter, dim in zip(io.input_axes, dims, strict=False):
            if dim is None:
                continue
            if letter == "b":
                batch = min(batch, dim) if batch else dim
            elif letter in sizes and sizes[letter] != AxisSize(dim, 0):
                sizes[letter] = AxisSize(dim, 0)
                fixed[letter] = (dim, io.sizes[letter])
        max_batch = io.max_batch if not batch else min(io.max_batch or batch, batch)
        inputs.append(InputTensor(tensor.id, replace(io, sizes=sizes, max_batch=max_batch)))
    if not fixed and batch == tensors.max_batch:
        return tensors
    if fixed:
        sides = " x ".join(str(fixed[a][0]) for a in tensors.spatial if a in fixed)
        allowed = ", ".join(f"{a}: {rule.minimum} + k * {rule.step}" for a, (_, rule) in fixed.items())
        log.info(
            "%s: the ONNX graph takes inputs of exactly %s px (its description allows %s): predicting in "
            "tiles of that size",
            label,
            sides,
            allowed,
        )
    return Tensors((*inputs, *tensors.inputs[len(inputs) :]), tensors.outputs, batch)
