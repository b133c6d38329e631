"""Benchmark 3D prediction, in one run: the peak memory of idl-predict on volumes larger than the
in-memory limit, 64 x 1024 x 1024 and 256 x 1024 x 1024 uint16 (128 MB and 512 MB of input); and
idl-predict against its peers on the smaller volume (bench/_peers.py): whole-volume ONNX Runtime, torch
eager, bioimageio.core's blocked ``predict`` of the model's bioimage.io package (exported first) and
MONAI's ``sliding_window_inference`` (torch) on idl-predict's own windows, with the mask voxels that
differ from idl-predict's.

Both volumes are multi-page TIFFs (one zlib-compressed page per plane, as microscopes and Fiji
write them). idl-predict reads the planes a tile needs, computes the normalization percentiles from
a streamed histogram, and writes the mask (and the Monte Carlo uncertainty) tile by tile into
memory-mapped TIFFs. The network is a small 3D U-Net trained for one epoch: the point is the memory
of the pipeline around it, which should not grow with the volume.

    python bench/predict_3d.py [--work bench_out/predict_3d] [--mc-samples 0] [--model PROJECT/model]
    python bench/predict_3d.py --side 256 --planes 64 128       # a quick check on small volumes
    python bench/predict_3d.py --model PROJECT/model --settings --repeat 3   # tiles: before and now

``--settings`` (issue 36) measures instead, alternating ``--repeat`` times on the first volume,
idl-predict with today's default tile (``--tile-size 128``: 208 voxels for a 96-voxel halo) and with
the tiles ``--max-memory`` chooses (the default), and whole-volume ONNX Runtime on the largest volume
of ``--ort-side`` planes that fits in memory, whose time is scaled by the voxels to the first volume's
(idl-predict's default is measured on that volume too, for a ratio without scaling).

Each method is its own process (wall time and peak RSS of the whole process, bench/_measure.py).
Targets (issue 4): the 256-plane volume uses at most 10% more peak memory than the 64-plane one,
and at most 600 MB.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _measure import measure  # noqa: E402
from _peers import Run, add_skip_options, describe_monai, print_table, run_peers, skipped  # noqa: E402

RATIO_TARGET = 1.10
MEMORY_TARGET_MB = 600
BLOCK = 256  # side of the synthetic block the planes repeat


def _child_volume(planes: int, side: int, out: Path) -> None:
    """Write a ``planes x side x side`` uint16 stack page by page (never whole in memory)."""
    import tifffile

    from idl.infer.datasets.synthetic import synthetic_nuclei_3d

    block, _ = synthetic_nuclei_3d(np.random.default_rng(0), (32, BLOCK, BLOCK), objects=(20, 30))
    pages = (np.tile(block[z % block.shape[0]], (side // BLOCK, side // BLOCK)) for z in range(planes))
    with tifffile.TiffWriter(out) as tif:  # one series, one page per plane, from a generator
        tif.write(
            pages, shape=(planes, side, side), dtype=np.uint16, photometric="minisblack", compression="zlib"
        )


def _train_model(work: Path) -> Path:
    """A small 3D U-Net (depth 1, 4 filters): the memory of the pipeline around it is the point. Ten
    short epochs (test Jaccard about 0.6) rather than one, whose mask was nearly all foreground and
    left nothing for the peers' masks to be compared on; the network, and so the memory, is the same."""
    from idl.infer.datasets.synthetic import write_semantic_project_3d

    project = work / "project"
    if not (project / "model" / "model.onnx").is_file():
        write_semantic_project_3d(project, n_train=4, n_test=1, seed=0, shape=(16, 64, 64))
        args = ["--dims", "3", "--depth", "1", "--filters", "4", "--epochs", "10", "--image-size", "64"]
        args += ["--steps-per-epoch", "4"]
        args += ["--patch-z", "16", "--no-uncertainty", "--no-package", "--overwrite", "--quiet"]
        subprocess.run(
            [sys.executable, "-m", "idl.cli.train", str(project), "--task", "semantic", *args], check=True
        )
    return project / "model"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("bench_out/predict_3d"))
    parser.add_argument("--model", type=Path, help="trained 3D PROJECT/model folder (default: train one)")
    parser.add_argument("--mc-samples", type=int, default=0)
    parser.add_argument(
        "--tile-size",
        type=int,
        default=64,
        help="the same tile shape for both volumes (64 fits in both); also bioimageio.core's blocks and "
        "MONAI's windows (halo included)",
    )
    parser.add_argument("--side", type=int, default=1024, help=f"plane side, a multiple of {BLOCK}")
    parser.add_argument(
        "--planes", type=int, nargs=2, default=(64, 256), help="the two volumes; peers run on the first"
    )
    add_skip_options(parser)
    parser.add_argument("--settings", action="store_true", help="today's tile, the default and ORT (above)")
    parser.add_argument("--repeat", type=int, default=1, help="--settings: alternate the rows this often")
    parser.add_argument("--ort-side", type=int, default=512, help="--settings: whole-volume ORT's plane side")
    parser.add_argument("--precision", default="fp32", help="--settings: idl-predict's graphs (fp32, int8)")
    parser.add_argument("--more", default="6G", help="--settings: a larger --max-memory, measured too")
    parser.add_argument(
        "--today", action="store_true", help="--settings: also today's tile on the ORT volume (slow)"
    )
    parser.add_argument("--child", choices=["volume"], help=argparse.SUPPRESS)
    parser.add_argument("--child-planes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side % BLOCK:
        parser.error(f"--side must be a multiple of {BLOCK}")
    if args.child == "volume":
        _child_volume(args.child_planes, args.side, args.out)
        return

    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model or _train_model(args.work)
    side = args.side
    if args.settings:
        _settings(args, model)
        return

    def idl_predict(label: str, volume: Path, out: str, mc_samples: int) -> Run:
        """idl-predict on ``volume`` into ``work/out`` (``--overwrite``: an earlier run's mask would
        otherwise be kept and nothing predicted)."""
        cmd = [sys.executable, "-m", "idl.cli.predict", str(model), str(volume), "--tile-size"]
        cmd += [str(args.tile_size), "--mc-samples", str(mc_samples), "--out", str(args.work / out)]
        cmd += ["--quiet", "--overwrite"]
        return Run(out, measure(label, cmd), args.work / out / volume.name)

    volumes, runs = [], []
    for planes in args.planes:
        volume = _volume(args, planes, side)
        volumes.append(volume)
        runs.append(idl_predict(f"{planes} x {side} x {side}", volume, f"out_{planes}", args.mc_samples))
    label = f"idl-predict ({args.tile_size}-voxel tiles)"
    if args.mc_samples:  # the peers are compared with a deterministic prediction
        ours = idl_predict(label, volumes[0], "idl", 0)
    else:  # the smaller volume's run
        ours = Run("idl", replace(runs[0].measurement, label=label), runs[0].mask)
    peers = run_peers(model, volumes[0], args.work, args.tile_size, skipped(args))

    print(
        f"\nidl-predict, model {model}, {args.tile_size}-voxel tiles, Monte Carlo samples: {args.mc_samples}"
    )
    print(f"{'volume (uint16)':<22}{'input (MB)':>12}{'time (s)':>10}{'peak RSS (MB)':>16}")
    for planes, run in zip(args.planes, runs, strict=True):
        r = run.measurement
        print(f"{r.label:<22}{planes * side * side * 2 / 2**20:>12.0f}{r.seconds:>10.1f}{r.peak_mb:>16.0f}")
    larger, smaller = runs[1].measurement.peak_mb, runs[0].measurement.peak_mb
    ok_ratio, ok_memory = larger / smaller <= RATIO_TARGET, larger <= MEMORY_TARGET_MB
    print(
        f"larger / smaller peak RSS: {larger / smaller:.3f} "
        f"(target <= {RATIO_TARGET}: {'met' if ok_ratio else 'MISSED'}); "
        f"larger peak {larger:.0f} MB "
        f"(target <= {MEMORY_TARGET_MB}: {'met' if ok_memory else 'MISSED'})"
    )

    print(f"\n{args.planes[0]} x {side} x {side} uint16 volume, model {model}")
    differ = print_table([ours, *peers], ours)
    if "monai" in differ:
        print(describe_monai(model, volumes[0], args.tile_size))


def _volume(args: argparse.Namespace, planes: int, side: int) -> Path:
    volume = args.work / f"volume_{planes}x{side}.tif"
    if not volume.is_file():
        cmd = [sys.executable, __file__, "--child", "volume", "--child-planes", str(planes)]
        subprocess.run([*cmd, "--side", str(side), "--out", str(volume)], check=True)
    return volume


def _settings(args: argparse.Namespace, model: Path) -> None:
    """Today's tile against the default's and whole-volume ONNX Runtime (bench/_peers.py), each a
    whole process, alternating ``--repeat`` times; medians."""
    import tifffile

    planes = args.planes[0]
    big, small = _volume(args, planes, args.side), _volume(args, planes, args.ort_side)
    scale = (args.side / args.ort_side) ** 2

    def idl(volume: Path, out: str, *extra: str) -> tuple[float, float]:
        cmd = [
            sys.executable,
            "-m",
            "idl.cli.predict",
            str(model),
            str(volume),
            "--out",
            str(args.work / out),
        ]
        r = measure(out, [*cmd, "--quiet", "--overwrite", "--precision", args.precision, *extra])
        return r.seconds, r.peak_mb

    def ort(volume: Path) -> tuple[float, float]:
        cmd = [
            sys.executable,
            str(Path(__file__).with_name("_peers.py")),
            "onnxruntime",
            "--model",
            str(model),
        ]
        cmd += ["--image", str(volume), "--out", str(args.work / "ort.tif"), "--tile-size", "128"]
        r = measure("ort", cmd)
        return r.seconds, r.peak_mb

    big_label, small_label = f"{planes} x {args.side}^2", f"{planes} x {args.ort_side}^2"
    plan = [  # name, label, volume, extra arguments, voxel scale to ORT's volume
        ("default", f"idl-predict, default (--max-memory), {big_label}", big, (), scale),
        (
            "more",
            f"idl-predict --max-memory {args.more}, {big_label}",
            big,
            ("--max-memory", args.more),
            scale,
        ),
        ("default_small", f"idl-predict, default, {small_label}", small, (), 1.0),
        ("ort_small", f"onnxruntime, whole volume, {small_label}", small, None, 1.0),
    ]
    if args.today:
        today = ("--tile-size", "128")
        plan.insert(0, ("today", f"idl-predict, --tile-size 128 (before), {small_label}", small, today, 1.0))
    rows: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.repeat):
        for name, _, volume, extra, _ in plan:
            rows.setdefault(name, []).append(ort(volume) if extra is None else idl(volume, name, *extra))

    def median(name: str) -> tuple[float, float]:
        ordered = sorted(rows[name])
        return ordered[(len(ordered) - 1) // 2]

    ort_s = median("ort_small")[0]
    print(f"\n3D settings, model {model}, medians of {args.repeat} run(s)")
    print(f"{'method':<58}{'time (s)':>10}{'vs ORT':>9}{'peak RSS (MB)':>15}")
    for name, label, _, _, voxels in plan:
        seconds, peak = median(name)
        print(f"{label:<58}{seconds:>10.2f}{seconds / (ort_s * voxels):>8.2f}x{peak:>15.0f}")
    print(f"(rows on {args.side}^2 planes against ORT's time scaled by the voxels, x{scale:g})")
    ours = tifffile.imread(args.work / "default_small" / small.name)
    differ = int((ours != tifffile.imread(args.work / "ort.tif")).sum())
    print(f"mask voxels of the default != whole-volume ORT: {differ}")


if __name__ == "__main__":
    main()
