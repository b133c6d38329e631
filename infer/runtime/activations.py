"""A network's layers as its ONNX graph has them, and a copy of the graph that also outputs some of
them (the activation explorer, ``idl-predict --activations``).

A *layer* here is a node of the graph whose output is a feature map: a float tensor with a batch, a
channel and two or three spatial axes (what convolutions, poolings, activations and concatenations
output). Nothing is read from idl's own metadata, so this works for any ONNX network: idl's U-Nets and
SegNets, or a bioimage.io package from another tool. Shapes come from ONNX's shape inference; given
the input's shape, they are the sizes the network computes for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from idl.infer.core.errors import DataError, ModelError, did_you_mean

FEATURE_RANKS = (4, 5)  # (N, C, Y, X) and (N, C, Z, Y, X)


@dataclass(frozen=True)
class Layer:
    """One node with a feature-map output: its name (the node's, or its output's where the node has
    none), its operator and that output's tensor name and shape (a number, a dimension's name, or
    None where shape inference left it open)."""

    name: str
    op: str
    tensor: str
    shape: tuple[int | str | None, ...]
    elem_type: int = 1  # ONNX's element type: 1 float32, 10 float16

    def shape_text(self) -> str:
        return " x ".join("?" if d is None else str(d) for d in self.shape)


def load_graph(model: Path | bytes, purpose: str = "the activation explorer"):  # -> onnx.ModelProto
    """The ONNX graph of a file or of serialized bytes (``purpose`` names who needs it, for the error
    where the onnx package is missing)."""
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - a dependency of idl's base install
        raise ModelError(f"{purpose} needs the onnx package: pip install onnx") from exc
    try:
        return onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
    except Exception as exc:
        raise ModelError(
            f"{model if isinstance(model, Path) else 'the model'}: not an ONNX graph ({exc})"
        ) from exc


def _dims(value_type) -> tuple[int | str | None, ...]:
    return tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value_type.shape.dim
    )


def with_input_shapes(proto, shapes: Sequence[tuple[int, ...] | None]):
    """A copy of ``proto`` with its inputs fixed, in order, to ``shapes`` (``None``: left as it is)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for given, shape in zip(copy.graph.input, shapes, strict=False):
        if shape is None:
            continue
        dims = given.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise DataError(f"the network's input has {len(dims)} axes, the image gives {len(shape)}")
        for dim, n in zip(dims, shape, strict=True):
            dim.Clear()
            dim.dim_value = int(n)
    return copy


def list_layers(model: Path | bytes, input_shape: tuple[int, ...] | None = None) -> list[Layer]:
    """The graph's layers in the order it computes them; with ``input_shape`` (the first input's,
    in the network's axes) their shapes for that input."""
    import onnx

    proto = with_input_shapes(load_graph(model), [input_shape])
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:  # a graph shape inference cannot follow: list the layers without shapes
        inferred = proto
    graph = inferred.graph
    types = {v.name: v.type for v in (*graph.value_info, *graph.output, *graph.input)}
    layers = []
    for index, node in enumerate(graph.node):
        if not node.output:
            continue
        tensor = node.output[0]
        kind = types.get(tensor)
        if kind is None or not kind.HasField("tensor_type"):
            continue
        tensor_type = kind.tensor_type
        if tensor_type.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            continue
        shape = _dims(tensor_type)
        if len(shape) not in FEATURE_RANKS:
            continue
        name = node.name or tensor or f"node{index}"
        layers.append(Layer(name, node.op_type, tensor, shape, tensor_type.elem_type))
    return layers


def find_layers(layers: list[Layer], names: list[str]) -> list[Layer]:
    """The layers named (by node or tensor name), in the order given; an unknown name is an error
    that lists the nearest names."""
    by_name = {layer.name: layer for layer in layers} | {layer.tensor: layer for layer in layers}
    found = []
    for name in names:
        if name not in by_name:
            raise DataError(
                f"the network has no layer '{name}'.{did_you_mean(name, list(by_name))} "
                "List them with --activations alone."
            )
        found.append(by_name[name])
    return found


def with_outputs(model: Path | bytes, layers: list[Layer]) -> bytes:
    """The graph, serialized, with the tensors of ``layers`` as further outputs after its own."""
    import onnx

    proto = load_graph(model)
    present = {o.name for o in proto.graph.output}
    for layer in layers:
        if layer.tensor not in present:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(layer.tensor, layer.elem_type, None))
            present.add(layer.tensor)
    return proto.SerializeToString()
