"""How much memory a network's activations take for an input of a given size, from its ONNX graph.

ONNX's shape inference gives every intermediate tensor's shape for a fixed input; walking the nodes in
the graph's order, a tensor is alive from the node that makes it to the last node that reads it. The
largest sum of live tensors is what ONNX Runtime must hold at once for one call. Measured at two
input sizes, it is a fixed part plus a part per pixel (activations grow with the pixels; a few
tensors, such as a classifier's, do not), which :mod:`idl.infer.tiling.memory` turns into the largest
tile a memory budget allows. This is measured per network, so a 16-filter U-Net and a 64-filter one
get different tiles, where one constant per pixel would fit neither.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from idl.infer.runtime.activations import load_graph, with_input_shapes
from idl.infer.runtime.session import ORT_TYPES

log = logging.getLogger("idl")

# ONNX element types -> bytes (float, uint8, int8, uint16, int16, int32, int64, bool, float16, double)
ELEMENT_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 16: 2}
# ONNX Runtime's CPU arena holds more than the live tensors: it grows in chunks and does not always
# reuse a freed block for a larger tensor. Measured as the peak RSS a tile added over the session's
# own (idl's depth-4 U-Net, 512 to 2048-px tiles, docs/benchmarks.md): this factor times the graph's
# live peak covered every measurement.
ARENA_FACTOR = 1.5


@dataclass(frozen=True)
class Footprint:
    """Bytes of a network call: ``fixed`` plus ``per_pixel`` for each input pixel (voxel) of the
    batch, both for one batch item (the estimate of :func:`footprint`)."""

    fixed: float
    per_pixel: float

    def bytes_for(self, tile: Sequence[int], batch: int = 1) -> float:
        """Estimated bytes for ``batch`` tiles of spatial shape ``tile`` in one call."""
        return batch * (self.fixed + self.per_pixel * math.prod(tile))


def peak_live_bytes(graph, shapes: Sequence[tuple[int, ...] | None]) -> int:  # graph: onnx.ModelProto
    """The largest sum of tensors alive at once while the nodes run in order, for inputs of ``shapes``
    (in the graph's input order; weights not counted). Raises ``ValueError`` where shape inference
    leaves a tensor's size open."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(with_input_shapes(graph, shapes), data_prop=True)
    g = inferred.graph
    weights = {t.name for t in g.initializer}
    sizes: dict[str, int] = {}
    for value in (*g.input, *g.value_info, *g.output):
        kind = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in kind.shape.dim]
        if value.name in weights:
            continue
        if None in dims or kind.elem_type not in ELEMENT_BYTES:
            sizes[value.name] = -1
        else:
            sizes[value.name] = ELEMENT_BYTES[kind.elem_type] * math.prod(dims)
    if any(size < 0 for size in sizes.values()) or any(o for n in g.node for o in n.output if o not in sizes):
        sizes = _sizes_by_running(inferred, shapes, weights)
    last_use: dict[str, int] = {}
    for index, node in enumerate(g.node):
        for name in node.input:
            last_use[name] = index
    kept = {o.name for o in g.output}
    live = {i.name: _size(sizes, i.name) for i in g.input if i.name not in weights}
    peak = sum(live.values())
    for index, node in enumerate(g.node):
        for name in node.output:
            if name and name not in weights:
                live[name] = _size(sizes, name)
        peak = max(peak, sum(live.values()))
        for name in [n for n in live if last_use.get(n, -1) <= index and n not in kept]:
            del live[name]
    return peak


def _sizes_by_running(graph, shapes: Sequence[tuple[int, ...] | None], weights: set[str]) -> dict[str, int]:
    """Every tensor's bytes as ONNX Runtime computes it for inputs of ``shapes`` (zeros; a sample
    count input of length 1), for graphs whose shapes ONNX's inference cannot follow: a Monte Carlo
    graph's samples fan out through shapes computed at run time. The graph runs once with every
    tensor as an output, on inputs as small as the caller's probes."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    copy = onnx.ModelProto()
    copy.CopyFrom(graph)
    present = {o.name for o in copy.graph.output}
    types = {v.name: v.type.tensor_type.elem_type for v in (*copy.graph.value_info, *copy.graph.input)}
    for node in copy.graph.node:
        for name in node.output:
            if name and name not in present and name not in weights and types.get(name):
                copy.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
                present.add(name)
    session = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    feed = {
        given.name: np.zeros(shape, ORT_TYPES.get(given.type, np.float32))
        for given, shape in zip(inputs, shapes, strict=False)
        if shape is not None
    }
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, feed)
    sizes = {name: int(value.nbytes) for name, value in zip(names, values, strict=True)}
    sizes.update({name: int(array.nbytes) for name, array in feed.items()})
    return sizes


def _size(sizes: dict[str, int], name: str) -> int:
    size = sizes.get(name, -1)
    if size < 0:
        raise ValueError(f"shape inference leaves the size of '{name}' open")
    return size


# one measurement: the shapes of the graph's inputs (in its axes, one batch item) and the input
# pixels (voxels) they hold
Probe = tuple[Sequence[tuple[int, ...]], int]


def footprint(
    weights: Path | bytes, probes: tuple[Probe, Probe], label: str = "the model"
) -> Footprint | None:
    """A network's :class:`Footprint`, from its live peak (:func:`peak_live_bytes`) for the inputs of
    two ``probes`` of different sizes, times :data:`ARENA_FACTOR`; ``None`` where the graph cannot be
    measured (a graph shape inference cannot follow)."""
    try:
        graph = load_graph(weights, "the tile's memory estimate")
        small, large = (peak_live_bytes(graph, shapes) for shapes, _ in probes)
    except Exception as exc:  # any graph ONNX cannot infer: the caller falls back to a constant
        log.debug("%s: no memory estimate from its graph (%s)", label, exc)
        return None
    (_, few), (_, many) = probes
    per_pixel = max(0.0, (large - small) / (many - few))
    fixed = max(0.0, small - per_pixel * few)
    return Footprint(ARENA_FACTOR * fixed, ARENA_FACTOR * per_pixel)
