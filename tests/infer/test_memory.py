"""Tiles sized by a memory budget: the graph's live tensors, the tile a budget allows, --max-memory."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from idl.infer.core.grid import AxisSize
from idl.infer.runtime.activations import load_graph
from idl.infer.runtime.footprint import ARENA_FACTOR, Footprint, footprint, peak_live_bytes
from idl.infer.tiling.memory import (
    MAX_RECOMPUTE,
    MEMORY_CAP,
    TileChoice,
    choose_tile,
    default_budget,
    grown_budget,
    parse_memory,
    recomputed,
)


def _wide_net(path: Path, width: int) -> Path:
    """conv 1 -> ``width`` channels, relu, conv -> 1: its live peak is the relu's input and output,
    ``2 * width`` float channels per pixel."""
    w1 = numpy_helper.from_array(np.ones((width, 1, 3, 3), np.float32), "w1")
    w2 = numpy_helper.from_array(np.ones((1, width, 3, 3), np.float32), "w2")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1] * 4),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1] * 4),
        ],
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "y", "x"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, "y", "x"])],
        [w1, w2],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_the_live_peak_counts_the_tensors_alive_at_once(tmp_path: Path) -> None:
    graph = load_graph(_wide_net(tmp_path / "net.onnx", 8))
    # h and r (8 channels each) are alive together while the relu runs; x died after the first conv
    assert peak_live_bytes(graph, [(1, 1, 100, 50)]) == 2 * 8 * 4 * 100 * 50
    assert peak_live_bytes(graph, [(3, 1, 10, 10)]) == 3 * 2 * 8 * 4 * 100  # a batch of three


def test_footprints_differ_by_network_and_follow_the_graph(tmp_path: Path, volume_model) -> None:
    def probe(side: int):
        return [(1, 1, side, side)], side * side

    narrow = footprint(_wide_net(tmp_path / "a.onnx", 4), (probe(64), probe(128)))
    wide = footprint(_wide_net(tmp_path / "b.onnx", 32), (probe(64), probe(128)))
    assert narrow == Footprint(0.0, ARENA_FACTOR * 32)
    assert wide == Footprint(0.0, ARENA_FACTOR * 256)
    # the Monte Carlo graph holds its random mask too: more per pixel than its deterministic twin
    folder = volume_model("semantic", 2)
    det = footprint(folder / "model.onnx", (probe(64), probe(128)))
    mc = footprint(folder / "model_mc.onnx", (probe(64), probe(128)))
    assert det is not None and mc is not None and det.per_pixel == ARENA_FACTOR * 32
    assert mc.per_pixel > det.per_pixel
    assert footprint(b"not a graph", (probe(64), probe(128))) is None


def test_the_tile_is_the_largest_the_budget_allows() -> None:
    cost = Footprint(fixed=1e6, per_pixel=400.0)
    two_d = {"halos": (96, 96), "aligns": (16, 16), "smallest": (208, 208)}
    choice = choose_tile(cost, 1.5 * 2**30, (4096, 4096), **two_d)
    side = choice.tile[0]
    assert choice.fits and choice.tile == (side, side) and side % 16 == 0
    assert cost.bytes_for(choice.tile) <= 1.5 * 2**30 < cost.bytes_for((side + 16, side + 16))
    assert side == 2000  # (1.5 GiB - 1 MB) / 400 B = 4.02 M px: 2005 px, down to a multiple of 16
    # a batch of four tiles: about half the side ((1.5 GiB / 4 - 1 MB) / 400 B: 1002 px)
    assert choose_tile(cost, 1.5 * 2**30, (4096, 4096), batch=4, **two_d).tile == (992, 992)
    # a network of 4x the bytes per pixel: about half the side (1003 px)
    wide = choose_tile(Footprint(1e6, 1600.0), 1.5 * 2**30, (4096, 4096), **two_d)
    assert wide.tile == (992, 992)
    # an image smaller than the tile: the whole image, rounded up to the size multiple
    assert choose_tile(cost, 1.5 * 2**30, (600, 700), **two_d).tile == (608, 704)
    # a budget below the smallest tile: that tile, said not to fit
    small = choose_tile(cost, 1e6, (4096, 4096), **two_d)
    assert small.tile == (208, 208) and not small.fits


def test_3d_tiles_follow_the_halos_and_the_volume() -> None:
    cost = Footprint(fixed=0.0, per_pixel=500.0)
    # an anisotropic 3D U-Net: z halo a quarter of the in-plane halo -> tiles a quarter as deep
    budget = 8 * 2**30
    choice = choose_tile(cost, budget, (512, 2048, 2048), (24, 96, 96), (4, 16, 16), (52, 208, 208))
    assert choice.tile == (100, 400, 400) and choice.fits  # 17.2 M voxels: z = y / 4
    assert 0.9 * budget < cost.bytes_for(choice.tile) <= budget
    # a volume of 64 planes: the tile spans them all (no z halo needed), the planes share the rest
    thin = choose_tile(cost, budget, (64, 1024, 1024), (96, 96, 96), (16, 16, 16), (208, 208, 208))
    assert thin.tile == (64, 512, 512)  # 17.2 M voxels over 64 planes: 518 px, down to 512


def test_the_pixels_tiles_recompute_follow_the_grid() -> None:
    rule = AxisSize(16, 16)
    # one tile per axis: nothing is computed twice
    assert recomputed((64, 256, 256), (64, 256, 256), (96, 96, 96), [rule] * 3) == 1.0
    # 1024 px in two tiles of 608 (each 512 owned + 96 halo): 1216 px per axis, 1.41x in-plane
    assert recomputed((64, 1024, 1024), (64, 608, 608), (96, 96, 96), [rule] * 3) == (1216 / 1024) ** 2
    # 4096 px under 1840-px tiles: three tiles of 1494 -> 1504 (a multiple of 16) per axis
    assert recomputed((4096, 4096), (1840, 1840), (96, 96), [rule] * 2) == (3 * 1504 / 4096) ** 2


def test_the_default_budget_grows_only_where_its_tiles_would_mostly_recompute_halos() -> None:
    """The 3D nuclei U-Net's footprint (384 B per voxel, halo 96 on every axis): the 1.5-GB cap's
    tiles of a 64 x 1024 x 1024 volume own 32 x 32 in-plane; the budget grows to the smallest whose
    tiles recompute at most 1.5x, within the ceiling. A 4096 x 4096 image's tiles already do."""
    cost, rule = Footprint(0.0, 384.0), AxisSize(16, 16)

    def grow(shape: tuple[int, ...], ceiling: float) -> tuple[TileChoice, float]:
        halos, dims = (96,) * len(shape), len(shape)

        def choose(budget: float) -> TileChoice:
            return choose_tile(cost, budget, shape, halos, (16,) * dims, (208,) * dims)

        return grown_budget(choose, lambda t: recomputed(shape, t, halos, [rule] * dims), MEMORY_CAP, ceiling)

    volume = (64, 1024, 1024)
    capped = choose_tile(cost, MEMORY_CAP, volume, (96,) * 3, (16,) * 3, (208,) * 3).tile
    assert capped == (64, 256, 256)  # 13 tiles per axis, 10.6x the voxels
    assert recomputed(volume, capped, (96,) * 3, [rule] * 3) == (13 * 256 / 1024) ** 2
    choice, budget = grow(volume, 16 * 2**30)
    assert choice.tile == (64, 608, 608) and choice.fits  # two tiles per axis: 1.41x
    assert recomputed(volume, choice.tile, (96,) * 3, [rule] * 3) <= MAX_RECOMPUTE
    # the smallest such budget: 16 MB less gives a tile that recomputes more
    assert cost.bytes_for((64, 608, 608)) <= budget < cost.bytes_for((64, 608, 608)) + 2**24
    # a smaller machine: its ceiling, the largest tile within it (three tiles of 480 per axis, 1.98x)
    low, low_budget = grow(volume, 6 * 2**30)
    assert low_budget == 6 * 2**30 and low.tile == (64, 512, 512)
    assert recomputed(volume, low.tile, (96,) * 3, [rule] * 3) == (3 * 480 / 1024) ** 2
    # 2D: the cap's tiles recompute 1.21x, the budget stays the cap
    flat, flat_budget = grow((4096, 4096), 16 * 2**30)
    assert flat_budget == MEMORY_CAP and flat.tile == (2048, 2048)
    # a ceiling below the cap leaves the cap alone (it is the smaller share of a small machine already)
    assert grow(volume, 2**30)[1] == MEMORY_CAP


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.5G", int(1.5 * 2**30)),
        ("800M", 800 * 2**20),
        ("800mb", 800 * 2**20),
        ("2 GB", 2 * 2**30),
        ("1000000", 10**6),
        ("64k", 64 * 2**10),
    ],
)
def test_memory_sizes_are_read_as_users_write_them(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0", "1.5T", "nanG"])
def test_a_memory_size_that_is_none_says_how_to_write_it(text: str) -> None:
    with pytest.raises(ValueError, match="is not a memory size; write it as 1.5G, 800M or a number of bytes"):
        parse_memory(text)


def test_the_default_budget_is_a_quarter_of_what_is_available_at_most_the_cap() -> None:
    assert default_budget(4 * 2**30) == 2**30
    assert default_budget(64 * 2**30) == MEMORY_CAP == 1536 * 2**20
    assert default_budget(None) == MEMORY_CAP


def test_idl_predict_sizes_tiles_by_max_memory_and_says_so(tmp_path: Path, volume_model, monkeypatch) -> None:
    """The same image under two budgets: the tile follows the budget and is logged; the output is
    the same (the halo covers the network's reach). The process is taken to hold 100 MB."""
    import tifffile

    from idl.cli.predict import main
    from idl.infer.tiling import predict as tiling

    monkeypatch.setattr(tiling, "resident_bytes", lambda: 100 * 2**20)
    model = volume_model("semantic", 2)
    tifffile.imwrite(tmp_path / "a.tif", np.random.default_rng(0).random((1200, 1000)).astype(np.float32))
    outputs, tiles = [], []
    for budget in ("4G", "120M"):
        tiling._REPORTED.clear()
        out = tmp_path / budget
        result = CliRunner().invoke(
            main, [str(model), str(tmp_path / "a.tif"), "--out", str(out), "--max-memory", budget]
        )
        assert result.exit_code == 0, result.output
        said = [line for line in result.output.splitlines() if line.startswith("tiles of")]
        assert len(said) == 1, result.output
        tiles.append(said[0])
        outputs.append(tifffile.imread(out / "a.tif"))
    assert tiles[0].startswith("tiles of 1200 x 1000 px")  # 4 GB: the whole image is one tile
    # 120 MB less the process's 100 MB and the outputs (1.2 M px of a float32 value and a mask, 9.6 MB)
    # leave 11.4 MB: at 48 B per pixel (the graph's 32 and the arena's share), 486 x 486 px
    left = 20 * 2**20 - 1200 * 1000 * 8
    assert abs(int(tiles[1].split()[2]) - math.isqrt(left // 48)) <= 1
    assert tiles[1].split()[2] == tiles[1].split()[4] and "within --max-memory 120 MB" in tiles[1]
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_the_default_budget_grows_where_the_cap_leaves_tiles_of_mostly_halo(
    tmp_path: Path, volume_model, monkeypatch
) -> None:
    """Without --max-memory: a process taken to hold all but 11 MB of the 1.5-GB cap gets the
    smallest tiles (200 px, after the image's 9.6 MB of outputs) on a 1200 x 1000 image. This small
    network's 4-px halo makes them recompute 1.2x; with the limit lowered to 1.01x the budget grows,
    says so, and the tile is the smallest that recomputes at most that."""
    import tifffile

    from idl.cli.predict import main
    from idl.infer.tiling import memory
    from idl.infer.tiling import predict as tiling

    monkeypatch.setattr(memory, "MAX_RECOMPUTE", 1.01)
    monkeypatch.setattr(tiling, "available_memory", lambda: 16 * 2**30)
    monkeypatch.setattr(tiling, "resident_bytes", lambda: MEMORY_CAP - 11 * 2**20)
    tiling._REPORTED.clear()
    model = volume_model("semantic", 2)
    tifffile.imwrite(tmp_path / "a.tif", np.random.default_rng(0).random((1200, 1000)).astype(np.float32))
    result = CliRunner().invoke(main, [str(model), str(tmp_path / "a.tif"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "would leave tiles within 1536 MB mostly halo: the memory budget grows to" in result.output
    (said,) = [line for line in result.output.splitlines() if line.startswith("tiles of")]
    tile = tuple(int(n) for n in said.split()[2:5:2])  # "tiles of Y x X px ..."
    rules = [AxisSize(1, 1)] * 2  # this network: any size, a halo of 4 px
    assert recomputed((1200, 1000), (200, 200), (4, 4), rules) > 1.01  # the cap's
    assert recomputed((1200, 1000), tile, (4, 4), rules) <= 1.01 and tile == (1176, 1000)  # 2 x 604 px
    grown = float(said.split("within --max-memory ")[1].split()[0])
    assert MEMORY_CAP / 2**20 < grown < 8 * 2**10  # more than the cap, within half the 16 GB


def test_a_max_memory_that_is_no_size_is_refused_with_the_way_to_write_it(
    tmp_path: Path, volume_model
) -> None:
    from idl.cli.predict import main

    result = CliRunner().invoke(
        main, [str(volume_model("semantic", 2)), str(tmp_path), "--max-memory", "lots"]
    )
    assert result.exit_code == 2
    assert "'lots' is not a memory size; write it as 1.5G, 800M or a number of bytes" in result.output


def test_a_sampled_tile_also_holds_its_moments_and_with_tta_its_samples() -> None:
    from idl.infer.tiling.predict import AS_IT_IS, PredictOptions, sampled_cost

    cost = Footprint(fixed=10.0, per_pixel=100.0)
    # Monte Carlo alone: two halves of float64 means and squares per output channel (2 channels)
    mc = sampled_cost(cost, 2, PredictOptions(mc_samples=10, tta="off"), AS_IT_IS)
    assert mc == Footprint(10.0, 100.0 + 32 * 2)
    # with test-time augmentation all 10 samples of a tile are held at once, twice (outputs, stack)
    tta = sampled_cost(cost, 2, PredictOptions(mc_samples=10, tta="d4"), AS_IT_IS)
    assert tta == Footprint(10.0, 100.0 + 32 * 2 + 8 * 2 * 10)


def test_footprints_recorded_at_export_are_read_without_the_graph(volume_model, monkeypatch) -> None:
    """idl-predict reads the footprints stored at export instead of importing onnx (0.6 s)."""
    from idl.export.metadata import record_footprints
    from idl.infer.runtime import footprint as footprint_module
    from idl.infer.service.load import load_model

    folder = volume_model("semantic", 2)
    info = record_footprints(folder / "model.onnx", folder / "model_mc.onnx", load_model(folder).info)
    measured = load_model(folder).footprint(mc=True)
    assert info.footprint["deterministic"] == [0.0, ARENA_FACTOR * 32]
    assert measured is not None and info.footprint["monte_carlo"] == [0.0, measured.per_pixel]

    def no_graph(*args, **kwargs):
        raise AssertionError("the graph was measured again")

    monkeypatch.setattr(footprint_module, "peak_live_bytes", no_graph)
    loaded = load_model(folder)
    assert loaded.info.footprint == info.footprint
    assert loaded.footprint() == Footprint(0.0, ARENA_FACTOR * 32)
    assert loaded.footprint(mc=True) == measured


def test_shapes_computed_at_run_time_are_measured_by_running_the_graph(tmp_path: Path) -> None:
    """A graph that fans its input out by a sample count computed at run time (as the Monte Carlo
    graphs do), which ONNX's shape inference cannot follow: its sizes come from one small run."""
    ones = numpy_helper.from_array(np.array([1], np.int64), "one")
    rest = numpy_helper.from_array(np.array([1, 1, 1], np.int64), "rest")
    w = numpy_helper.from_array(np.ones((8, 1, 3, 3), np.float32), "w")
    nodes = [
        helper.make_node("Shape", ["samples"], ["count_shape"]),
        helper.make_node("ConstantOfShape", ["count_shape"], ["ones"], value=ones),
        helper.make_node("ReduceSum", ["ones"], ["count"], keepdims=1),  # the count, at run time
        helper.make_node("Concat", ["count", "rest"], ["repeats"], axis=0),
        helper.make_node("Tile", ["x", "repeats"], ["fanned"]),
        helper.make_node("Conv", ["fanned", "w"], ["y"], pads=[1] * 4),
    ]
    graph = helper.make_graph(
        nodes,
        "fan",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "h", "w"]),
            helper.make_tensor_value_info("samples", TensorProto.FLOAT, ["s"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [ones, rest, w],
    )
    path = tmp_path / "fan.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    inferred = onnx.shape_inference.infer_shapes(load_graph(path), data_prop=True)
    assert not [
        v
        for v in inferred.graph.value_info
        if v.name == "fanned"
        and v.type.tensor_type.shape.dim
        and all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)
    ]
    # one sample: the fanned input (400 B) and the 8-channel output (3200 B) alive together, with a few
    # bytes of shape tensors
    peak = peak_live_bytes(load_graph(path), [(1, 1, 10, 10), (1,)])
    assert 3600 <= peak <= 3600 + 100
    # three samples: the fan-out holds three copies
    assert 3 * 3600 <= peak_live_bytes(load_graph(path), [(1, 1, 10, 10), (3,)]) <= 3 * 3600 + 100


def test_blocks_for_several_workers_keep_the_cap(volume_model, monkeypatch) -> None:
    """The block plan's tile is every Dask worker's, and a machine may run several: it never grows the
    default budget (half the memory per worker could exceed the machine), where one process does."""
    from idl.infer.service.load import load_model
    from idl.infer.tiling import memory
    from idl.infer.tiling import predict as tiling
    from idl.infer.tiling.blocks import plan_volume
    from idl.infer.tiling.predict import PredictOptions, tile_shape

    monkeypatch.setattr(memory, "MAX_RECOMPUTE", 1.01)
    monkeypatch.setattr(tiling, "available_memory", lambda: 16 * 2**30)
    monkeypatch.setattr(tiling, "resident_bytes", lambda: MEMORY_CAP - 2 * 2**20)  # 2 MB left
    model = load_model(volume_model("semantic", 3), "cpu")
    options = PredictOptions(block_size=128)
    capped = tile_shape(model, options, (128, 128, 128), grow=False)
    grown = tile_shape(model, options, (128, 128, 128))
    assert math.prod(capped) < math.prod(grown) == 128**3  # the whole block, once grown
    assert plan_volume(model, (256, 256, 256), "v", Path("unused"), options).tile == capped


def _cgroup_tree(root: Path, groups: str, files: dict[str, str]) -> Path:
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(groups)
    for name, text in files.items():
        (root / "sys/fs/cgroup" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "sys/fs/cgroup" / name).write_text(text)
    return root


def test_a_control_group_s_memory_limit_bounds_what_is_available(tmp_path: Path) -> None:
    """A Slurm job's or a container's limit: the limit less the group's usage, plus its inactive page
    cache; v2 at the group /proc/self/cgroup names, v1 at the mount's root (a container's own
    group); none without a limit."""
    from idl.infer.tiling.memory import cgroup_available

    gib = 2**30
    v2 = _cgroup_tree(
        tmp_path / "v2",
        "0::/slurm/job_7/step_0\n",
        {
            "slurm/job_7/step_0/memory.max": str(4 * gib),
            "slurm/job_7/step_0/memory.current": str(3 * gib),
            "slurm/job_7/step_0/memory.stat": f"anon {2 * gib}\ninactive_file {gib // 2}\n",
        },
    )
    assert cgroup_available(v2) == gib + gib // 2
    v1 = _cgroup_tree(
        tmp_path / "v1",
        "4:memory:/docker/abc\n0::/\n",
        {
            "memory/memory.limit_in_bytes": str(8 * gib),
            "memory/memory.usage_in_bytes": str(9 * gib),  # over the limit by its cache
            "memory/memory.stat": f"total_inactive_file {2 * gib}\n",
        },
    )
    assert cgroup_available(v1) == gib
    unlimited = _cgroup_tree(
        tmp_path / "none",
        "4:memory:/\n0::/\n",
        {"memory/memory.limit_in_bytes": "9223372036854771712", "memory/memory.usage_in_bytes": "5"},
    )
    assert cgroup_available(unlimited) is None
    assert cgroup_available(_cgroup_tree(tmp_path / "max", "0::/a\n", {"a/memory.max": "max"})) is None
    assert cgroup_available(tmp_path / "nothing") is None


def test_available_memory_is_the_machine_s_at_most_the_group_s(monkeypatch) -> None:
    from idl.infer.tiling import predict as tiling

    monkeypatch.setattr(tiling, "_machine_available", lambda: 200 * 2**30)
    monkeypatch.setattr(tiling, "cgroup_available", lambda: 3 * 2**30)
    assert tiling.available_memory() == 3 * 2**30
    monkeypatch.setattr(tiling, "cgroup_available", lambda: None)
    assert tiling.available_memory() == 200 * 2**30
