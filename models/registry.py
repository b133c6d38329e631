"""The networks idl knows, by the architecture name checkpoints store; :func:`register` adds one
(importing :mod:`idl.models` registers the built-in ones).

Training writes a network's name (:func:`network_name`) and spec into every checkpoint, and rebuilding
a checkpoint's network (:func:`registered_network`) reads them back, also by the older names a network
was stored under. Export asks the network itself (:func:`describe`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from idl.models.network import (
    TOLERANCE,
    WEIGHT_FORMATS,
    Agreement,
    Examples,
    MonteCarlo,
    Network,
    eval_copy,
    examples_from_info,
    largest_difference,
)

if TYPE_CHECKING:
    from idl.infer.core.model_info import ModelInfo


@dataclass(frozen=True)
class Registered:
    """A network class, the spec dataclass it is built from, the name checkpoints store and the names
    older checkpoints stored it under."""

    name: str
    network: type[nn.Module]
    spec: type
    aliases: tuple[str, ...] = ()

    def build(self, spec: Mapping[str, Any]) -> nn.Module:
        """The network from its spec's fields (a checkpoint's ``spec``), freshly initialized."""
        return self.network(self.spec(**spec))


_BY_NAME: dict[str, Registered] = {}  # by name and by alias
_BY_CLASS: dict[type, Registered] = {}


def register(name: str, network: type[nn.Module], spec: type, aliases: tuple[str, ...] = ()) -> Registered:
    """Make ``network`` (built as ``network(spec(...))``) the one stored under ``name`` (and read under
    ``aliases``); a later registration of a name replaces the earlier one."""
    if not isinstance(network, type) or not issubclass(network, nn.Module):
        raise TypeError(f"{network!r} is not an nn.Module class")
    entry = Registered(name, network, spec, tuple(aliases))
    for key in (name, *entry.aliases):
        _BY_NAME[key] = entry
    _BY_CLASS[network] = entry
    return entry


def registered() -> tuple[Registered, ...]:
    """Every registered network, once, in registration order."""
    return tuple(dict.fromkeys(_BY_NAME.values()))


def registered_network(name: str | None) -> Registered | None:
    """The network stored under ``name`` (or an older name of it), or None."""
    return _BY_NAME.get(name) if name is not None else None


def network_name(net: nn.Module) -> str | None:
    """The name checkpoints store for ``net``'s class, or None for a class no one registered."""
    entry = _BY_CLASS.get(type(net))
    return entry.name if entry is not None else None


def describe(net: nn.Module) -> Network:
    """``net`` as a :class:`Network`: itself where it implements the protocol; otherwise (a module
    defined elsewhere, e.g. by a task of its own) its forward, exported by the defaults of
    :class:`~idl.models.network.Exportable`, as ONNX weights alone unless it names a ``builder``."""
    return net if isinstance(net, Network) else _Plain(net)


class _Plain:
    """A module that does not describe itself, described by the defaults."""

    output = "logits"
    onnx_opset = None
    tolerance = TOLERANCE

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.spec = getattr(net, "spec", None)
        self.builder = str(getattr(net, "builder", "") or "")

    @property
    def weight_formats(self) -> tuple[str, ...]:
        return WEIGHT_FORMATS if self.builder else ("onnx",)

    def formats_at_every_size(self) -> tuple[str, ...]:
        return self.weight_formats

    def exported(self) -> nn.Module:
        return eval_copy(self.net)[0]

    def monte_carlo(self) -> MonteCarlo | None:
        net, layers = eval_copy(self.net, monte_carlo=True)
        return MonteCarlo(net) if layers else None

    def example_inputs(self, info: ModelInfo) -> Examples:
        return examples_from_info(info)

    def agreement(self, expected: torch.Tensor, got: torch.Tensor) -> Agreement:
        return largest_difference(expected, got)
