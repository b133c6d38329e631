"""``idl-predict --test MODEL``: run a package on its own test input and compare with its test output,
so a user can check a model on their machine in one command."""

from __future__ import annotations

import io as bytes_io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from idl.infer.core.axes import reorder
from idl.infer.core.errors import ModelError
from idl.infer.core.processing import apply_ops, fit_ops, network_tile
from idl.infer.runtime.model import LoadedModel, is_package
from idl.infer.runtime.package import read_description, read_member
from idl.infer.tiling.predict import PredictOptions
from idl.infer.tiling.tensors import predict_tensors

DEFAULT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class TestResult:
    """The largest absolute difference between the model's output on the package's test input and
    the package's test output."""

    output: str  # the output tensor's id
    max_abs_diff: float
    shape: tuple[int, ...]

    __test__ = False  # not a pytest test class


def _load(descr: object, label: str) -> np.ndarray:
    return np.load(bytes_io.BytesIO(read_member(descr, label)), allow_pickle=False)


def run_whole(model: LoadedModel, image: np.ndarray) -> np.ndarray:
    """The post-processed output ``(K, *spatial)`` (or ``(K,)`` for classifiers) of one raw
    channels-last image, run whole: one network call, no tiling, no padding."""
    io = model.io
    pre = fit_ops(io.preprocessing, image, io.image_axes)
    window = tuple(slice(0, n) for n in image.shape[:-1])
    raw = model.network()(network_tile(image, window, pre, io.image_axes)[np.newaxis])
    post = fit_ops(io.postprocessing, raw, io.batch_axes)
    return apply_ops(post, raw, io.batch_axes)[0]


def check_test_tensors(path: Path, model: LoadedModel) -> list[TestResult]:
    """Run the package at ``path`` (loaded as ``model``) on each sample of its test inputs, whole, and
    compare every output with its test output."""
    if not is_package(Path(path)):
        raise ModelError(
            f"{path}: --test needs a bioimage.io package (its test input and output); an idl model folder "
            "is checked when it is exported."
        )
    descr, _ = read_description(Path(path))
    label = str(path)
    _require_test_tensors(path, descr)
    inputs = {str(t.id): _load(t.test_tensor, label) for t in descr.inputs}
    expected = {str(t.id): _load(t.test_tensor, label) for t in descr.outputs}
    if not model.tensors.simple:
        return _check_tensors(model, inputs, expected)
    io = model.io
    test_in, want_all = next(iter(inputs.values())), next(iter(expected.values()))
    worst = 0.0
    for b in range(_items(test_in, io.input_axes)):
        image = reorder(_sample(test_in, io.input_axes, b), io.input_axes.replace("b", ""), io.image_axes)
        got = run_whole(model, image)  # (K, *spatial), the batch axes' order without b
        want = reorder(
            _sample(want_all, io.output_axes, b), io.output_axes.replace("b", ""), io.batch_axes[1:]
        )
        worst = max(worst, _difference(label, got, want))
    return [TestResult(str(descr.outputs[0].id), worst, tuple(want_all.shape))]


def _require_test_tensors(path: Path, descr: Any) -> None:
    """Refuse ``--test`` on a package that does not declare a test tensor for every input and output:
    spec 0.5 makes them optional, and without them there is nothing to compare the model with."""
    missing = [
        f"{role} '{t.id}'"
        for role, tensors in (("input", descr.inputs), ("output", descr.outputs))
        for t in tensors
        if getattr(t, "test_tensor", None) is None
    ]
    if missing:
        raise ModelError(
            f"{path}: the package declares no test tensor for {_and(missing)}, so --test has nothing to "
            "check: it runs the model on the test input its authors stored and compares the result with "
            f"their test output. Check the model on your own images instead (idl-predict {path} IMAGES "
            "--out DIR), or ask its authors for a package with test tensors."
        )


def _and(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _items(array: np.ndarray, axes: str) -> int:
    return array.shape[axes.index("b")] if "b" in axes else 1


def _sample(array: np.ndarray, axes: str, b: int) -> np.ndarray:
    return np.take(array, b, axis=axes.index("b")) if "b" in axes else array


def _difference(label: str, got: np.ndarray, want: np.ndarray) -> float:
    got = got.reshape(want.shape) if got.size == want.size else got
    if got.shape != want.shape:
        raise ModelError(
            f"{label}: the output on the test input has shape {got.shape}, the test output {want.shape}."
        )
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))


def _check_tensors(
    model: LoadedModel, inputs: dict[str, np.ndarray], expected: dict[str, np.ndarray]
) -> list[TestResult]:
    """:func:`check_test_tensors` for a network with several tensors: each sample runs whole (its test
    inputs are a valid size), every output is compared."""
    tensors = model.tensors
    first = tensors.inputs[0]
    worst = dict.fromkeys(expected, 0.0)
    for b in range(_items(inputs[first.id], first.io.input_axes)):
        images = {
            t.id: reorder(
                _sample(inputs[t.id], t.io.input_axes, b), t.io.input_axes.replace("b", ""), t.io.image_axes
            )
            for t in tensors.inputs
        }
        side = max(max(image.shape[:-1]) for image in images.values())
        results = predict_tensors(model, images, PredictOptions(tile_size=side, progress=False))
        for out in tensors.outputs:
            axes = out.axes.replace("b", "")
            want = reorder(_sample(expected[out.id], out.axes, b), axes, "c" + tensors.spatial)
            worst[out.id] = max(worst[out.id], _difference(model.label, results[out.id], want))
    return [TestResult(name, worst[name], tuple(expected[name].shape)) for name in expected]
