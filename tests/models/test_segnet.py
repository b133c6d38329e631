"""SegNet (--model segnet): unpooling by switches against PyTorch's MaxUnpool2d, Monte Carlo
samples, the ONNX graphs against torch, and tiled prediction with its halo against the whole image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from idl.infer.core.model_info import ModelInfo
from idl.models import SegNet, SegNetSpec, set_mc_dropout
from idl.models.segnet import unpool


def test_unpooling_by_switches_is_max_unpool_even_with_ties() -> None:
    """The values go where max_pool2d's indices point, the first maximum of a window on ties (an
    input of three values has many), 0 elsewhere."""
    torch.manual_seed(0)
    for before in (torch.randint(0, 3, (2, 3, 8, 10)).float(), torch.randn(1, 4, 16, 6)):
        pooled, indices = nn.functional.max_pool2d(before, 2, return_indices=True)
        values = torch.randn_like(pooled)
        expected = nn.functional.max_unpool2d(values, indices, 2, output_size=before.shape[-2:])
        got = unpool(values, before)
        assert torch.equal(got, expected)
        assert int((got != 0).sum()) == values.numel()  # one position per window


def test_segnet_has_no_skip_connections_and_its_dropout_places() -> None:
    net = SegNet(SegNetSpec(depth=3, base_filters=4, out_channels=2))
    assert [level.body[0].in_channels for level in net.decoder] == [16, 8, 4]  # unpooled, not concatenated
    assert [level.drop is not None for level in net.encoder] == [True] * 3
    assert all(level.drop is None for level in net.decoder)
    decoder = SegNet(SegNetSpec(depth=3, base_filters=4, dropout_at="decoder"))
    assert [level.drop is not None for level in decoder.decoder] == [True] * 3
    assert net(torch.rand(1, 1, 37, 50)).shape == (1, 2, 37, 50)  # padded and cropped back
    with pytest.raises(ValueError, match="SegNet is 2D"):
        SegNetSpec(dims=3)


@pytest.mark.parametrize("place", ["encoder", "decoder", "last"])
def test_monte_carlo_samples_differ_and_equal_the_forward_without_dropout(
    place: str, randomized_norms
) -> None:
    torch.manual_seed(1)
    net = randomized_norms(SegNet(SegNetSpec(depth=2, base_filters=4, dropout_at=place))).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        det = net.forward_aligned(x)
        same = net.forward_samples(x, torch.zeros(3)).view(2, 3, 1, 32, 32)
        assert torch.equal(same, det[:, None].expand_as(same))
        set_mc_dropout(net, True)
        samples = net.forward_samples(x, torch.zeros(16)).view(2, 16, 1, 32, 32)
    assert (samples[:, 0] - samples[:, 1]).abs().max() > 1e-3
    assert (samples[0, 0] - samples[1, 0]).abs().max() > 1e-3


def _info(spec: SegNetSpec, classes: int) -> ModelInfo:
    return ModelInfo(
        task="semantic",
        in_channels=spec.in_channels,
        num_classes=classes,
        size_multiple=spec.size_multiple,
        halo=spec.halo,
        dropout=spec.dropout,
    )


@pytest.mark.parametrize(("classes", "depth"), [(2, 2), (3, 3)])
def test_onnx_graphs_match_torch_and_tiling_with_the_halo_is_exact(
    classes: int, depth: int, tmp_path: Path, rng, randomized_norms
) -> None:
    """Both exported graphs run in ONNX Runtime within 1e-5 of torch; predictions of tiles with the
    spec's halo equal the whole image's within 1e-5, and one size multiple less does not."""
    from idl.export.onnx import export_onnx
    from idl.infer.runtime.session import OnnxRunner
    from idl.infer.service.load import load_model
    from idl.infer.tasks.registry import io_for_info
    from idl.infer.tiling.predict import predict_probabilities

    torch.manual_seed(classes)
    spec = SegNetSpec(depth=depth, base_filters=4, dropout=0.3, out_channels=1 if classes == 2 else classes)
    net = randomized_norms(SegNet(spec)).eval()
    info = _info(spec, classes)
    det, mc = export_onnx(net, info, tmp_path)
    x = torch.rand(2, 1, 48, 64)
    with torch.no_grad():
        expected = net.forward_aligned(x).numpy()
    assert np.abs(OnnxRunner(det, "cpu").run_all([x.numpy()])[0] - expected).max() <= 1e-5
    samples = OnnxRunner(mc, "cpu").run_all([x.numpy(), np.zeros(4, np.float32)])[0]
    assert samples.shape == (8, *expected.shape[1:]) and np.abs(samples[0] - samples[1]).max() > 1e-3

    runner = load_model(det).runner
    image = rng.integers(0, 1000, (150, 203, 1)).astype(np.uint16)
    io = io_for_info(info)
    whole, _ = predict_probabilities(runner, image, io, 512, 0)
    multiple, halo = spec.size_multiple, spec.halo
    assert halo == 4 * multiple
    tiled, _ = predict_probabilities(runner, image, io, 2 * halo + 2 * multiple, halo)
    assert np.abs(tiled - whole).max() <= 1e-5
    short, _ = predict_probabilities(runner, image, io, 2 * halo + 2 * multiple, halo - multiple)
    assert np.abs(short - whole).max() > 1e-5
