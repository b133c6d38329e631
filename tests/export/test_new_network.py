"""A network defined and registered in this file alone: saved as a checkpoint, rebuilt from it (also
under its older name) and exported to ONNX by export_onnx, deterministic and Monte Carlo, with no
module of export/ or train/checkpoint.py naming it. What it exports and how the export is checked is
the network's to say (idl.models.network.Network)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from idl.export.onnx import ExportError, export_onnx
from idl.infer.core.model_info import ModelInfo
from idl.infer.runtime.model import read_info
from idl.infer.runtime.session import OnnxRunner
from idl.models import MCDropout
from idl.models.network import Agreement, Examples, Exportable, largest_difference
from idl.models.registry import register
from idl.train.checkpoint import load_checkpoint, model_from_checkpoint, model_payload, save_checkpoint

NAME = "toy-mixer"


@dataclass(frozen=True)
class MixerSpec:
    in_channels: int = 2
    out_channels: int = 3
    dropout: float = 0.25


class Mixer(Exportable):
    """A per-pixel linear map of the channels after Monte Carlo dropout. Its graphs are traced and
    checked on inputs of its own choosing (odd sizes, batch and both spatial axes dynamic)."""

    def __init__(self, spec: MixerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.drop = MCDropout(spec.dropout)
        self.mix = nn.Conv2d(spec.in_channels, spec.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.drop(x))

    def example_inputs(self, info: ModelInfo) -> Examples:
        generator = torch.Generator().manual_seed(7)
        sizes = ((1, 5, 7), (3, 9, 4))  # batch, y, x
        trace, check = (torch.rand(b, info.in_channels, y, x, generator=generator) for b, y, x in sizes)
        return Examples(trace, (check,), {0: "n", 2: "rows", 3: "columns"})


register(NAME, Mixer, MixerSpec, aliases=("toy-mixer-v0",))


def _info() -> ModelInfo:
    return ModelInfo(
        task="semantic", in_channels=2, num_classes=3, size_multiple=1, halo=0, dropout=0.25, name="mixer"
    )


def test_a_registered_network_is_checkpointed_rebuilt_and_exported(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = Mixer(MixerSpec())
    with torch.no_grad():
        net.mix.weight.uniform_(-1, 1)
        net.mix.bias.uniform_(-1, 1)
    saved = save_checkpoint(tmp_path / "best.pt", model_payload(net, _info()))
    payload = load_checkpoint(saved)
    assert payload["architecture"] == NAME
    assert payload["spec"] == {"in_channels": 2, "out_channels": 3, "dropout": 0.25}
    rebuilt, info = model_from_checkpoint(payload)
    assert isinstance(rebuilt, Mixer) and not rebuilt.training and info == _info()
    for key, tensor in net.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], tensor)
    older, _ = model_from_checkpoint({**payload, "architecture": "toy-mixer-v0"})  # its older name
    assert isinstance(older, Mixer)

    det, mc = export_onnx(rebuilt, info, tmp_path / "model")
    assert mc is not None and mc.name == "model_mc.onnx"
    graph = onnx.load(str(det)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["n", 2, "rows", "columns"]  # the axes the network named
    runner = OnnxRunner(det, "cpu")
    assert read_info(runner).name == "mixer" and read_info(runner).output == "logits"
    x = torch.rand(4, 2, 13, 30, generator=torch.Generator().manual_seed(1))  # sizes it was not traced at
    with torch.no_grad():
        expected = net.eval()(x).numpy()
    assert np.abs(runner(x.numpy()) - expected).max() <= 1e-5

    # Monte Carlo: dropout on the input, rescaled, so the mean of many samples is the deterministic output
    one = x[:1].numpy()
    samples = OnnxRunner(mc, "cpu")(np.repeat(one, 4000, axis=0))
    assert samples.shape == (4000, 3, 13, 30)
    assert float(samples.std(axis=0).mean()) > 0.1  # the samples differ
    # the mean of 4000 samples has standard errors of at most 0.009 here: 0.06 is more than six of them
    assert np.abs(samples.mean(axis=0) - expected[0]).max() <= 0.06


class Shifted(Mixer):
    """A network that measures its graphs against torch's output shifted by 0.01, which they do not
    compute: export_onnx must find them 0.01 apart, refuse them and leave no graph behind."""

    def agreement(self, expected: torch.Tensor, got: torch.Tensor) -> Agreement:
        return largest_difference(expected + 0.01, got)


def test_the_export_is_checked_by_the_networks_own_measure(tmp_path: Path) -> None:
    shifted = r"on an input of shape \(3, 2, 9, 4\) \(max abs diff 1\.00e-02"  # ONNX Runtime's rounding aside
    with pytest.raises(ExportError, match=shifted):
        export_onnx(Shifted(MixerSpec()), _info(), tmp_path)
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "model_mc.onnx").exists()
