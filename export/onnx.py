"""torch -> ONNX: a deterministic eval graph and a Monte Carlo dropout graph, checked in ONNX Runtime.

Both graphs take normalized ``(N, C, Y, X)`` float32 input and output logits: U-Nets take Y and X in
multiples of their size multiple (the inference side pads) and output ``(N, K, Y, X)``; classifiers
take their fixed input size and output ``(N, K)``. The inference side applies sigmoid or softmax (per
Monte Carlo sample), which is also how bioimage.io packages declare it (post-processing). The batch
axis is dynamic, and so are a U-Net's spatial axes; weights are stored inside the single ``.onnx``
file. The model's :class:`~idl.infer.core.model_info.ModelInfo` is embedded as metadata so the file
describes itself.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from idl.infer.core.errors import ExportError, NothingToShow
from idl.infer.core.model_info import METADATA_KEY, ModelInfo
from idl.infer.io.images import atomic_path
from idl.infer.runtime.model import MC_SAMPLES_INPUT, mc_path_for
from idl.infer.runtime.session import OnnxRunner
from idl.models import ResNetClassifier, UNet, set_mc_dropout
from idl.models.maskrcnn import InstanceMaskRCNN

log = logging.getLogger("idl")

OPSET = 18
TOLERANCE = 1e-4


__all__ = ["ExportError", "NothingToShow", "export_onnx"]


class _Aligned(nn.Module):
    """The exported computation: the padding-free U-Net forward, logits out."""

    def __init__(self, net: UNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_aligned(x)


def exported_module(net: UNet | ResNetClassifier | InstanceMaskRCNN) -> nn.Module:
    """What the deterministic graph computes, on a CPU copy of ``net`` in evaluation mode with Monte
    Carlo dropout off: a U-Net's padding-free forward, any other network's forward. The package's
    TorchScript weights trace the same module."""
    net = copy.deepcopy(net).cpu().eval()
    set_mc_dropout(net, False)
    return _Aligned(net).eval() if isinstance(net, UNet) else net


def example_input(info: ModelInfo, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A random input of accepted size (2D: 4 x 6 multiples; 3D: 2 x 3 x 2, small but uneven)."""
    generator = torch.Generator().manual_seed(seed)
    if info.input_size:  # a network of one fixed input size (classifiers)
        return torch.rand(batch, info.in_channels, *info.input_size, generator=generator)
    blocks = (4, 6) if info.dims == 2 else (2, 3, 2)
    spatial = "zyx"[-info.dims :]
    shape = [b * info.multiple_of(a) for b, a in zip(blocks, spatial, strict=True)]
    return torch.rand(batch, info.in_channels, *shape, generator=generator)


