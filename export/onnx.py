"""torch -> ONNX: a deterministic eval graph and a Monte Carlo dropout graph, checked in ONNX Runtime.

The network says what to export (:class:`~idl.models.network.Network`): the computation of each
graph, the inputs to trace and check it with and which of their axes stay dynamic, what its output
is, and how far ONNX Runtime may be from torch. U-Nets take normalized ``(N, C, [Z,] Y, X)`` float32
input in multiples of their size multiple (the inference side pads) and output logits of the same
size, their Monte Carlo graph takes the number of samples as a second input; classifiers take their
fixed input size and output ``(N, K)`` logits; Mask R-CNN takes one image of any size and outputs
labels and scores. The inference side applies sigmoid or softmax to logits (per Monte Carlo sample),
which is also how bioimage.io packages declare it (post-processing). Weights are stored inside the
single ``.onnx`` file, and the model's :class:`~idl.infer.core.model_info.ModelInfo` is embedded as
metadata so the file describes itself.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from idl.export.metadata import add_metadata
from idl.infer.core.errors import ExportError, NothingToShow
from idl.infer.core.model_info import ModelInfo
from idl.infer.io.images import atomic_path
from idl.infer.runtime.model import MC_SAMPLES_INPUT, mc_path_for
from idl.infer.runtime.precision import int8_path_for
from idl.infer.runtime.session import OnnxRunner
from idl.models.network import TOLERANCE, Agreement, Network
from idl.models.registry import describe

log = logging.getLogger("idl")

OPSET = 18  # unless the network names another (Network.onnx_opset)

__all__ = ["TOLERANCE", "ExportError", "NothingToShow", "export_onnx"]


def _export(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: Path,
    info: ModelInfo,
    axes: Mapping[int, str],
    opset: int | None = None,
    sample_count: bool = False,
) -> None:
    """Trace ``module`` into ``path`` with the network's dynamic ``axes`` (of input and output), as
    torchvision's own ONNX tests export: the TorchScript exporter takes under a second where
    ``torch.export`` (``dynamo=True``) took about 15 s per graph, and its graphs pass the same checks
    (:func:`verify_deterministic`, :func:`verify_stochastic`; MC dropout's explicit random mask traces
    to ``RandomUniformLike``). With ``sample_count`` the graph's second input is the number of Monte
    Carlo samples per input (its length; the output has ``batch * samples`` items)."""
    dynamic = dict(axes)
    names, dynamic_axes = ["input"], {"input": dynamic, "output": dynamic}
    if sample_count:
        names = ["input", MC_SAMPLES_INPUT]
        dynamic_axes = {"input": dynamic, MC_SAMPLES_INPUT: {0: "samples"}, "output": {**dynamic, 0: "draws"}}
    with atomic_path(path) as tmp, contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracing notes
        torch.onnx.export(
            module,
            inputs,
            str(tmp),
            dynamo=False,
            opset_version=opset or OPSET,
            input_names=names,
            output_names=["output"],
            dynamic_axes=dynamic_axes,
        )
        add_metadata(tmp, info)


def verify_deterministic(
    network: Network, module: nn.Module, path: Path, inputs: tuple[torch.Tensor, ...]
) -> Agreement:
    """ONNX Runtime against torch's ``module`` on each of ``inputs``, as ``network`` measures it: the
    worst agreement; raises :class:`ExportError` when it exceeds the network's tolerance."""
    runner = OnnxRunner(path, "cpu")
    worst: Agreement | None = None
    for x in inputs:
        with torch.no_grad():
            expected = module(x)
        agreement = network.agreement(expected, torch.from_numpy(runner(x.numpy())))
        if not agreement.difference <= network.tolerance:
            raise ExportError(
                f"{path}: ONNX Runtime output differs from torch on an input of shape {tuple(x.shape)} "
                f"({agreement.text}; tolerance {network.tolerance:g}); the export is not trustworthy. "
                "Please report this with the checkpoint."
            )
        if worst is None or agreement.difference > worst.difference:
            worst = agreement
    assert worst is not None, "no input to check the export on"
    return worst


def verify_stochastic(path: Path, x: torch.Tensor) -> float:
    """Mean absolute difference between two MC samples of one input ``x`` (batch 1); raises if they
    are equal (or, for a graph with a sample count, when it does not return one output per sample)."""
    x = x.numpy()
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


def export_onnx(
    net: Network, info: ModelInfo, out_dir: Path, name: str = "model.onnx"
) -> tuple[Path, Path | None]:
    """Write ``name`` (deterministic) and, when the network has dropout, its ``_mc`` twin; verify both
    (a graph that fails its check is removed). What is exported and how it is checked is the
    network's to say (:class:`~idl.models.network.Network`; a module that does not implement it is
    exported as its forward)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    network = describe(net)
    info = replace(info, output=network.output)  # what the graphs output, whatever an older checkpoint says
    examples = network.example_inputs(info)
    det_path, mc_path = out_dir / name, mc_path_for(out_dir / name)
    for stale in (int8_path_for(det_path), mc_path_for(int8_path_for(det_path))):
        stale.unlink(missing_ok=True)  # an earlier export's int8 graphs (export/quantize.py) are stale
    module = network.exported()
    _export(module, (examples.trace,), det_path, info, examples.axes, network.onnx_opset)
    try:
        agreement = verify_deterministic(network, module, det_path, examples.check)
    except ExportError:
        det_path.unlink(missing_ok=True)
        raise
    log.info("exported %s (ONNX Runtime vs torch: %s)", det_path.name, agreement.text)
    monte_carlo = network.monte_carlo() if info.dropout > 0 else None
    if monte_carlo is None:
        mc_path.unlink(missing_ok=True)  # never leave an older model's Monte Carlo graph beside this one
        return det_path, None
    inputs = (examples.trace, torch.zeros(3)) if monte_carlo.sample_count else (examples.trace,)
    _export(
        monte_carlo.module, inputs, mc_path, info, examples.axes, network.onnx_opset, monte_carlo.sample_count
    )
    spread = verify_stochastic(mc_path, examples.check[0][:1])
    log.info(
        "exported %s (two Monte Carlo samples of a random input differ by %.2e on average: dropout is "
        "active in it; 0 would mean the samples could not show any uncertainty)",
        mc_path.name,
        spread,
    )
    return det_path, mc_path
