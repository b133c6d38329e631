"""The activation explorer (``idl-predict MODEL IMAGE --activations [LAYER,...]``): what a network's
layers compute for an image, from its ONNX graph alone.

Without layer names it lists the layers (:func:`layer_table`) with their shapes for the first image.
With names it writes, per image, a figure of the first ``maps`` feature maps of each layer (one row
per layer, each map on its own grey scale, labelled by channel) and the maps themselves as a float32
TIFF stack per layer (``(C, Y, X)``, or ImageJ's ``(Z, C, Y, X)`` for volumes); a volume's figure
shows the middle plane or the one ``plane`` names (in the input's z, scaled to the layer's).

The image is prepared as prediction prepares it: an image model's input goes through the same tile
loop (:func:`~idl.infer.tiling.predict.predict_probabilities`) as one tile of the whole image (its
central ``limit`` pixels per axis where it is larger) and the network runs a copy of its graph that
also outputs the named layers (:func:`~idl.infer.runtime.activations.with_outputs`); a classifier's
input is resized as for classification. The maps are cropped to the image's extent (a layer of half
the input's size keeps half the image's).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from idl.infer.core.errors import DataError
from idl.infer.runtime.activations import Layer, find_layers, list_layers, with_outputs
from idl.infer.runtime.model import LoadedModel
from idl.infer.runtime.session import OnnxRunner

log = logging.getLogger("idl")

MAPS = 8  # feature maps per layer in the figure, unless told
LIMIT = 1024  # px per axis of an image's centre the explorer runs on


@dataclass(frozen=True)
class Activations:
    """One image's activations: the network input's shape (the model's axes) and, per layer, its
    maps ``(C, [Z,] Y, X)`` of that image (batch item 0), cropped to the image."""

    image: str
    input_shape: tuple[int, ...]
    maps: dict[str, np.ndarray]


def _classifier(model: LoadedModel) -> bool:
    return not any(a in model.io.output_axes for a in "zyx")


def _centre(image: np.ndarray, limit: int) -> np.ndarray:
    """The central ``limit`` pixels of every spatial axis of a channels-last image."""
    starts = [(n - min(n, limit)) // 2 for n in image.shape[:-1]]
    window = tuple(slice(s, s + min(n, limit)) for s, n in zip(starts, image.shape[:-1], strict=True))
    return image[(*window, slice(None))]


def read_for(model: LoadedModel, path: Path, axes: str | None) -> np.ndarray:
    """An image as the model's prediction reads it (channels last; a classifier's as its input)."""
    if _classifier(model):
        from idl.infer.tiling.classify import read_input

        return read_input(path, axes, model.io, "replace")
    from idl.infer.tiling.predict import load_input

    return np.asarray(load_input(path, axes, model.io))


def _looked_at(
    model: LoadedModel, image: np.ndarray, limit: int = LIMIT
) -> tuple[np.ndarray, tuple[int, ...]]:
    """The part of an image model's input the explorer runs on (its central ``limit`` px per axis)
    and the one tile, of a size the network accepts, that holds it."""
    if any(n > limit for n in image.shape[:-1]):
        image = _centre(image, limit)
    io = model.io
    return image, tuple(io.sizes[a].at_least(n) for a, n in zip(io.spatial, image.shape[:-1], strict=True))


def activation_session(model: LoadedModel, layers: list[Layer]) -> OnnxRunner:
    """A session of the model's graph that also outputs ``layers``."""
    graph = with_outputs(model.weights, layers)
    return OnnxRunner(graph, model.device, label=f"{model.label} (activations)")


def capture(
    model: LoadedModel,
    image: np.ndarray,
    layers: list[Layer],
    limit: int = LIMIT,
    session: OnnxRunner | None = None,
) -> tuple[tuple[int, ...], dict[str, np.ndarray]]:
    """``(input shape, {layer name: (C, [Z,] Y, X)})`` of ``image`` (read by :func:`read_for`), run by
    ``session`` (:func:`activation_session`, made here when not given)."""
    session = session or activation_session(model, layers)
    io = model.io
    if _classifier(model):
        x = image[np.newaxis]
        return x.shape, _by_layer(session, session.run_all([io.to_model(x)]), layers)
    from idl.infer.tiling.predict import predict_probabilities

    shown, tile = _looked_at(model, image, limit)
    if shown.shape != image.shape:
        log.info("activations of the central %s px of the image", " x ".join(map(str, shown.shape[:-1])))
    image = shown
    seen: dict[str, np.ndarray] = {}
    shapes: list[tuple[int, ...]] = []

    def run(batch: np.ndarray) -> np.ndarray:
        outputs = session.run_all([io.to_model(batch)])
        if not shapes:  # one tile holds the image; its first call is the one
            shapes.append(batch.shape)
            seen.update(_by_layer(session, outputs, layers))
        return io.from_model(outputs[0])

    predict_probabilities(run, image, io, tile, (0,) * len(tile))
    spatial = image.shape[:-1]
    cropped = {}
    for name, maps in seen.items():  # a layer's share of the padded input that is image
        scale = [m / n for m, n in zip(maps.shape[1:], shapes[0][2:], strict=True)]
        keep = tuple(slice(0, max(1, int(np.ceil(n * s)))) for n, s in zip(spatial, scale, strict=True))
        cropped[name] = maps[(slice(None), *keep)]
    return shapes[0], cropped


