"""The peers idl-predict is measured against, on one 2D image or 3D volume (bench/predict_2d.py,
bench/predict_3d.py).

Every peer reads the same uint16 TIFF, normalizes it with the model's whole-image percentiles, predicts
with the same trained weights, thresholds the probabilities with Otsu and writes the mask as a TIFF, as
idl-predict does. Each runs as its own process (``python bench/_peers.py PEER ...``), so that
bench/_measure.py measures the wall time and peak RSS of the whole process, imports included:

- ``onnxruntime``: the whole image in one ONNX Runtime call (the reference of the ratios);
- ``torch``: the whole image through the torch network in eager mode;
- ``bioimageio``: bioimageio.core's blocked ``predict`` of the model's bioimage.io package (blocks of
  the tile size, halo included, as idl's tiles);
- ``monai``: MONAI's ``sliding_window_inference`` over the torch network, on the windows idl-predict
  tiles the image with (:func:`monai_windows`), blending overlaps with constant weights.

A peer whose library is not installed is skipped with a note (``pip install -e '.[bench]'`` installs
them all).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _measure import Measurement, measure  # noqa: E402

if TYPE_CHECKING:
    from idl.infer.core.model_info import ModelInfo
    from idl.infer.core.normalize import Normalization


@dataclass(frozen=True)
class Peer:
    """A way of predicting the image: its child's name, its row label and the module it needs."""

    name: str
    label: str
    module: str


PEERS = (
    Peer("onnxruntime", "onnxruntime, whole image", "onnxruntime"),
    Peer("torch", "torch eager, whole image", "torch"),
    Peer("bioimageio", "bioimageio.core, {tile} blocks", "bioimageio.core"),
    Peer("monai", "MONAI sliding window, torch", "monai"),
)


SKIPPABLE = tuple(p.name for p in PEERS if p.name != "onnxruntime")  # ONNX Runtime is the reference


def add_skip_options(parser: argparse.ArgumentParser) -> None:
    """``--skip-torch``, ``--skip-bioimageio``, ``--skip-monai``."""
    for name in SKIPPABLE:
        parser.add_argument(f"--skip-{name}", action="store_true", help=f"do not run the {name} peer")


def skipped(args: argparse.Namespace) -> set[str]:
    """The peers the ``--skip-*`` options name."""
    return {name for name in SKIPPABLE if getattr(args, f"skip_{name}")}


