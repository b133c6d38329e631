"""The Network protocol and the registry: what each built-in network says about its export, the
defaults a network inherits, and the names checkpoints store."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from torch import nn

from idl.infer.core.model_info import ModelInfo
from idl.models import (
    InstanceMaskRCNN,
    MaskRCNNSpec,
    MCDropout,
    Network,
    ResNetClassifier,
    ResNetSpec,
    UNet,
    UNetSpec,
    set_mc_dropout,
)
from idl.models.maskrcnn import compare_labels
from idl.models.network import WEIGHT_FORMATS, examples_from_info, largest_difference
from idl.models.registry import describe, network_name, register, registered, registered_network


def _info(**fields: object) -> ModelInfo:
    base: dict[str, object] = {"task": "semantic", "in_channels": 1, "num_classes": 2, "halo": 0}
    return ModelInfo(**{**base, "size_multiple": 8, **fields})  # type: ignore[arg-type]


def test_builtin_networks_are_registered_under_their_checkpoint_names() -> None:
    names = {r.name: r for r in registered()}
    assert (names["unet"].network, names["unet"].spec) == (UNet, UNetSpec)
    assert (names["resnet"].network, names["resnet"].spec) == (ResNetClassifier, ResNetSpec)
    assert (names["maskrcnn"].network, names["maskrcnn"].spec) == (InstanceMaskRCNN, MaskRCNNSpec)
    assert registered_network("unet2d") is names["unet"]  # checkpoints from before the 3D U-Net
    assert registered_network("vgg16") is None and registered_network(None) is None
    spec = UNetSpec(in_channels=2, depth=2, base_filters=4, dims=3)
    net = UNet(spec)
    assert network_name(net) == "unet" and network_name(nn.Conv2d(1, 1, 1)) is None
    rebuilt = registered_network("unet2d").build(asdict(spec))
    assert type(rebuilt) is UNet and rebuilt.spec == spec
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in net.state_dict().items()
    }


def test_register_refuses_what_is_not_a_module_class() -> None:
    with pytest.raises(TypeError, match="not an nn.Module class"):
        register("spec", UNetSpec, UNetSpec)


def test_every_builtin_network_implements_the_protocol() -> None:
    nets = [
        UNet(UNetSpec(depth=2, base_filters=4)),
        ResNetClassifier(ResNetSpec(1, 2, "resnet18", small_input=True)),
        InstanceMaskRCNN(MaskRCNNSpec()),
    ]
    for net in nets:
        assert isinstance(net, Network) and describe(net) is net
        assert net.weight_formats == WEIGHT_FORMATS and net.builder
    unet, resnet, maskrcnn = nets
    assert (unet.output, resnet.output, maskrcnn.output) == ("logits", "logits", "labels")
    assert (unet.tolerance, resnet.tolerance, maskrcnn.tolerance) == (1e-4, 1e-4, 1e-3)
    assert (unet.onnx_opset, maskrcnn.onnx_opset) == (None, 17)
    assert unet.formats_at_every_size() == resnet.formats_at_every_size() == WEIGHT_FORMATS
    assert UNet(UNetSpec(depth=2, base_filters=4, dims=3)).formats_at_every_size() == ("onnx",)
    assert maskrcnn.formats_at_every_size() == ("onnx",) and maskrcnn.monte_carlo() is None


def test_examples_have_the_sizes_model_info_gives() -> None:
    planar = examples_from_info(_info())
    assert planar.trace.shape == (2, 1, 32, 48)  # 4 x 6 size multiples
    assert [tuple(x.shape) for x in planar.check] == [(2, 1, 32, 48), (2, 1, 48, 32)]
    assert dict(planar.axes) == {0: "batch", 2: "y", 3: "x"}
    assert not torch.equal(planar.trace, planar.check[0])  # other values to check on
    torch.testing.assert_close(planar.check[1], planar.check[0].transpose(-1, -2), rtol=0, atol=0)
    again = examples_from_info(_info())
    assert torch.equal(again.trace, planar.trace)  # seeded: the same on every call
    volume = examples_from_info(_info(dims=3, axes="zyx", z_multiple=4))
    assert volume.trace.shape == (2, 1, 8, 24, 16)  # z: 2 multiples of 4
    assert dict(volume.axes) == {0: "batch", 2: "z", 3: "y", 4: "x"}
    fixed = examples_from_info(_info(in_channels=3, input_size=(28, 28), size_multiple=1))
    shapes = [tuple(x.shape) for x in (fixed.trace, *fixed.check)]
    assert shapes == [(2, 3, 28, 28), (2, 3, 28, 28), (1, 3, 28, 28)]  # and another batch
    assert dict(fixed.axes) == {0: "batch"}  # one input size: only the batch varies


def test_unet_exports_its_padding_free_forward_and_a_sample_count_graph(randomized_norms) -> None:
    torch.manual_seed(0)
    net = randomized_norms(UNet(UNetSpec(depth=2, base_filters=4, dropout=0.3, dropout_at="decoder")))
    net.train()
    exported = net.exported()
    assert net.training and not exported.training  # a copy: the network itself is left as it was
    assert all(a is not b for a, b in zip(exported.parameters(), net.parameters(), strict=True))
    x = torch.rand(2, 1, 16, 24)
    with torch.no_grad():
        expected = net.eval().forward_aligned(x)
        assert torch.equal(exported(x), expected)
        monte_carlo = net.monte_carlo()
        assert monte_carlo is not None and monte_carlo.sample_count
        samples = monte_carlo.module(x, torch.zeros(3))
        assert samples.shape == (6, 1, 16, 24)
        assert float((samples[0] - samples[1]).abs().mean()) > 1e-3  # dropout is active
        set_mc_dropout(monte_carlo.module, False)
        same = monte_carlo.module(x, torch.zeros(3))
    torch.testing.assert_close(same, expected.repeat_interleave(3, dim=0), rtol=0, atol=1e-5)
    assert UNet(UNetSpec(depth=2, base_filters=4, dropout=0.0)).monte_carlo() is None


def test_resnet_exports_its_forward_with_and_without_dropout() -> None:
    torch.manual_seed(0)
    net = ResNetClassifier(ResNetSpec(1, 3, "resnet18", small_input=True)).eval()
    x = torch.rand(2, 1, 28, 28)
    monte_carlo = net.monte_carlo()
    assert monte_carlo is not None and not monte_carlo.sample_count
    with torch.no_grad():
        assert torch.equal(net.exported()(x), net(x))
        first, second = monte_carlo.module(x), monte_carlo.module(x)
    assert float((first - second).abs().max()) > 1e-4
    with torch.no_grad():
        assert torch.equal(net(x), net(x))  # the network's own dropout was never switched on


def test_largest_difference_and_mask_rcnn_label_agreement() -> None:
    expected = torch.zeros(1, 2, 4, 4)
    got = expected.clone()
    got[0, 1, 0, 0] = 0.25
    got[0, 0, 3, 3] = -0.5
    agreement = largest_difference(expected, got)
    assert agreement.difference == 0.5 and agreement.text == "max abs diff 5.00e-01"
    assert largest_difference(expected, got[..., :3]).difference == float("inf")
    labels = torch.zeros(1, 2, 4, 4)
    labels[0, 0, :2] = 1.0  # 8 pixels of object 1
    labels[0, 1, :2] = 0.9
    other = labels.clone()
    other[0, 0, 0, :2] = 2.0  # 2 of 16 pixels relabelled
    other[0, 1, 1, 3] = 0.6  # a score 0.3 lower where the labels agree
    other[0, 1, 0, 0] = 0.0  # a score where they do not: not counted
    share, score = compare_labels(labels, other)
    assert share == 2 / 16 and score == pytest.approx(0.3)
    agreement = InstanceMaskRCNN.agreement(None, labels, other)  # type: ignore[arg-type]
    assert agreement.difference == pytest.approx(0.3) and "12.50% of the labels differ" in agreement.text


def test_a_module_that_does_not_describe_itself_is_exported_by_the_defaults() -> None:
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(1, 2, 1))
    network = describe(plain)
    assert network is not plain and not isinstance(plain, Network)
    assert network.weight_formats == ("onnx",) and network.output == "logits"
    assert network.monte_carlo() is None  # no Monte Carlo dropout
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(network.exported()(x), plain(x))
    sampled = describe(nn.Sequential(MCDropout(0.5), nn.Conv2d(1, 2, 1))).monte_carlo()
    assert sampled is not None
    with torch.no_grad():
        assert not torch.equal(sampled.module(x), sampled.module(x))