def _by_layer(session: OnnxRunner, outputs: list[np.ndarray], layers: list[Layer]) -> dict[str, np.ndarray]:
    """Each layer's maps (batch item 0) from a run of the graph with its outputs (a layer may be one
    of the graph's own outputs)."""
    by_tensor = dict(zip(session.output_names, outputs, strict=True))
    return {layer.name: by_tensor[layer.tensor][0] for layer in layers}


def layer_table(layers: list[Layer]) -> str:
    """The layers as a table: name, operator and shape."""
    width = max((len(layer.name) for layer in layers), default=5)
    lines = [f"{'layer':<{width}}  {'op':<18} shape"]
    lines += [f"{layer.name:<{width}}  {layer.op:<18} {layer.shape_text()}" for layer in layers]
    return "\n".join(lines)


def layers_for(model: LoadedModel, image: np.ndarray) -> list[Layer]:
    """The model's layers with their shapes for ``image`` (read by :func:`read_for`)."""
    if _classifier(model):
        shape = model.io.to_model(image[np.newaxis]).shape
    else:  # the tile's shape in the network's axes (an empty array: no memory is touched)
        shape = model.io.to_model(np.empty((1, model.io.in_channels, *_looked_at(model, image)[1]))).shape
    return list_layers(model.weights, tuple(shape))


def safe_name(name: str) -> str:
    """A layer name as a file name (``/encoder.0/body/Relu`` -> ``encoder.0_body_Relu``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "layer"


def _plane(maps: np.ndarray, plane: int | None, depth: int) -> np.ndarray:
    """``(C, Y, X)``: the maps themselves (2D), or their plane at the input's ``plane`` (middle)."""
    if maps.ndim == 3:
        return maps
    z = maps.shape[1]
    index = z // 2 if plane is None else min(z - 1, max(0, plane * z // max(depth, 1)))
    return maps[:, index]


def write_activations(
    activations: Activations, out_dir: Path, count: int = MAPS, plane: int | None = None
) -> list[Path]:
    """The figure (``<image>.activations.png``) and one TIFF per layer (``<image>/<layer>.tif``) of
    the first ``count`` maps of each layer; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tifffile

    from idl.infer.io.disk import atomic_path

    stem = Path(activations.image).stem
    written = []
    depth = activations.input_shape[2] if len(activations.input_shape) == 5 else 1
    rows = list(activations.maps.items())
    columns = max(1, min(count, max(m.shape[0] for _, m in rows)))
    figure, grid = plt.subplots(
        len(rows), columns, figsize=(1.8 * columns + 1.5, 1.9 * len(rows)), squeeze=False
    )
    for row, (name, maps) in enumerate(rows):
        shown = maps[:count].astype(np.float32)
        path = out_dir / stem / f"{safe_name(name)}.tif"
        with atomic_path(path) as tmp:
            if shown.ndim == 4:  # (C, Z, Y, X) -> ImageJ's ZCYX
                hyperstack = np.ascontiguousarray(shown.transpose(1, 0, 2, 3))
                tifffile.imwrite(tmp, hyperstack, imagej=True, metadata={"axes": "ZCYX"})
            else:
                tifffile.imwrite(tmp, shown, imagej=True, metadata={"axes": "CYX"})
        written.append(path)
        planes = _plane(shown, plane, depth)
        for column in range(columns):
            axis = grid[row, column]
            axis.set_xticks([])
            axis.set_yticks([])
            if column < len(planes):
                axis.imshow(planes[column], cmap="gray")
                axis.set_title(f"channel {column}", fontsize=7)
            else:
                axis.axis("off")
        size = " x ".join(map(str, maps.shape))
        label = f"{name}\n({maps.shape[0]} map(s), {size})"
        grid[row, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    where = "" if depth == 1 else f", plane {'middle' if plane is None else plane} of {depth}"
    figure.suptitle(f"{activations.image}: first {columns} feature maps per layer{where}", fontsize=9)
    figure.tight_layout()
    path = out_dir / f"{stem}.activations.png"
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
    written.append(path)
    return written


def explore(
    model: LoadedModel,
    files: list[Path],
    names: list[str],
    out_dir: Path,
    count: int = MAPS,
    plane: int | None = None,
    axes: str | None = None,
) -> list[Path]:
    """Every image's activations of the layers ``names`` written to ``out_dir``."""
    if count < 1:
        raise DataError(f"--maps must be at least 1, got {count}")
    written: list[Path] = []
    layers: list[Layer] = []
    session = None
    for path in files:
        image = read_for(model, path, axes)
        if session is None:  # the layers and their session, once for all images
            layers = find_layers(layers_for(model, image), names)
            session = activation_session(model, layers)
        shape, maps = capture(model, image, layers, session=session)
        written += write_activations(Activations(path.name, tuple(shape), maps), out_dir, count, plane)
        log.info("%s: the activations of %d layer(s) -> %s", path.name, len(layers), out_dir)
    return written
