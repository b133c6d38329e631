from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from idl.export.onnx import ExportError, export_onnx, verify_deterministic
from idl.infer.core.model_info import ModelInfo
from idl.infer.core.processing import apply_ops
from idl.infer.service.load import load_model
from idl.infer.tasks.registry import io_for_info
from idl.models import UNet2D, UNetSpec, set_mc_dropout

# one worker builds this module's trained fixtures (pytest -n 2 --dist loadgroup, as .ci/run)
pytestmark = pytest.mark.xdist_group("test_onnx")


def _info(spec: UNetSpec, num_classes: int = 2) -> ModelInfo:
    return ModelInfo(
        task="semantic",
        in_channels=spec.in_channels,
        num_classes=num_classes,
        size_multiple=spec.size_multiple,
        halo=16,
        dropout=spec.dropout,
    )


@pytest.fixture(scope="module")
def multiclass_export(tmp_path_factory) -> tuple[UNet2D, Path, Path]:
    torch.manual_seed(3)
    spec = UNetSpec(in_channels=2, out_channels=3, depth=2, base_filters=4, dropout=0.3)
    net = UNet2D(spec).eval()
    det, mc = export_onnx(net, _info(spec, 3), tmp_path_factory.mktemp("onnx"))
    return net, det, mc


@pytest.mark.parametrize("shape", [(1, 2, 16, 16), (3, 2, 64, 48), (1, 2, 200, 120)])
def test_onnx_matches_torch_on_dynamic_shapes(multiclass_export, shape) -> None:
    net, det, _ = multiclass_export
    model = load_model(det)
    x = torch.rand(shape)
    with torch.no_grad():
        logits = net.forward_aligned(x)
    got = model.runner(x.numpy())
    assert np.abs(got - logits.numpy()).max() <= 1e-4
    probabilities = apply_ops(model.io.postprocessing, got, "bcyx")  # softmax, applied by idl
    assert np.abs(probabilities - torch.softmax(logits, dim=1).numpy()).max() <= 1e-5


def test_metadata_travels_with_the_file(multiclass_export) -> None:
    _, det, mc = multiclass_export
    model = load_model(det)
    assert model.info.num_classes == 3 and model.info.in_channels == 2 and model.io.out_channels == 3
    assert model.mc_weights == mc and mc.name == "model_mc.onnx"


def test_verification_fails_loudly_for_a_wrong_graph(multiclass_export) -> None:
    net, det, _ = multiclass_export
    other = UNet2D(net.spec).eval()  # different random weights

    class Wrapped(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(other.forward_aligned(x), dim=1)

    examples = net.example_inputs(_info(net.spec, 3))
    agreement = verify_deterministic(net, net.exported(), det, examples.check)  # the graph's own network
    assert 0 <= agreement.difference <= 1e-4
    with pytest.raises(ExportError, match="differs from torch"):
        verify_deterministic(net, Wrapped(), det, examples.check)


def test_trained_model_mc_samples_differ_and_average_to_deterministic(model_dir: Path) -> None:
    model = load_model(model_dir)
    from idl.infer.core.normalize import normalize
    from idl.infer.io.images import read_image

    image = normalize(
        read_image(sorted((model_dir.parent / "test" / "image").iterdir())[0])[..., None],
        model.info.normalization,
    )
    x = np.moveaxis(image, -1, 0)[None]
    det = apply_ops(model.io.postprocessing, model.runner(x), "bcyx")[0]
    sampler = model.sampler()  # the U-Net's MC graph takes a sample count: one pass to its first dropout
    assert sampler is not None and model.mc_runner.input_names == ["input", "samples"]
    samples = apply_ops(model.io.postprocessing, sampler(x, 32), "bcyx")
    assert samples.shape == (32, *det.shape)
    spread = np.abs(samples[0] - samples[1]).mean()
    mean_gap = np.abs(samples.mean(axis=0) - det).mean()
    print(f"MC sample spread {spread:.4f}, |MC mean - deterministic| {mean_gap:.4f}")
    assert spread > 1e-3
    assert mean_gap < 0.05


@pytest.mark.parametrize("depth", [1, 2])
def test_default_halo_makes_tiling_exact_and_padding_matches_torch(depth: int, tmp_path: Path, rng) -> None:
    from idl.infer.core.normalize import normalize
    from idl.infer.tiling.predict import predict_probabilities

    torch.manual_seed(depth)
    spec = UNetSpec(depth=depth, base_filters=4, dropout=0.0)
    net = UNet2D(spec).eval()
    info = _info(spec)
    det, _ = export_onnx(net, info, tmp_path)
    runner = load_model(det).runner
    image = rng.integers(0, 1000, (203, 150, 1)).astype(np.uint16)  # not a multiple of 2**depth
    io = io_for_info(info)
    whole, _ = predict_probabilities(runner, image, io, 256, 0)
    with torch.no_grad():
        x = torch.from_numpy(np.moveaxis(normalize(image, info.normalization), -1, 0)[None].copy())
        expected = torch.sigmoid(net(x))[0].numpy()
    assert np.abs(whole - expected).max() <= 1e-4  # the same reflect padding on both sides
    halo = spec.halo
    tiled, _ = predict_probabilities(runner, image, io, 2 * halo + 8, halo)
    np.testing.assert_array_equal(tiled, whole)  # bit-identical: every value sees the same inputs
    short, _ = predict_probabilities(runner, image, io, 2 * halo + 8, halo // 2)
    assert np.abs(short - whole).max() > 0  # with half the halo, context is cut (random nets: faintly)


@pytest.mark.parametrize("dims", [2, 3])
def test_decoder_dropout_graph_matches_torch_for_any_sample_count(
    dims: int, tmp_path: Path, randomized_norms
) -> None:
    """Decoder dropout: the encoder and the skip halves of the decoder's first convolutions run once
    per tile and are broadcast to the samples. With dropout switched off every sample of the exported
    sample-count graph equals torch's deterministic output (dynamic batch, size and sample count)."""
    from idl.infer.runtime.session import OnnxRunner

    torch.manual_seed(dims)
    net = UNet2D(UNetSpec(depth=2, base_filters=4, dropout_at="decoder", dims=dims))
    net = randomized_norms(net).eval()
    monte_carlo = net.monte_carlo()  # the Monte Carlo graph export_onnx writes
    assert monte_carlo is not None and monte_carlo.sample_count
    set_mc_dropout(monte_carlo.module, False)
    spatial = {0: "b", **{2 + i: f"s{i}" for i in range(dims)}}
    path = tmp_path / "mc.onnx"
    torch.onnx.export(
        monte_carlo.module,  # the exporter restores the wrapper's mode on every submodule
        (torch.rand(1, 1, *(8,) * dims), torch.zeros(2)),
        str(path),
        dynamo=False,
        input_names=["input", "samples"],
        output_names=["output"],
        dynamic_axes={"input": spatial, "samples": {0: "n"}, "output": spatial},
    )
    runner = OnnxRunner(path, "cpu")
    for batch, count, size in ((1, 3, 16), (2, 5, 24)):
        x = torch.rand(batch, 1, *(size,) * dims)
        with torch.no_grad():
            det = net.forward_aligned(x).numpy()
        got = runner.run_all([x.numpy(), np.zeros(count, np.float32)])[0]
        assert got.shape == (batch * count, *det.shape[1:])
        expected = np.repeat(det, count, axis=0)  # the samples of the first input first
        assert np.abs(got - expected).max() <= 1e-5
