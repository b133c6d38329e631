"""Freezing part of a network for fine-tuning: weights and batch-norm statistics alike."""

from __future__ import annotations

from collections.abc import Callable, Collection

from torch import nn


class FreezableEncoder(nn.Module):
    """Mixin for networks whose encoder can be frozen; subclasses say which parameters belong to it
    (:meth:`in_encoder`)."""

    @staticmethod
    def in_encoder(name: str) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def freeze_encoder(self, keep_trainable: Collection[str] = ()) -> int:
        """Stop training the encoder, weights and batch-norm statistics alike, so fine-tuning adapts
        only the rest. Tensors named in ``keep_trainable`` (e.g. a first layer that was not in the
        pretrained weights) keep training. Returns the number of frozen parameters."""
        return freeze_parameters(self, self.in_encoder, keep_trainable)

    def train(self, mode: bool = True):
        """Switch train/eval mode; frozen batch-norm layers keep their statistics fixed."""
        super().train(mode)
        for module in self.modules():
            frozen = isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None
            if frozen and not module.weight.requires_grad:
                module.eval()
        return self


def freeze_parameters(net: nn.Module, selected: Callable[[str], bool], keep: Collection[str] = ()) -> int:
    """``requires_grad = False`` for the parameters ``selected`` by name, except those in ``keep``;
    re-applies the train mode so frozen batch norms stop updating. Returns the frozen count."""
    frozen = 0
    for name, parameter in net.named_parameters():
        if selected(name) and name not in keep:
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    net.train(net.training)
    return frozen
