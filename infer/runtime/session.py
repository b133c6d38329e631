"""ONNX Runtime sessions: provider choice and a thin batch-runner."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from idl.infer.core.errors import ModelError
from idl.infer.runtime.arena import fits_shared_arena

log = logging.getLogger("idl")

DEVICES = ("auto", "cpu", "cuda")
# CPU threads of every session (idl-predict --threads sets it); unset: ONNX Runtime's default, one per
# physical core, the fastest setting measured (docs/benchmarks.md)
THREADS_VARIABLE = "IDL_THREADS"
_reported: set[tuple[str, int]] = set()
Runner = Callable[[np.ndarray], np.ndarray]
# Monte Carlo samples of a batch of tiles in one call: (N, C, ...) and a count S -> (N * S, K, ...)
Sampler = Callable[[np.ndarray, int], np.ndarray]
ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(uint16)": np.uint16,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def session_threads() -> int:
    """The CPU threads sessions use: ``$IDL_THREADS``, 0 (ONNX Runtime's default) when unset."""
    text = os.environ.get(THREADS_VARIABLE, "").strip()
    if not text:
        return 0
    if not text.isdigit():
        raise ModelError(f"{THREADS_VARIABLE}={text!r}: give a whole number of threads (0: one per core)")
    return int(text)


def choose_providers(device: str, available: list[str]) -> list[str]:
    """Execution providers for ``device``: CUDA first when wanted and present, CPU always as fallback."""
    if device not in DEVICES:
        raise ModelError(f"unknown device '{device}'; use one of {', '.join(DEVICES)}")
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise ModelError(
            "--device cuda was requested but ONNX Runtime has no CUDA provider. Install the GPU build "
            "(pip uninstall onnxruntime && pip install 'idl-toolkit[gpu]') or use --device cpu."
        )
    return ["CPUExecutionProvider"]


class OnnxRunner:
    """One ONNX Runtime session, called with a batch array (one input and output) or with one batch per
    input (:meth:`run_all`).

    Monte Carlo samples must come from one session: two fresh sessions start from the same random state
    and would draw identical dropout masks.
    """

    def __init__(
        self,
        path: Path | bytes,
        device: str = "auto",
        label: str | None = None,
        seed: int | None = None,
        expected: float | None = None,
    ) -> None:
        """``seed``: ONNX Runtime's random seed for the random operators of this session (Monte Carlo
        dropout): a session made with the same seed draws the same masks, call after call.
        ``expected``: the bytes a call is expected to take (a tile's estimate); where they fit, a CPU
        session runs in the process's shared arena (:mod:`idl.infer.runtime.arena`)."""
        import onnxruntime as ort

        providers = choose_providers(device, ort.get_available_providers())
        options = ort.SessionOptions()
        # Memory patterns pre-plan one big block per input shape; without them the arena serves tiles
        # at the same speed with ~75 MB less peak memory (512-px tiles, depth-4 U-Net, measured).
        options.enable_mem_pattern = False
        threads = session_threads()
        options.intra_op_num_threads = threads
        # the shared arena is a CPU one: a session that may run on a GPU keeps its own
        self.cpu_only = providers == ["CPUExecutionProvider"]
        self.shared_arena = self.arena_for(expected)
        if self.shared_arena:
            options.add_session_config_entry("session.use_env_allocators", "1")
        if seed is not None:  # each random kernel takes its seed from this when the session is made
            ort.set_seed(int(seed))
        try:
            model = path if isinstance(path, bytes) else str(path)
            self.session = ort.InferenceSession(model, options, providers=providers)
        except Exception as exc:
            raise ModelError(f"{label or path}: ONNX Runtime cannot load this model ({exc}).") from exc
        self.label = label or str(path)
        self.provider = self.session.get_providers()[0]  # what runs it: CUDA may fall back to the CPU
        if (self.provider, threads) not in _reported:
            _reported.add((self.provider, threads))
            on = f"{threads} threads" if threads else "a thread per core"
            shown = self.provider if "CUDA" in self.provider else f"{self.provider} ({on})"
            log.info("ONNX Runtime runs the model on %s", shown)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        # each input's dimensions as the graph fixes them: a number, or None where any size goes
        self.input_shapes = [[d if isinstance(d, int) and d > 0 else None for d in i.shape] for i in inputs]
        self.input_names = [i.name for i in inputs]
        self.output_names = [o.name for o in outputs]
        self.input_dtypes = [ORT_TYPES.get(i.type, np.float32) for i in inputs]
        self.input_name, self.output_name = self.input_names[0], self.output_names[0]
        self.input_dtype = self.input_dtypes[0]

    def arena_for(self, expected: float | None) -> bool:
        """Whether this session belongs in the shared arena for calls of ``expected`` bytes: a
        CPU-only session (one that asked for CUDA keeps its own, even where it fell back to the CPU)
        whose calls fit the arena's first region."""
        return self.cpu_only and fits_shared_arena(expected)

    @property
    def metadata(self) -> dict[str, str]:
        """The model's custom metadata (``metadata_props``)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Run a batch, cast to the input type the network declares (a network with one input and
        output; :meth:`run_all` runs any)."""
        if len(self.input_names) != 1 or len(self.output_names) != 1:
            raise ModelError(
                f"{self.label}: the network has {len(self.input_names)} input(s) and "
                f"{len(self.output_names)} output(s), but its description names one of each."
            )
        return self.run_all([batch])[0]

    def run_all(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """Run one batch per network input (in the network's order); returns every output."""
        if len(batches) != len(self.input_names):
            raise ModelError(
                f"{self.label}: the network takes {len(self.input_names)} input(s), got {len(batches)}."
            )
        feed = {
            name: np.ascontiguousarray(batch, dtype=dtype)
            for name, batch, dtype in zip(self.input_names, batches, self.input_dtypes, strict=True)
        }
        try:
            return list(self.session.run(self.output_names, feed))
        except Exception as exc:  # onnxruntime's InvalidArgument, Fail, RuntimeException; allocation
            size = sum(b.nbytes for b in feed.values()) / 2**20
            given = ", ".join(f"'{name}' {b.shape}" for name, b in feed.items())
            takes = ", ".join(
                f"'{name}' ({', '.join('any' if d is None else str(d) for d in dims)})"
                for name, dims in zip(self.input_names, self.input_shapes, strict=True)
            )
            raise ModelError(
                f"{self.label}: ONNX Runtime refused the input(s) {given} ({size:.0f} MB): "
                f"{str(exc).splitlines()[0][:300]}. The graph takes {takes}. If the tiles are large, use a "
                "smaller --tile-size (or --batch-size 1); if the graph fixes a size, tile at that size "
                "(--tile-size)."
            ) from exc
