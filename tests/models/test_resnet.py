"""The ResNet classifier: channels, sizes, where the Monte Carlo dropout sits, freezing."""

from __future__ import annotations

import pytest
import torch

from idl.models import MCDropout, ResNetClassifier, ResNetSpec, build_resnet, set_mc_dropout


@pytest.mark.parametrize(
    ("variant", "channels", "size", "small"),
    [("resnet18", 1, 32, True), ("resnet18", 3, 96, False), ("resnet50", 5, 32, True)],
)
def test_logits_for_any_channels_and_small_inputs(
    variant: str, channels: int, size: int, small: bool
) -> None:
    net = ResNetClassifier(ResNetSpec(channels, 4, variant, 0.2, small)).eval()
    with torch.no_grad():
        out = net(torch.rand(2, channels, size, size))
    assert out.shape == (2, 4)
    assert net.net.conv1.in_channels == channels
    assert net.net.conv1.kernel_size == ((3, 3) if small else (7, 7))


def test_dropout_in_every_residual_block_and_before_the_classifier() -> None:
    net = build_resnet(1, 3, "resnet50", 0.3)
    blocks = [b for stage in (net.net.layer1, net.net.layer2, net.net.layer3, net.net.layer4) for b in stage]
    assert len(blocks) == 16  # ResNet50: 3 + 4 + 6 + 3 bottlenecks
    assert all(isinstance(b.conv3[0], MCDropout) and b.conv3[0].p == 0.3 for b in blocks)
    assert isinstance(net.net.fc[0], MCDropout)
    assert set_mc_dropout(net, True) == 17


def test_monte_carlo_samples_differ_and_eval_is_deterministic() -> None:
    torch.manual_seed(0)
    net = ResNetClassifier(ResNetSpec(1, 3, "resnet18", 0.2, True)).eval()
    x = torch.rand(1, 1, 32, 32).repeat(2, 1, 1, 1)
    with torch.no_grad():
        a = net(x)
        assert torch.equal(a[0], a[1])
        set_mc_dropout(net, True)
        b = net(x)
    assert float((b[0] - b[1]).abs().max()) > 1e-4


def test_freeze_encoder_leaves_only_the_classifier_trainable() -> None:
    net = ResNetClassifier(ResNetSpec(1, 3, "resnet18", 0.2, True))
    frozen = net.freeze_encoder(keep_trainable={"net.conv1.weight"})
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"net.conv1.weight", "net.fc.1.weight", "net.fc.1.bias"}
    assert frozen == sum(p.numel() for n, p in net.named_parameters() if n not in trainable)
    net.train()
    assert not net.net.bn1.training  # frozen batch-norm statistics stay fixed


def test_spec_checks() -> None:
    with pytest.raises(ValueError, match="unknown ResNet 'resnet7'"):
        ResNetSpec(1, 3, "resnet7")
    with pytest.raises(ValueError, match=">= 2 classes"):
        ResNetSpec(1, 1)
