"""Loading a model for inference: an idl PROJECT/model folder, a ``.onnx`` file, or a bioimage.io
model package (ours or anyone's; see :mod:`idl.infer.runtime.package`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from idl.infer.core.errors import ModelError
from idl.infer.core.model_info import METADATA_KEY, ModelInfo
from idl.infer.runtime.footprint import Footprint, Probe, footprint
from idl.infer.runtime.iospec import IOSpec
from idl.infer.runtime.precision import (
    DETERMINISTIC,
    INT8_SUFFIX,
    MONTE_CARLO,
    choose_graphs,
    int8_path_for,
)
from idl.infer.runtime.session import OnnxRunner, Runner, Sampler
from idl.infer.runtime.tensors import Tensors

DETERMINISTIC_NAME = "model.onnx"
PACKAGE_SUFFIX = ".bioimageio.zip"
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")

log = logging.getLogger("idl")


MC_SUFFIX = "_mc"
# the second input of idl's Monte Carlo graphs that draw several samples per call (export/onnx.py)
MC_SAMPLES_INPUT = "samples"


def mc_path_for(path: Path) -> Path:
    """Where the Monte Carlo graph of a deterministic graph lives: ``model.onnx`` -> ``model_mc.onnx``."""
    return path.with_name(f"{path.stem}{MC_SUFFIX}{path.suffix}")


def deterministic_path_for(path: Path) -> Path | None:
    """The deterministic graph a Monte Carlo graph's name points to (``model_mc.onnx`` ->
    ``model.onnx``), or ``None`` when the name has no ``_mc`` suffix."""
    if not path.stem.endswith(MC_SUFFIX) or path.stem == MC_SUFFIX:
        return None
    return path.with_name(f"{path.stem[: -len(MC_SUFFIX)]}{path.suffix}")


@dataclass
class LoadedModel:
    """A deterministic ONNX graph plus its optional Monte Carlo twin, and how to feed them.

    Sessions open on first use, so Monte Carlo prediction does not also hold the deterministic
    session in memory. ``info`` is set for idl models (task, classes, training summary) and is
    ``None`` for other packages, whose outputs idl writes as they come.
    """

    io: IOSpec
    weights: Path | bytes
    label: str
    info: ModelInfo | None = None
    mc_weights: Path | bytes | None = None
    mc_missing: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    # what the tiled runner makes of the output (idl.infer.tiling.predict.Outputs, from the model's
    # task); None: the output as it is
    outputs: Any = None
    # the network's tensors (several inputs or outputs, outputs of another size); None: the one-entry
    # description of ``io`` (Tensors.single)
    tensors: Tensors = None  # type: ignore[assignment]
    # the random seed of the Monte Carlo session: the same seed, the same samples (a fixed default,
    # so a command run twice writes the same files; see reseed)
    seed: int = 0
    # the graphs' numbers: "fp32", or "int8" for an idl model's int8 graphs (idl.infer.runtime.precision);
    # precision_note says why (--precision auto)
    precision: str = "fp32"
    precision_note: str = ""
    # the bytes a call of the sessions is expected to take (the chosen tile's estimate, set by the
    # tiling); None: unknown. It decides whether they run in the shared arena (runtime.arena); a
    # session opened for other tiles is opened again (a Monte Carlo one from the seed, as by reseed).
    expected: float | None = None
    _runners: dict[bool, OnnxRunner] = field(default_factory=dict, repr=False)
    _footprints: dict[bool, Footprint | None] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.tensors is None:
            self.tensors = Tensors.single(self.io)

    @property
    def has_mc(self) -> bool:
        return self.mc_weights is not None

    def session(self, mc: bool = False) -> OnnxRunner:
        """The deterministic (or Monte Carlo) session; raises :class:`ModelError` when there is no
        Monte Carlo graph."""
        if mc and self.mc_weights is None:
            raise ModelError(
                f"{self.label}: this model has no Monte Carlo dropout graph ({self.mc_missing}). "
                "Predict without --mc-samples."
            )
        runner = self._runners.get(mc)
        if runner is None or runner.shared_arena != runner.arena_for(self.expected):
            source = self.mc_weights if mc else self.weights
            assert source is not None
            label = f"{self.label}{' (MC)' if mc else ''}"
            seed = self.seed if mc else None
            self._runners[mc] = runner = OnnxRunner(source, self.device, label, seed, self.expected)
        return runner

    def footprint(self, mc: bool = False) -> Footprint | None:
        """What a call of the deterministic (or Monte Carlo) graph costs in memory per tile pixel
        (:mod:`idl.infer.runtime.footprint`): as stored at export (the float32 graph's), else measured
        once from the graph; ``None`` for a network of several inputs, of a fixed size, or whose graph
        shape inference cannot follow."""
        if mc not in self._footprints:
            stored = self.info.footprint if self.info else {}
            key = MONTE_CARLO if mc else DETERMINISTIC
            if key in stored:  # measured at export; [] where the graph could not be measured
                self._footprints[mc] = Footprint(*stored[key]) if stored[key] else None
            else:
                self._footprints[mc] = self._measure_footprint(mc)
        return self._footprints[mc]

    def _measure_footprint(self, mc: bool) -> Footprint | None:
        io = self.io
        source = self.mc_weights if mc else self.weights
        if self.precision == "int8" and isinstance(source, Path):
            # ONNX Runtime's int8 kernels held more than the int8 graph's tensors (1.96 GB where its
            # estimate allowed 1.5; its float32 twin's estimate keeps it within: docs/benchmarks.md)
            twin = source.with_name(source.name.replace(INT8_SUFFIX, "", 1))
            source = twin if twin.is_file() else source
        rules = [io.sizes[a] for a in io.spatial]
        if source is None or len(self.tensors.inputs) != 1 or any(r.step == 0 for r in rules):
            return None
        counted = mc and self.counts_samples()

        def probe(side: int) -> Probe:
            sizes = {a: r.at_least(side) for a, r in zip(io.spatial, rules, strict=True)}
            pixels = math.prod(sizes.values())
            shape = tuple((sizes | {"b": 1, "c": io.in_channels})[a] for a in io.input_axes)
            return ([shape, (1,)] if counted else [shape]), pixels

        return footprint(source, (probe(64), probe(128)), self.label)

    def reseed(self, seed: int) -> None:
        """Draw the Monte Carlo samples from ``seed`` on: the next Monte Carlo session starts from it
        (an open one is closed), so what follows reproduces whatever ran before in this process."""
        self.seed = int(seed)
        self._runners.pop(True, None)

    @property
    def runner(self) -> OnnxRunner:
        """The deterministic session (network axes, raw output)."""
        return self.session(False)

    @property
    def mc_runner(self) -> OnnxRunner:
        """The Monte Carlo dropout session (network axes, raw output)."""
        return self.session(True)

    def network(self, mc: bool = False) -> Runner:
        """A function from idl's ``(N, C, *spatial)`` batches to ``(N, K, *spatial)`` raw outputs."""
        runner, io = self.session(mc), self.io

        def run(batch: np.ndarray) -> np.ndarray:
            return io.from_model(runner(io.to_model(batch)))

        return run

    def counts_samples(self) -> bool:
        """Whether the Monte Carlo graph takes a sample count after the network's inputs."""
        names = self.session(True).input_names
        return len(names) == len(self.tensors.inputs) + 1 and names[-1] == MC_SAMPLES_INPUT

    def sampler(self) -> Sampler | None:
        """Monte Carlo samples in one call, when the Monte Carlo graph takes a sample count (an input
        after the network's own called :data:`MC_SAMPLES_INPUT`, whose length is the count):
        ``(N, C, *spatial)`` and ``S`` -> ``(N * S, K, *spatial)`` in idl's axes, the samples of each
        tile together. ``None`` for graphs that sample by being called on copies of a tile (a
        network with two inputs of its own is not one with a sample count)."""
        runner, io = self.session(True), self.io
        if not self.counts_samples():
            return None

        def run(batch: np.ndarray, count: int) -> np.ndarray:
            return io.from_model(runner.run_all([io.to_model(batch), np.zeros(count, np.float32)])[0])

        return run


def resolve_model_path(path: Path) -> Path:
    """The deterministic ``.onnx`` file behind an idl model folder or file path."""
    if path.is_dir():
        candidate = path / DETERMINISTIC_NAME
        if not candidate.is_file():
            raise ModelError(
                f"{path}: no {DETERMINISTIC_NAME} or bioimage.io rdf.yaml in this folder. Pass a trained "
                "PROJECT/model folder, a .onnx file or a bioimage.io package (.zip, folder or rdf.yaml); "
                "export one from a checkpoint with idl-export."
            )
        return candidate
    if path.suffix.lower() == ".onnx" and path.is_file():
        return path
    if not path.exists():
        raise ModelError(f"{path}: no such file or folder.")
    raise ModelError(
        f"{path}: not a model. Pass a PROJECT/model folder, a .onnx file or a bioimage.io package "
        "(.zip, folder or rdf.yaml)."
    )


def is_package(path: Path) -> bool:
    """True for a bioimage.io package: a ``.zip``, an ``rdf.yaml``/``bioimageio.yaml`` or a folder
    holding one (an idl model folder with its own ``model.onnx`` is loaded as an idl model)."""
    if path.is_dir():
        return not (path / DETERMINISTIC_NAME).is_file() and any((path / n).is_file() for n in RDF_NAMES)
    return path.suffix.lower() == ".zip" or path.name.endswith((".yaml", ".yml"))


def read_info(runner: OnnxRunner) -> ModelInfo | None:
    """The :class:`ModelInfo` embedded in an idl ONNX graph, or ``None``."""
    meta = runner.metadata.get(METADATA_KEY)
    return None if meta is None else ModelInfo.from_json(meta)


class ModelKind(Protocol):
    """What the loaders need from a model's task (:class:`idl.infer.tasks.base.Task` is one)."""

    def io_spec(self, info: ModelInfo) -> IOSpec: ...

    def mc_missing(self, info: ModelInfo, mc: Path) -> str: ...

    def outputs(self, info: ModelInfo) -> Any: ...


KindOf = Callable[[ModelInfo], ModelKind]


def load_onnx_model(
    path: Path, kind_of: KindOf, device: str = "auto", precision: str = "fp32"
) -> LoadedModel:
    """Open an idl model folder or ``.onnx`` file (any model: :mod:`idl.infer.service.load`) at
    ``precision`` (``fp32``, ``int8`` or ``auto``: :func:`~idl.infer.runtime.precision.choose_graphs`)."""
    onnx_path = resolve_model_path(path)
    info, input_names = _probe(onnx_path)
    if info is None:
        raise ModelError(
            f"{onnx_path}: this ONNX file has no idl metadata, so its task, normalization and tiling "
            "needs are unknown. Use a model trained with idl-train (or exported with idl-export), or a "
            "bioimage.io package, which describes its network."
        )
    refuse_mc_graph(onnx_path, input_names, info)
    mc, kind = mc_path_for(onnx_path), kind_of(info)
    graphs = choose_graphs(
        onnx_path,
        mc if mc.is_file() else None,
        mc_path_for(int8_path_for(onnx_path)),
        info.quantized,
        precision,
        device,
    )
    if graphs.note and (graphs.precision == "int8" or int8_path_for(onnx_path).is_file()):
        log.info("precision %s: %s", graphs.precision, graphs.note)
    return LoadedModel(
        io=kind.io_spec(info),
        weights=graphs.weights,
        label=str(graphs.weights),
        info=info,
        mc_weights=graphs.mc_weights,
        mc_missing=kind.mc_missing(info, mc),
        outputs=kind.outputs(info),
        details={"name": info.name, "source": str(onnx_path)},
        device=graphs.device,
        precision=graphs.precision,
        precision_note=graphs.note,
    )


def _probe(path: Path) -> tuple[ModelInfo | None, list[str]]:
    """An ONNX file's idl metadata and input names, from a CPU session that is dropped again."""
    runner = OnnxRunner(path, "cpu")
    return read_info(runner), runner.input_names


def refuse_mc_graph(path: Path, input_names: list[str], info: ModelInfo) -> None:
    """Refuse idl's Monte Carlo dropout graph given as the model: it draws a different result at every
    call and is found beside its deterministic graph. It is recognised by its second input (the sample
    count; idl's deterministic graphs take one) or, for graphs without one (classifiers), by its name
    and a deterministic graph beside it with the same idl metadata. A graph of one's own that is merely
    named ``x_mc.onnx`` is run as any other."""
    twin = deterministic_path_for(path)
    beside = twin if twin is not None and twin.is_file() else None
    sampled = len(input_names) == 2 and input_names[1] == MC_SAMPLES_INPUT
    if not sampled and not (beside is not None and _same_info(beside, info)):
        return
    instead = (
        f"pass {beside} or the folder {path.parent}"
        if beside
        else f"pass the deterministic graph exported with it ({DETERMINISTIC_NAME}) or the model folder"
    )
    raise ModelError(
        f"{path}: this is the Monte Carlo dropout graph of an idl model, not a model of its own: "
        f"{instead}. idl-predict finds the Monte Carlo graph beside it; add --mc-samples N for "
        "uncertainty maps."
    )


def _same_info(path: Path, info: ModelInfo) -> bool:
    """Whether the ONNX file at ``path`` carries idl metadata equal to ``info``."""
    try:
        return _probe(path)[0] == info
    except (ModelError, ValueError, TypeError):  # not loadable, or metadata of another idl version
        return False
