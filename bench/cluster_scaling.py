"""Blocks of one volume on Dask workers: blocks per second with 1 and 2 workers of one thread, the
overhead of ``--dask local:1`` against one idl-predict process with one thread, peak memory.

    python bench/cluster_scaling.py MODEL_3D SOURCE_VOLUME --shape 64 512 512 --block-size 64

The input is SOURCE_VOLUME (a real volume) repeated to ``--shape`` and written as an uncompressed TIFF,
read window by window. Each setting runs as a whole ``idl-predict`` process into a fresh folder,
the settings alternating for ``--rounds`` rounds (these machines are noisy); printed: each setting's
median wall time, blocks per second, peak resident memory of the whole process tree (and of each Dask
worker, from idl-predict's log), the ratios measured side by side, and whether the outputs are
identical. Results: docs/benchmarks.md, "Prediction on a cluster".
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import tifffile


def make_volume(source: Path, shape: tuple[int, ...], path: Path) -> Path:
    """``source`` repeated (mirrored, so no seams) to ``shape``, as an uncompressed float32 TIFF."""
    image = tifffile.imread(source).astype(np.float32)
    reps = [-(-n // s) for n, s in zip(shape, image.shape, strict=True)]
    tiles = image
    for axis, r in enumerate(reps):
        tiles = np.concatenate([np.flip(tiles, axis) if i % 2 else tiles for i in range(r)], axis=axis)
    tifffile.imwrite(path, np.ascontiguousarray(tiles[tuple(slice(0, n) for n in shape)]))
    return path


def run(command: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak resident bytes of the process and its children together, and the log."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    log = process.stdout.read() if process.stdout else ""
    if process.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{log}")
    return time.perf_counter() - start, peak, log


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model")
    parser.add_argument("source")
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 512, 512])
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument(
        "--tile-size", type=int, default=None, help="idl-predict's --tile-size [default: its own]"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="idl-cluster-"))
    work.mkdir(parents=True, exist_ok=True)
    volume = make_volume(Path(args.source), tuple(args.shape), work / "volume.tif")
    predict = str(Path(sys.executable).with_name("idl-predict"))
    common = [
        predict,
        args.model,
        str(volume),
        "--threads",
        "1",
    ]  # not --quiet: the workers' peaks are logged
    common += ["--tile-size", str(args.tile_size)] if args.tile_size else []
    blocks = ["--out-format", "zarr", "--block-size", str(args.block_size)]
    settings = {
        # the reference without blocks: the whole volume's tile grid, written tile by tile into a TIFF
        "no blocks, tif": ["--out-format", "tif"],
        "one process": blocks,
        "dask local:1": [*blocks, "--dask", "local:1"],
        "dask local:2": [*blocks, "--dask", "local:2"],
    }
    times: dict[str, list[float]] = {name: [] for name in settings}
    peaks: dict[str, int] = {}
    workers: dict[str, str] = {}
    for _ in range(args.rounds):
        for name, extra in settings.items():
            out = work / name.replace(" ", "-").replace(":", "")
            shutil.rmtree(out, ignore_errors=True)
            seconds, peak, log = run([*common, "--out", str(out), *extra])
            times[name].append(seconds)
            peaks[name] = max(peaks.get(name, 0), peak)
            found = re.search(r"peak memory: ([\d, ]+) MB", log)
            workers[name] = found.group(1) if found else ""
    blocks = int(np.prod([-(-n // args.block_size) for n in args.shape]))
    print(
        f"volume {tuple(args.shape)} ({np.prod(args.shape) / 1e6:.1f} M voxels), {blocks} blocks of "
        f"{args.block_size}, model {args.model}, {args.rounds} round(s)"
    )
    median = {name: statistics.median(values) for name, values in times.items()}
    for name in settings:
        if name.startswith("no blocks"):
            print(
                f"  {name:<13} {median[name]:7.1f} s ({', '.join(f'{t:.1f}' for t in times[name])}), "
                f"peak {peaks[name] / 2**20:.0f} MB"
            )
            continue
        per_worker = f"; each worker's peak {workers[name]} MB" if workers[name] else ""
        print(
            f"  {name:<13} {median[name]:7.1f} s ({', '.join(f'{t:.1f}' for t in times[name])}), "
            f"{blocks / median[name]:.2f} blocks/s, peak {peaks[name] / 2**20:.0f} MB in all{per_worker}"
        )
    print(f"  scaling 1 -> 2 workers: {median['dask local:1'] / median['dask local:2']:.2f}x")
    print(
        f"  overhead of --dask local:1 against one process: "
        f"{100 * (median['dask local:1'] / median['one process'] - 1):+.1f} %"
    )
    from idl.infer.io.formats.ome_zarr import read_ome_zarr

    one = read_ome_zarr(work / "one-process" / "volume.ome.zarr")
    two = read_ome_zarr(work / "dask-local2" / "volume.ome.zarr")
    print(
        f"  the 2-worker volume is {'identical to' if np.array_equal(one, two) else 'DIFFERENT from'} "
        "the one-process volume"
    )


if __name__ == "__main__":
    main()
