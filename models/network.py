"""What idl needs of a network beyond ``nn.Module``: the :class:`Network` protocol, and the defaults
(:class:`Exportable`) a network inherits where it has nothing to add.

Training builds a network from its ``spec``, a checkpoint stores the spec and rebuilds the network
from it (:mod:`idl.models.registry`), and export asks the network what to export and how to check it:
the deterministic computation (:meth:`Network.exported`), its Monte Carlo variant
(:meth:`Network.monte_carlo`), inputs to trace and check it with (:meth:`Network.example_inputs`), how
far the exported graph may be from torch (:meth:`Network.agreement`, :attr:`Network.tolerance`), and
the weight formats of its bioimage.io package. No module outside ``idl.models`` decides anything by a
network's class.

This module is inlined into the architecture file of every package (it is a base class of the
networks): it imports torch and ``idl.models`` only.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from idl.models.dropout import set_mc_dropout

if TYPE_CHECKING:
    from idl.infer.core.model_info import ModelInfo

# the largest difference from torch an exported graph may show (its output before the activation)
TOLERANCE = 1e-4
# the weight formats of a package: the ONNX graph, the state dict with its architecture file (which
# needs the network's ``builder``) and a TorchScript trace
WEIGHT_FORMATS = ("onnx", "pytorch_state_dict", "torchscript")


@dataclass(frozen=True)
class Examples:
    """Random inputs a network accepts: one to trace its export with, others to check the export on
    (other values, and other sizes or batches where the graph allows them), and which axes of the
    input (and the output alike) may change size in the exported graph."""

    trace: torch.Tensor
    check: tuple[torch.Tensor, ...]
    axes: Mapping[int, str]  # axis index -> name, e.g. {0: "batch", 2: "y", 3: "x"}


@dataclass(frozen=True)
class MonteCarlo:
    """A network's Monte Carlo computation, dropout active on every call. With ``sample_count`` it
    takes a second input whose length is the number of samples, and returns that many samples of each
    input, those of the first input first (the inference side's sample-count graph)."""

    module: nn.Module
    sample_count: bool = False


@dataclass(frozen=True)
class Agreement:
    """How far an export is from torch on one input, as the network measures it: ``difference`` is
    compared with the tolerance, ``text`` says it in words for logs and errors."""

    difference: float
    text: str


@runtime_checkable
class Network(Protocol):
    """A network idl can train, checkpoint and export (an ``nn.Module`` with these members).

    ``spec`` is a frozen dataclass holding everything that rebuilds the network
    (``type(net)(net.spec)``); it is stored in checkpoints and, as keyword arguments of ``builder``,
    in packages.
    """

    spec: Any
    builder: ClassVar[str]  # the idl.models function a package's architecture file rebuilds it with
    output: ClassVar[str]  # what its graphs output: "logits" (idl applies the activation) or "labels"
    onnx_opset: ClassVar[int | None]  # None: the exporter's default
    tolerance: ClassVar[float]  # the largest Agreement.difference of ONNX Runtime from torch

    @property
    def weight_formats(self) -> tuple[str, ...]:
        """The weight formats of its bioimage.io package (of :data:`WEIGHT_FORMATS`)."""
        ...

    def formats_at_every_size(self) -> tuple[str, ...]:
        """The weight formats bioimage.io's ``test_model`` runs at three tile sizes (the others on the
        test tensor only): those whose runs take seconds, not minutes, on a CPU."""
        ...

    def exported(self) -> nn.Module:
        """What the deterministic graph computes: a CPU copy in evaluation mode, Monte Carlo dropout
        off. The package's TorchScript weights trace the same module."""
        ...

    def monte_carlo(self) -> MonteCarlo | None:
        """What the Monte Carlo graph computes (a CPU copy in evaluation mode, dropout active), or
        None for a network without dropout."""
        ...

    def example_inputs(self, info: ModelInfo) -> Examples:
        """Seeded random inputs of sizes the network accepts (the same on every call)."""
        ...

    def agreement(self, expected: torch.Tensor, got: torch.Tensor) -> Agreement:
        """How far ``got`` (an exported graph's output) is from ``expected`` (torch's)."""
        ...


def eval_copy(net: nn.Module, monte_carlo: bool = False) -> tuple[nn.Module, int]:
    """A CPU copy of ``net`` in evaluation mode with Monte Carlo dropout on or off, and the number of
    its Monte Carlo dropout layers."""
    net = copy.deepcopy(net).cpu().eval()
    return net, set_mc_dropout(net, monte_carlo)


def random_input(info: ModelInfo, batch: int, seed: int) -> torch.Tensor:
    """A seeded random input of a size ``info`` accepts: its one input size, or (2D) 4 x 6 and (3D)
    2 x 3 x 2 size multiples, small but uneven."""
    generator = torch.Generator().manual_seed(seed)
    if info.input_size:  # a network of one fixed input size (classifiers)
        return torch.rand(batch, info.in_channels, *info.input_size, generator=generator)
    blocks = (4, 6) if info.dims == 2 else (2, 3, 2)
    spatial = "zyx"[-info.dims :]
    shape = [b * info.multiple_of(a) for b, a in zip(blocks, spatial, strict=True)]
    return torch.rand(batch, info.in_channels, *shape, generator=generator)


def examples_from_info(info: ModelInfo) -> Examples:
    """Inputs of the sizes ``info`` gives, batch dynamic: a network of one input size is checked on
    another batch, one of any size on y and x swapped too."""
    trace, check = random_input(info, 2, 0), random_input(info, 2, 1)
    if info.input_size:
        return Examples(trace, (check, random_input(info, 1, 2)), {0: "batch"})
    spatial = "zyx"[-info.dims :]
    axes = {0: "batch", **{2 + i: axis for i, axis in enumerate(spatial)}}
    # y and x swapped: another spatial shape (the in-plane axes share their size multiple)
    return Examples(trace, (check, check.transpose(-1, -2).contiguous()), axes)


def largest_difference(expected: torch.Tensor, got: torch.Tensor) -> Agreement:
    """The largest absolute difference (infinite for outputs of different shapes)."""
    if expected.shape != got.shape:
        return Agreement(float("inf"), f"output shape {tuple(got.shape)} instead of {tuple(expected.shape)}")
    difference = float((got.double() - expected.double()).abs().max()) if got.numel() else 0.0
    return Agreement(difference, f"max abs diff {difference:.2e}")


class Exportable(nn.Module):
    """The :class:`Network` defaults: the forward, exported as it is (logits out, ONNX Runtime within
    :data:`TOLERANCE` of torch), its Monte Carlo variant the same forward with dropout active (none
    without :class:`~idl.models.dropout.MCDropout` layers), inputs of the sizes the model's
    ``ModelInfo`` gives, and every weight format, each tested at every tile size."""

    builder: ClassVar[str] = ""
    output: ClassVar[str] = "logits"
    onnx_opset: ClassVar[int | None] = None
    tolerance: ClassVar[float] = TOLERANCE

    @property
    def weight_formats(self) -> tuple[str, ...]:
        return WEIGHT_FORMATS if self.builder else ("onnx",)

    def formats_at_every_size(self) -> tuple[str, ...]:
        return self.weight_formats

    def exported(self) -> nn.Module:
        return eval_copy(self)[0]

    def monte_carlo(self) -> MonteCarlo | None:
        net, layers = eval_copy(self, monte_carlo=True)
        return MonteCarlo(net) if layers else None

    def example_inputs(self, info: ModelInfo) -> Examples:
        return examples_from_info(info)

    def agreement(self, expected: torch.Tensor, got: torch.Tensor) -> Agreement:
        return largest_difference(expected, got)
