"""The one prediction engine from outside: packages with two inputs predict out of core in bounded
memory and in tiles of the size their ONNX graph fixes; an ONNX Runtime refusal is a clear error; a
merger registered from this file alone is used by idl-predict end to end. No torch: the networks are
ONNX graphs built here, the packages described with bioimageio.spec."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import tifffile
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from idl.cli import predict as predict_cli
from idl.infer.core.grid import Tile, tile_grid
from idl.infer.core.model_info import METADATA_KEY, ModelInfo
from idl.infer.io.images import read_image, write_tiff
from idl.infer.io.omezarr import write_ome_zarr
from idl.infer.tasks import registry
from idl.infer.tasks.semantic import Semantic
from idl.infer.tiling.engine import Layout
from idl.infer.tiling.mergers import OutputGrid
from idl.infer.tiling.predict import Outputs, Prediction, PredictOptions

from .conftest import someone_elses

bio = pytest.importorskip("bioimageio.spec.model.v0_5")

PREDICT = [sys.executable, "-c", "from idl.cli.predict import main; main()"]


def _net(path: Path, side: int | None, dropout: bool = False) -> None:
    """Inputs ``a`` and ``b`` ``(n, 1, y, x)``, fixed at ``side`` x ``side`` when given; output ``mix``
    = a 3 x 3 convolution of both, 2 channels; with ``dropout`` half the inputs' pixels are dropped
    (the others doubled) afresh on every call, as a Monte Carlo dropout graph does."""
    w = (np.random.default_rng(7).standard_normal((2, 2, 3, 3)) / 3).astype(np.float32)
    dims = ["n", 1, side, side] if side else ["n", 1, "y", "x"]
    nodes = [helper.make_node("Concat", ["a", "b"], ["ab"], axis=1)]
    weights = [numpy_helper.from_array(w, "w")]
    if dropout:  # a mask from RandomUniformLike (ONNX Runtime's optimizer removes Dropout nodes)
        nodes += [
            helper.make_node("RandomUniformLike", ["ab"], ["draw"]),
            helper.make_node("Greater", ["draw", "half"], ["keep"]),
            helper.make_node("Cast", ["keep"], ["mask"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["ab", "mask"], ["masked"]),
            helper.make_node("Mul", ["masked", "two"], ["kept"]),
        ]
        weights += [
            numpy_helper.from_array(np.array(0.5, np.float32), "half"),
            numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        ]
    nodes.append(helper.make_node("Conv", ["kept" if dropout else "ab", "w"], ["mix"], pads=[1, 1, 1, 1]))
    graph = helper.make_graph(
        nodes,
        "pair",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in ("a", "b")],
        [helper.make_tensor_value_info("mix", TensorProto.FLOAT, ["n", 2, *dims[2:]])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)


def _package(folder: Path, side: int | None, mc: bool = False) -> Path:
    """A bioimage.io package of :func:`_net`: inputs of 16 + k * 16 px (the description allows any
    such size, whatever the graph fixes), a halo of 2 px, ``a`` scaled linearly; test tensors of 64 px
    computed by ONNX Runtime."""
    import onnxruntime as ort
    from bioimageio.spec import save_bioimageio_package

    folder.mkdir(parents=True)
    _net(folder / "net.onnx", side)
    rng = np.random.default_rng(0)
    test = {n: rng.random((1, 1, 64, 64)).astype(np.float32) for n in ("a", "b")}
    session = ort.InferenceSession(str(folder / "net.onnx"), providers=["CPUExecutionProvider"])
    (mix,) = session.run(["mix"], {"a": 2.0 * test["a"] - 1.0, "b": test["b"]})
    for name, array in {**test, "mix": mix}.items():
        np.save(folder / f"test_{name}.npy", array)
    extra = {}
    if mc:  # a Monte Carlo graph beside it, as idl's packages carry theirs
        _net(folder / "net_mc.onnx", side, dropout=True)
        extra = {
            "attachments": [bio.FileDescr(source=folder / "net_mc.onnx")],
            "config": {"idl": {"mc_dropout": {"file": "net_mc.onnx"}}},
        }

    def space(reference: str | None) -> list:
        if reference is None:
            return [
                bio.SpaceInputAxis(id=bio.AxisId(a), size=bio.ParameterizedSize(min=16, step=16))
                for a in "yx"
            ]
        size = lambda a: bio.SizeReference(tensor_id=bio.TensorId(reference), axis_id=bio.AxisId(a))  # noqa: E731
        return [bio.SpaceInputAxis(id=bio.AxisId(a), size=size(a)) for a in "yx"]

    def channel(*names: str) -> object:
        return bio.ChannelAxis(channel_names=[bio.Identifier(n) for n in names])

    scale = bio.ScaleLinearDescr(kwargs=bio.ScaleLinearKwargs(gain=2.0, offset=-1.0))
    descr = bio.ModelDescr(
        **someone_elses(folder, "a pair of inputs", "two inputs, one output"),
        inputs=[
            bio.InputTensorDescr(
                id=bio.TensorId("a"),
                axes=[bio.BatchAxis(), channel("a0"), *space(None)],
                test_tensor=bio.FileDescr(source=folder / "test_a.npy"),
                preprocessing=[scale],
            ),
            bio.InputTensorDescr(
                id=bio.TensorId("b"),
                axes=[bio.BatchAxis(), channel("b0"), *space("a")],
                test_tensor=bio.FileDescr(source=folder / "test_b.npy"),
            ),
        ],
        outputs=[
            bio.OutputTensorDescr(
                id=bio.TensorId("mix"),
                axes=[
                    bio.BatchAxis(),
                    channel("m0", "m1"),
                    *[
                        bio.SpaceOutputAxisWithHalo(
                            id=bio.AxisId(a),
                            size=bio.SizeReference(tensor_id=bio.TensorId("a"), axis_id=bio.AxisId(a)),
                            halo=2,
                        )
                        for a in "yx"
                    ],
                ],
                test_tensor=bio.FileDescr(source=folder / "test_mix.npy"),
            )
        ],
        weights=bio.WeightsDescr(onnx=bio.OnnxWeightsDescr(source=folder / "net.onnx", opset_version=18)),
        **extra,
    )
    return save_bioimageio_package(descr, output_path=folder / "pair.zip")


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The pair package with free spatial dimensions, and its twin whose graph is fixed at 64 px."""
    root = tmp_path_factory.mktemp("pairs")
    return {
        "free": _package(root / "free", None),
        "fixed": _package(root / "fixed", 64),
        "mc": _package(root / "mc", None, mc=True),
    }


