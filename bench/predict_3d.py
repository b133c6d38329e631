"""Peak memory of idl-predict on volumes larger than the in-memory limit: 64 x 1024 x 1024 and
256 x 1024 x 1024 uint16 (128 MB and 512 MB of input), measured side by side in one run.

Both volumes are multi-page TIFFs (one zlib-compressed page per plane, as microscopes and Fiji
write them). idl-predict reads the planes a tile needs, computes the normalization percentiles from
a streamed histogram, and writes the mask (and the Monte Carlo uncertainty) tile by tile into
memory-mapped TIFFs. The network is a small 3D U-Net trained for one epoch: the point is the memory
of the pipeline around it, which should not grow with the volume.

    python bench/predict_3d.py [--work bench_out/predict_3d] [--mc-samples 0]

Targets (issue 4): the 256-plane volume uses at most 10% more peak memory than the 64-plane one,
and at most 600 MB.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _measure import Measurement, measure  # noqa: E402

RATIO_TARGET = 1.10
MEMORY_TARGET_MB = 600
PLANE = 1024


def _child_volume(planes: int, out: Path) -> None:
    """Write a ``planes x 1024 x 1024`` uint16 stack page by page (never whole in memory)."""
    import tifffile

    from idl.infer.datasets.synthetic import synthetic_nuclei_3d

    block, _ = synthetic_nuclei_3d(np.random.default_rng(0), (32, 256, 256), objects=(20, 30))
    pages = (np.tile(block[z % block.shape[0]], (PLANE // 256, PLANE // 256)) for z in range(planes))
    with tifffile.TiffWriter(out) as tif:  # one series, one page per plane, from a generator
        tif.write(
            pages, shape=(planes, PLANE, PLANE), dtype=np.uint16, photometric="minisblack", compression="zlib"
        )


def _train_model(work: Path) -> Path:
    from idl.infer.datasets.synthetic import write_semantic_project_3d

    project = work / "project"
    if not (project / "model" / "model.onnx").is_file():
        write_semantic_project_3d(project, n_train=4, n_test=1, seed=0, shape=(16, 64, 64))
        args = ["--dims", "3", "--depth", "1", "--filters", "4", "--epochs", "1", "--image-size", "64"]
        args += ["--steps-per-epoch", "2"]
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
    parser.add_argument("--mc-samples", type=int, default=0)
    parser.add_argument(
        "--tile-size", type=int, default=64, help="the same tile shape for both volumes (64 fits in both)"
    )
    parser.add_argument("--child", choices=["volume"], help=argparse.SUPPRESS)
    parser.add_argument("--planes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "volume":
        _child_volume(args.planes, args.out)
        return

    args.work.mkdir(parents=True, exist_ok=True)
    model = _train_model(args.work)
    runs: list[Measurement] = []
    for planes in (64, 256):
        volume = args.work / f"volume_{planes}.tif"
        if not volume.is_file():
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "volume",
                "--planes",
                str(planes),
                "--out",
                str(volume),
            ]
            subprocess.run(cmd, check=True)
        cmd = [
            sys.executable,
            "-m",
            "idl.cli.predict",
            str(model),
            str(volume),
            "--out",
            str(args.work / f"out_{planes}"),
        ]
        cmd += ["--quiet", "--mc-samples", str(args.mc_samples), "--tile-size", str(args.tile_size)]
        runs.append(measure(f"{planes} x {PLANE} x {PLANE}", cmd))
    print(
        f"\nidl-predict, model {model}, {args.tile_size}-voxel tiles, Monte Carlo samples: {args.mc_samples}"
    )
    print(f"{'volume (uint16)':<22}{'input (MB)':>12}{'time (s)':>10}{'peak RSS (MB)':>16}")
    for planes, r in zip((64, 256), runs, strict=True):
        print(f"{r.label:<22}{planes * PLANE * PLANE * 2 / 2**20:>12.0f}{r.seconds:>10.1f}{r.peak_mb:>16.0f}")
    ratio = runs[1].peak_mb / runs[0].peak_mb
    ok_ratio, ok_memory = ratio <= RATIO_TARGET, runs[1].peak_mb <= MEMORY_TARGET_MB
    print(
        f"larger / smaller peak RSS: {ratio:.3f} "
        f"(target <= {RATIO_TARGET}: {'met' if ok_ratio else 'MISSED'}); "
        f"larger peak {runs[1].peak_mb:.0f} MB "
        f"(target <= {MEMORY_TARGET_MB}: {'met' if ok_memory else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