@dataclass(frozen=True)
class Run:
    """One measured process, the mask it wrote and a short name (a peer's: ``onnxruntime``, ...)."""

    name: str
    measurement: Measurement
    mask: Path


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (the parent stays small: a child
    starts with the parent's resident pages counted in its peak RSS)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def monai_windows(
    info: ModelInfo, shape: Sequence[int], tile: int
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """MONAI's ``roi_size`` and ``overlap`` that reproduce idl-predict's tiles on an image of ``shape``.

    idl's tile size is the network's input window, halo included, and each window owns its middle
    ``window - 2 * halo`` pixels; idl shortens the windows to what the image needs (a 4096-px axis in
    512-px tiles with a 96-px halo: thirteen 496-px windows, 304 px apart). MONAI steps by
    ``int(roi * (1 - overlap))`` and places the last window flush with the border as idl does, so the
    overlap ``1 - step / window`` (``2 * halo / window``: each window owns as much as idl's) gives the
    same windows; half a pixel less keeps float rounding from shortening the step. An axis with a
    single window gets overlap 0.
    """
    from idl.infer.core.grid import AxisSize, axis_tiles

    roi, overlap = [], []
    for axis, n in zip("zyx"[-len(shape) :], shape, strict=True):
        multiple = info.multiple_of(axis)
        tiles = axis_tiles(n, tile, info.halo_of(axis), AxisSize(multiple, multiple))
        window = tiles[0].size
        roi.append(window)
        overlap.append(1 - (tiles[1].origin + 0.5) / window if len(tiles) > 1 else 0.0)
    return tuple(roi), tuple(overlap)


def _network_input(image: np.ndarray, norm: Normalization) -> np.ndarray:
    """A single-channel image as the network's ``(1, 1, *spatial)`` float32 batch, normalized with
    its own percentiles as idl-predict does (idl-predict does it tile by tile)."""
    from idl.infer.core.normalize import normalize

    return np.ascontiguousarray(normalize(image[..., None], norm)[None, None, ..., 0])


def _write_mask(probabilities: np.ndarray, out: Path, temperature: float = 1.0) -> None:
    """Otsu's mask of ``(1, *spatial)`` probabilities, as idl-predict thresholds them by default: for
    probabilities calibrated by ``temperature``, on the network's own scale (the same mask)."""
    import tifffile

    from idl.infer.post.postprocess import to_mask

    tifffile.imwrite(out, to_mask(probabilities, "otsu", temperature)[0])


def _child_onnxruntime(model_dir: Path, image_path: Path, out: Path, tile: int) -> None:
    """Whole image in one ONNX Runtime call: the reference for speed."""
    import onnxruntime as ort
    import tifffile

    from idl.infer.core.processing import apply_ops
    from idl.infer.service.load import load_model

    model = load_model(model_dir)
    x = _network_input(tifffile.imread(image_path), model.info.normalization)
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    probabilities = apply_ops(model.io.postprocessing, logits, model.io.batch_axes)[0]  # calibrated sigmoid
    _write_mask(probabilities, out, model.info.temperature)


def _child_torch(model_dir: Path, image_path: Path, out: Path, tile: int) -> None:
    """Whole image through the torch network in eager mode."""
    import tifffile
    import torch

    from idl.train.checkpoint import load_checkpoint, model_from_checkpoint

    net, info = model_from_checkpoint(load_checkpoint(model_dir / "best.pt"))
    x = torch.from_numpy(_network_input(tifffile.imread(image_path), info.normalization))
    with torch.no_grad():
        _write_mask(torch.sigmoid(net(x))[0].numpy(), out)


def _child_bioimageio(model_dir: Path, image_path: Path, out: Path, tile: int) -> None:
    """bioimageio.core's own prediction of the package, in blocks of at most ``tile`` pixels per axis
    (halo included; its own padding and pre-processing)."""
    import tifffile
    from bioimageio.core import Tensor, predict
    from bioimageio.spec import load_model_description

    descr = load_model_description(package_of(model_dir), perform_io_checks=False)
    image = tifffile.imread(image_path)
    tensor = descr.inputs[0]
    spatial = [a for a in tensor.axes if a.type == "space"]
    blocks = {  # blocks of min + n * step pixels
        (tensor.id, a.id): max(0, (min(tile, n) - a.size.min) // a.size.step)
        for a, n in zip(spatial, image.shape, strict=True)
    }
    dims = ["batch", "channel", *(str(a.id) for a in spatial)]
    sample = predict(
        model=descr,
        inputs={tensor.id: Tensor.from_numpy(image[None, None], dims=dims)},
        blocksize_parameter=blocks,
    )
    _write_mask(sample.members[descr.outputs[0].id].data.values[0], out)


def _child_monai(model_dir: Path, image_path: Path, out: Path, tile: int) -> None:
    """MONAI's ``sliding_window_inference`` with the torch network on idl-predict's windows
    (:func:`monai_windows`), one window per call as idl-predict by default, overlapping logits
    averaged with constant weights, then the sigmoid."""
    import tifffile
    import torch
    from monai.inferers import sliding_window_inference

    from idl.train.checkpoint import load_checkpoint, model_from_checkpoint

    net, info = model_from_checkpoint(load_checkpoint(model_dir / "best.pt"))
    image = tifffile.imread(image_path)
    roi, overlap = monai_windows(info, image.shape, tile)
    x = torch.from_numpy(_network_input(image, info.normalization))
    del image
    with torch.no_grad():
        logits = sliding_window_inference(x, roi, 1, net, overlap=overlap, mode="constant")
        _write_mask(torch.sigmoid(logits)[0].numpy(), out)


CHILDREN: dict[str, Callable[[Path, Path, Path, int], None]] = {
    "onnxruntime": _child_onnxruntime,
    "torch": _child_torch,
    "bioimageio": _child_bioimageio,
    "monai": _child_monai,
}


def package_of(model_dir: Path) -> Path:
    """The model's bioimage.io package, exported first for models trained without one."""
    packages = sorted(model_dir.glob("*.bioimageio.zip"))
    if not packages:
        cmd = [sys.executable, "-m", "idl.cli.export", str(model_dir / "best.pt"), "--out", str(model_dir)]
        subprocess.run([*cmd, "--quiet"], check=True)
        packages = sorted(model_dir.glob("*.bioimageio.zip"))
    return packages[0]


def run_peers(model: Path, image: Path, work: Path, tile: int, skip: Collection[str]) -> list[Run]:
    """Measure every peer on ``image`` (one process each, masks written to ``work/PEER.tif``), except
    those in ``skip`` and those whose library is missing (with a note). ONNX Runtime is never skipped:
    it is the reference."""
    runs = []
    for peer in PEERS:
        if peer.name in skip and peer.name in SKIPPABLE:
            continue
        if not installed(peer.module):
            print(f"{peer.module} is not installed (pip install -e '.[bench]'): {peer.name} skipped")
            continue
        if peer.name == "bioimageio":
            package_of(model)  # exported outside the measured process
        out = work / f"{peer.name}.tif"
        cmd = [sys.executable, __file__, peer.name, "--model", str(model), "--image", str(image)]
        cmd += ["--out", str(out), "--tile-size", str(tile)]
        runs.append(Run(peer.name, measure(peer.label.format(tile=tile), cmd), out))
    return runs


def print_table(runs: Sequence[Run], ours: Run) -> dict[str, int]:
    """Print time, time relative to whole-image ONNX Runtime, peak RSS and the mask pixels that differ
    from ``ours``, one row per run; return those pixel counts by run name. The masks are read after
    all runs: the parent stays small while it measures."""
    import tifffile

    reference = next(r for r in runs if r.name == "onnxruntime").measurement.seconds
    mask = tifffile.imread(ours.mask)
    differ = {run.name: int((tifffile.imread(run.mask) != mask).sum()) for run in runs}
    print(f"{'method':<34}{'time (s)':>10}{'vs ORT':>9}{'peak RSS (MB)':>15}{'mask px != idl':>16}")
    for run in runs:
        r = run.measurement
        ratio = r.seconds / reference
        print(f"{r.label:<34}{r.seconds:>10.2f}{ratio:>8.2f}x{r.peak_mb:>15.0f}{differ[run.name]:>16}")
    return differ


def describe_monai(model: Path, image: Path, tile: int) -> str:
    """The MONAI windows and overlap used on ``image``, for the table's notes."""
    import tifffile

    from idl.infer.service.load import load_model

    with tifffile.TiffFile(image) as tif:
        shape = tif.series[0].shape
    roi, overlap = monai_windows(load_model(model).info, shape, tile)
    steps = [int(r * (1 - o)) for r, o in zip(roi, overlap, strict=True)]  # MONAI's own rounding
    return (
        f"MONAI: roi {' x '.join(map(str, roi))} (idl-predict's windows for {tile}-px tiles), overlap "
        f"{', '.join(f'{o:.3f}' for o in overlap)} (2 x halo / window: windows {' x '.join(map(str, steps))} "
        "px apart, each owning as much as an idl tile), mode constant, sw_batch_size 1"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("peer", choices=list(CHILDREN))
    parser.add_argument("--model", type=Path, required=True, help="trained PROJECT/model folder")
    parser.add_argument("--image", type=Path, required=True, help="uint16 TIFF, 2D or 3D")
    parser.add_argument("--out", type=Path, required=True, help="mask TIFF to write")
    parser.add_argument("--tile-size", type=int, required=True, help="idl-predict's tile size")
    args = parser.parse_args()
    CHILDREN[args.peer](args.model, args.image, args.out, args.tile_size)


if __name__ == "__main__":
    main()
