"""The shared ONNX Runtime arena: which sessions run in it, that they compute the same, and that the
tile choice tells the model what a call takes."""

from __future__ import annotations

import numpy as np

from idl.infer.runtime.arena import REGION, fits_shared_arena


def test_only_tiles_that_fit_the_first_region_share_the_arena() -> None:
    assert not fits_shared_arena(None)  # unknown: ONNX Runtime's own arenas
    assert not fits_shared_arena(REGION + 1)  # a 3D tile of gigabytes keeps them (7 % less peak)
    assert fits_shared_arena(REGION) and fits_shared_arena(1e8)
    assert REGION < 2**31  # ONNX Runtime reads the first region's size as a 32-bit number


def test_a_session_opens_again_when_its_tiles_change_arena_and_computes_the_same(volume_model) -> None:
    from idl.infer.service.load import load_model

    model = load_model(volume_model("semantic", 2), "cpu")
    batch = np.random.default_rng(0).random((1, 1, 96, 80)).astype(np.float32)
    own = model.runner
    assert not own.shared_arena and model.expected is None
    reference = own(batch)
    model.expected = 50 * 2**20
    shared = model.runner
    assert shared is not own and shared.shared_arena
    np.testing.assert_array_equal(shared(batch), reference)
    assert model.runner is shared  # the same tiles: the same session
    model.expected = REGION + 2**20
    assert not model.runner.shared_arena


def test_a_monte_carlo_session_opened_again_draws_from_the_seed(volume_model) -> None:
    """Moving a Monte Carlo session into the shared arena restarts its draws at the seed, as reseed
    does: the samples after the move are those of a fresh session, and they differ from each other."""
    from idl.infer.service.load import load_model

    model = load_model(volume_model("semantic", 2), "cpu")
    batch = np.random.default_rng(1).random((1, 1, 64, 64)).astype(np.float32)
    first = model.mc_runner(batch)
    second = model.mc_runner(batch)
    assert np.abs(first - second).max() > 1e-3  # dropout: the samples differ
    model.expected = 50 * 2**20
    moved = model.mc_runner
    assert moved.shared_arena
    np.testing.assert_array_equal(moved(batch), first)


def test_the_tile_choice_tells_the_model_what_a_call_takes(volume_model, monkeypatch) -> None:
    """The sized tile's estimate becomes the model's expected call; a given --tile-size, whose cost
    is not estimated, leaves the sessions in their own arenas."""
    from idl.infer.service.load import load_model
    from idl.infer.tiling import predict as tiling
    from idl.infer.tiling.predict import PredictOptions, tile_shape

    monkeypatch.setattr(tiling, "resident_bytes", lambda: 100 * 2**20)
    model = load_model(volume_model("semantic", 2), "cpu")
    tiling._REPORTED.clear()
    tile = tile_shape(model, PredictOptions(max_memory=120 * 2**20), (1200, 1000))
    cost = model.footprint()
    assert cost is not None and model.expected == cost.bytes_for(tile)
    assert 0 < model.expected <= 20 * 2**20  # what 120 MB leave over the process's 100
    tile_shape(model, PredictOptions(tile_size=256), (1200, 1000))
    assert model.expected is None


def test_a_session_that_asked_for_a_gpu_keeps_its_own_arena_and_is_not_reopened(
    volume_model, monkeypatch
) -> None:
    """A session made for CUDA (here falling back to the CPU, as ONNX Runtime does without a GPU)
    stays out of the CPU's shared arena, and asking for it again gives the same session."""
    from idl.infer.runtime import session as sessions
    from idl.infer.service.load import load_model

    monkeypatch.setattr(
        sessions,
        "choose_providers",
        lambda device, available: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    model = load_model(volume_model("semantic", 2), "cpu")
    model.expected = 50 * 2**20
    runner = model.runner
    assert not runner.cpu_only and not runner.shared_arena
    assert model.runner is runner and runner.provider == "CPUExecutionProvider"
