"""``idl-predict --test MODEL``: run a package on its own test input and compare with its test output,
so a user can check a model on their machine in one command."""

from __future__ import annotations

import io as bytes_io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from idl.infer.core.axes import reorder
from idl.infer.core.errors import ModelError
from idl.infer.core.processing import apply_ops, fit_ops, network_tile
from idl.infer.runtime.model import LoadedModel, is_package
from idl.infer.runtime.package import read_description, read_member

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


def check_test_tensors(path: Path, model: LoadedModel) -> TestResult:
    """Run the package at ``path`` (loaded as ``model``) on each sample of its test input, whole, and
    compare with its test output."""
    if not is_package(Path(path)):
        raise ModelError(
            f"{path}: --test needs a bioimage.io package (its test input and output); an idl model folder "
            "is checked when it is exported."
        )
    descr, _ = read_description(Path(path))
    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise ModelError(f"{path}: --test runs packages with one input and one output.")
    label = str(path)
    test_in, expected = _load(descr.inputs[0].test_tensor, label), _load(descr.outputs[0].test_tensor, label)
    io = model.io
    items = test_in.shape[io.input_axes.index("b")] if "b" in io.input_axes else 1
    worst = 0.0
    for b in range(items):
        sample_in = np.take(test_in, b, axis=io.input_axes.index("b")) if "b" in io.input_axes else test_in
        image = reorder(sample_in, io.input_axes.replace("b", ""), io.image_axes)
        got = run_whole(model, image)  # (K, *spatial), the batch axes' order without b
        want = np.take(expected, b, axis=io.output_axes.index("b")) if "b" in io.output_axes else expected
        want = reorder(want, io.output_axes.replace("b", ""), io.batch_axes.replace("b", ""))
        got = got.reshape(want.shape) if got.size == want.size else got
        if got.shape != want.shape:
            raise ModelError(
                f"{path}: the output on the test input has shape {got.shape}, the test output {want.shape}."
            )
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))))
    return TestResult(str(descr.outputs[0].id), worst, tuple(expected.shape))