class _Samples(nn.Module):
    """A U-Net's Monte Carlo graph with a sample count: ``(input, samples)`` -> ``len(samples)``
    samples of each input (:meth:`UNet.forward_samples`)."""

    def __init__(self, net: UNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
        return self.net.forward_samples(x, samples)


def _export(
    module: nn.Module, example: torch.Tensor, path: Path, info: ModelInfo, samples: torch.Tensor | None = None
) -> None:
    """Trace ``module`` into ``path`` with a dynamic batch axis (and dynamic spatial axes for a
    U-Net), as torchvision's own ONNX tests export: the TorchScript exporter takes under a second
    where ``torch.export`` (``dynamo=True``) took about 15 s per graph, and its graphs pass the same
    checks (:func:`verify_deterministic`, :func:`verify_stochastic`; MC dropout's explicit random
    mask traces to ``RandomUniformLike``). With ``samples`` the graph takes a second input whose length
    is the number of Monte Carlo samples per input (its output has ``batch * samples`` items)."""
    spatial = "" if info.input_size else "zyx"[-info.dims :]  # a fixed input size (classifiers)
    dynamic = {0: "batch", **{2 + i: axis for i, axis in enumerate(spatial)}}
    inputs, names, axes = (example,), ["input"], {"input": dynamic, "output": dynamic}
    if samples is not None:
        inputs, names = (example, samples), ["input", MC_SAMPLES_INPUT]
        axes = {"input": dynamic, MC_SAMPLES_INPUT: {0: "samples"}, "output": {**dynamic, 0: "draws"}}
    with atomic_path(path) as tmp, contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracing notes
        torch.onnx.export(
            module,
            inputs,
            str(tmp),
            dynamo=False,
            opset_version=OPSET,
            input_names=names,
            output_names=["output"],
            dynamic_axes=axes,
        )
        _add_metadata(tmp, info)


def verify_deterministic(
    module: nn.Module, path: Path, info: ModelInfo, tolerance: float = TOLERANCE
) -> float:
    """Max absolute difference between ONNX Runtime and torch on a random input; raises if too large."""
    x = example_input(info, seed=1)
    with torch.no_grad():
        expected = module(x).numpy()
    got = OnnxRunner(path, "cpu")(x.numpy())
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= tolerance:
        raise ExportError(
            f"{path}: ONNX Runtime output differs from torch by {diff:.3g} (> {tolerance}); the export is "
            "not trustworthy. Please report this with the checkpoint."
        )
    return diff


def verify_stochastic(path: Path, info: ModelInfo) -> float:
    """Mean absolute difference between two MC samples of the same input; raises if they are equal
    (or, for a graph with a sample count, when it does not return one output per sample)."""
    x = example_input(info, batch=1, seed=2).numpy()
    runner = OnnxRunner(path, "cpu")
    if len(runner.input_names) == 2:
        samples = runner.run_all([np.repeat(x, 2, axis=0), np.zeros(3, np.float32)])[0]
        if samples.shape[0] != 6:
            raise ExportError(f"{path}: 3 samples of 2 inputs gave {samples.shape[0]} outputs, not 6.")
        samples = samples[3:5]  # two samples of the second input
    else:
        samples = runner(np.repeat(x, 2, axis=0))
    spread = float(np.mean(np.abs(samples[0] - samples[1])))
    if not spread > 0:
        raise ExportError(f"{path}: the Monte Carlo graph returns identical samples; dropout was lost.")
    return spread


def _add_metadata(path: Path, info: ModelInfo) -> None:
    import onnx

    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    proto.producer_name = "idl"
    onnx.save(proto, str(path))


DETECTOR_SIZES = ((160, 224), (256, 192))  # two uneven sizes, neither a multiple of 32
DETECTOR_OPSET = 17


def compare_detector(module: nn.Module, path: Path, x: torch.Tensor) -> tuple[float, float]:
    """ONNX Runtime vs torch on one ``(1, C, Y, X)`` input of a Mask R-CNN graph: the share of pixels
    whose label differs, and the largest score difference where the labels agree."""
    with torch.no_grad():
        expected = module(x).numpy()
    got = OnnxRunner(path, "cpu")(x.numpy())
    same = got[0, 0] == expected[0, 0]
    score = float(np.max(np.abs(got[0, 1] - expected[0, 1])[same], initial=0.0))
    return float(1.0 - same.mean()), score


def export_detector(net: InstanceMaskRCNN, info: ModelInfo, path: Path, tolerance: float = 1e-3) -> Path:
    """Export Mask R-CNN the way torchvision's own ONNX tests do (TorchScript tracing, opset 17,
    dynamic image size), then check ONNX Runtime against torch on two image sizes: labels may differ
    on at most ``tolerance`` of the pixels (a mask probability within rounding of 0.5), scores by at
    most ``tolerance``."""
    net = copy.deepcopy(net).cpu().eval()
    generator = torch.Generator().manual_seed(0)
    examples = [torch.rand(1, info.in_channels, *size, generator=generator) for size in DETECTOR_SIZES]
    with atomic_path(path) as tmp, contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing warnings about Python control flow torchvision expects
        torch.onnx.export(
            net,
            (examples[0],),
            str(tmp),
            dynamo=False,
            opset_version=DETECTOR_OPSET,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {2: "y", 3: "x"}, "output": {2: "y", 3: "x"}},
        )
        _add_metadata(tmp, info)
    for x in examples:
        labels, scores = compare_detector(net, path, x)
        if labels > tolerance or scores > tolerance:
            path.unlink(missing_ok=True)
            raise ExportError(
                f"{path}: ONNX Runtime differs from torch on a {x.shape[2]} x {x.shape[3]} image "
                f"({labels:.2%} of the labels, scores by {scores:.3g}); the export is not trustworthy. "
                "Please report this."
            )
    log.info("exported %s (Mask R-CNN; ONNX Runtime equals torch on two image sizes)", path.name)
    return path


def export_onnx(
    net: UNet | ResNetClassifier | InstanceMaskRCNN, info: ModelInfo, out_dir: Path, name: str = "model.onnx"
) -> tuple[Path, Path | None]:
    """Write ``name`` (deterministic) and, when the net has dropout, its ``_mc`` twin; verify both."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(net, InstanceMaskRCNN):
        info = replace(info, output="labels")
        mc_path_for(out_dir / name).unlink(missing_ok=True)
        return export_detector(net, info, out_dir / name), None
    info = replace(info, output="logits")  # what these graphs output, whatever an older checkpoint says
    net = copy.deepcopy(net).cpu().eval()
    module = _Aligned(net).eval() if isinstance(net, UNet) else net
    example = example_input(info)
    det_path = out_dir / name
    set_mc_dropout(net, False)
    _export(module, example, det_path, info)
    diff = verify_deterministic(module, det_path, info)
    log.info("exported %s (ONNX Runtime vs torch: max abs diff %.2e)", det_path.name, diff)
    mc_path = mc_path_for(det_path)
    if info.dropout <= 0 or set_mc_dropout(net, True) == 0:
        mc_path.unlink(missing_ok=True)  # never leave an older model's Monte Carlo graph beside this one
        return det_path, None
    if isinstance(net, UNet):  # the part before the first dropout runs once per tile
        _export(_Samples(net).eval(), example, mc_path, info, samples=torch.zeros(3))
    else:
        _export(module, example, mc_path, info)
    spread = verify_stochastic(mc_path, info)
    log.info("exported %s (Monte Carlo samples differ by %.2e on average)", mc_path.name, spread)
    return det_path, mc_path