def _run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(predict_cli.main, [str(a) for a in args])
    return result.exit_code, result.output


def test_a_graph_fixed_at_64_px_predicts_a_large_pair_in_tiles_of_that_size(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        write_tiff(tmp_path / name / "pair.tif", rng.random((1000, 1000)).astype(np.float32))
    inputs = ["--input", f"a={tmp_path / 'a'}", "--input", f"b={tmp_path / 'b'}"]
    outputs, said = {}, {}
    for kind, package in packages.items():
        code, said[kind] = _run(package, *inputs, "--out", tmp_path / kind)
        assert code == 0, said[kind]
        outputs[kind] = read_image(tmp_path / kind / "mix" / "pair.tif")
    fixed = "the ONNX graph takes inputs of exactly 64 x 64 px (its description allows y: 16 + k * 16"
    assert fixed in said["fixed"] and fixed not in said["free"]
    assert outputs["fixed"].shape == (2, 1000, 1000)
    # tiles of 64 px with a 2 px halo give what tiles of 512 px give: tiling stays exact
    np.testing.assert_allclose(outputs["fixed"], outputs["free"], atol=1e-5)
    code, output = _run(packages["fixed"], "--test")
    assert code == 0 and "test output 'mix' (1, 2, 64, 64): max abs diff" in output and "passed" in output


def test_an_onnx_runtime_refusal_names_the_model_the_inputs_and_the_graphs_sizes(tmp_path: Path) -> None:
    """A graph that only works for 16 x 16 px while saying nothing of it (an added constant of that
    size): ONNX Runtime's refusal is a message, not a traceback."""
    folder = tmp_path / "model"
    folder.mkdir()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "y", "x"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, "y", "x"])
    bias = numpy_helper.from_array(np.zeros((1, 1, 16, 16), np.float32), "bias")
    graph = helper.make_graph([helper.make_node("Add", ["x", "bias"], ["y"])], "fussy", [x], [y], [bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    info = ModelInfo(
        task="semantic", in_channels=1, num_classes=2, size_multiple=1, halo=0, output="probabilities"
    )
    helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    onnx.save(model, folder / "model.onnx")
    write_tiff(tmp_path / "in" / "a.tif", np.random.default_rng(0).random((40, 48)).astype(np.float32))
    code, output = _run(folder, tmp_path / "in", "--out", tmp_path / "out")
    assert code == 1 and "Traceback" not in output
    assert f"{folder / 'model.onnx'}: ONNX Runtime refused the input(s) 'x' (1, 1, 40, 48) (0 MB):" in output
    assert "The graph takes 'x' (any, 1, any, any)." in output


def test_a_pair_of_6000_px_inputs_predicts_out_of_core_in_bounded_memory(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    """TIFF and OME-Zarr inputs of 144 MB each, read window by window; the output (288 MB) written
    tile by tile; the whole process stays under 600 MB and equals the in-memory prediction."""
    from idl.infer.service.load import load_model
    from idl.infer.tiling.tensors import predict_tensors

    rng = np.random.default_rng(2)
    a = rng.random((6000, 6000), dtype=np.float32)
    b = rng.random((6000, 6000), dtype=np.float32)
    tifffile.imwrite(tmp_path / "a.tif", a)  # uncompressed: memory-mapped
    write_ome_zarr(tmp_path / "pair.ome.zarr", b, "yx")
    (tmp_path / "ain").mkdir()
    (tmp_path / "a.tif").rename(tmp_path / "ain" / "pair.tif")
    command = [*PREDICT, str(packages["free"]), "--input", f"a={tmp_path / 'ain'}"]
    command += ["--input", f"b={tmp_path / 'pair.ome.zarr'}", "--out", str(tmp_path / "out"), "--quiet"]
    measure = (
        "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(done.returncode)"
    )
    done = subprocess.run(
        [sys.executable, "-c", measure, *command], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    peak_mb = int(done.stdout.split()[-1]) / 1024
    print(f"peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 600
    expected = predict_tensors(
        load_model(packages["free"]), {"a": a[..., None], "b": b[..., None]}, PredictOptions(progress=False)
    )
    got = tifffile.memmap(tmp_path / "out" / "mix" / "pair.tif", mode="r")
    assert got.shape == (2, 6000, 6000)
    for start in range(0, 6000, 1000):
        np.testing.assert_allclose(
            got[:, start : start + 1000], expected["mix"][:, start : start + 1000], atol=1e-5
        )


class TileOwner:
    """A merger of this test's own: each pixel gets the number (from 1) of the tile that owns it."""

    def __init__(self, grid: OutputGrid) -> None:
        self.grid, self.tiles = grid, 0
        self.owner = np.zeros(grid.length, np.uint16)

    def add(self, tile: Tile, values: np.ndarray) -> None:
        self.tiles += 1
        into, _ = self.grid.regions(tile)
        self.owner[into] = self.tiles

    def settled(self, tile: Tile) -> bool:
        return True

    def close(self, tile: Tile) -> None:
        pass

    def finalize(self) -> np.ndarray:
        return self.owner


class Ownership(Outputs):
    def merger(self, model, where: Layout, options: PredictOptions) -> TileOwner:
        return TileOwner(where.grid(model.tensors, "output"))

    def collect(self, merged: np.ndarray, options: PredictOptions) -> Prediction:
        return Prediction(merged[np.newaxis].astype(np.float32), merged, None, None)


class ToyOwnership(Semantic):
    kind = "toy-ownership"
    task = "toy-ownership"

    def outputs(self, info: ModelInfo) -> Outputs:
        return Ownership()


def test_a_merger_registered_here_is_used_by_idl_predict(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))  # registered for this test only
    registry.register(ToyOwnership())
    folder = tmp_path / "model"
    folder.mkdir()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "y", "x"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, "y", "x"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "toy", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    info = ModelInfo(
        task="toy-ownership", in_channels=1, num_classes=2, size_multiple=1, halo=8, output="probabilities"
    )
    helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    onnx.save(model, folder / "model.onnx")
    write_tiff(tmp_path / "in" / "a.tif", np.random.default_rng(0).random((100, 90)).astype(np.float32))
    code, output = _run(folder, tmp_path / "in", "--out", tmp_path / "out", "--tile-size", 48)
    assert code == 0, output
    owner = read_image(tmp_path / "out" / "a.tif")
    tiles = tile_grid((100, 90), (48, 48), (8, 8), [1, 1])
    expected = np.zeros((100, 90), np.uint16)
    for number, tile in enumerate(tiles, start=1):
        expected[tile.owned] = number
    assert len(tiles) == 9 and owner.dtype == np.uint16
    np.testing.assert_array_equal(owner, expected)


@pytest.mark.parametrize("where", ["memory", "out of core"])
def test_a_pair_package_with_a_monte_carlo_graph_gives_samples_and_uncertainty(
    packages: dict[str, Path], tmp_path: Path, where: str
) -> None:
    """Samples that really differ: their mean tends to the deterministic output (dropout scales the
    kept pixels), and the uncertainty map (their standard deviation with --uncertainty std) is positive
    wherever the output is not constant; out of core (sinks written tile by tile) as in memory."""
    from idl.infer.service.load import load_model
    from idl.infer.tiling.tensors import predict_tensors

    rng = np.random.default_rng(3)
    pair = {name: rng.random((120, 136, 1)).astype(np.float32) for name in ("a", "b")}
    model = load_model(packages["mc"])
    plain = predict_tensors(model, pair, PredictOptions(progress=False))["mix"]
    options = PredictOptions(progress=False, mc_samples=64, batch_size=8, uncertainty="std", tile_size=64)
    if where == "memory":
        sampled = predict_tensors(model, pair, options)
        mean, spread = sampled["mix"], sampled["mix:uncertainty"]
    else:
        mean = np.zeros((2, 120, 136), np.float32)
        spread = np.zeros((120, 136), np.float32)
        predict_tensors(model, pair, options, targets={"mix": mean}, spreads={"mix": spread})
    assert mean.shape == plain.shape == (2, 120, 136) and spread.shape == (120, 136)
    # 64 samples of a linear network on pixels dropped with p = 0.5: the mean's error is about
    # 1/8 of one sample's spread
    error = np.abs(mean - plain).mean() / spread.mean()
    assert 0.02 < error < 0.3
    assert (spread > 0).mean() > 0.99
    assert np.corrcoef(mean.ravel(), plain.ravel())[0, 1] > 0.95


def test_idl_predict_writes_a_pair_packages_samples_and_uncertainty(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    rng = np.random.default_rng(4)
    for name in ("a", "b"):
        write_tiff(tmp_path / name / "pair.tif", rng.random((80, 96)).astype(np.float32))
    inputs = ["--input", f"a={tmp_path / 'a'}", "--input", f"b={tmp_path / 'b'}"]
    code, output = _run(packages["mc"], *inputs, "--out", tmp_path / "out", "--mc-samples", 8)
    assert code == 0, output
    assert read_image(tmp_path / "out" / "mix" / "pair.tif").shape == (2, 80, 96)
    uncertainty = read_image(tmp_path / "out" / "uncertainty" / "mix" / "pair.tif")
    assert uncertainty.shape == (80, 96) and uncertainty.min() >= 0 and uncertainty.mean() > 0
    code, output = _run(packages["free"], *inputs, "--out", tmp_path / "none", "--mc-samples", 8)
    assert code == 1 and "this package has no Monte Carlo dropout graph" in output
