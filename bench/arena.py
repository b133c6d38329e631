"""Peak memory of ONNX Runtime on one tile, with its own CPU arena or with idl's shared arena.

Each setting runs in its own process (a process holds one shared arena, and the peak RSS is the
process's), the two alternating per tile:

    python bench/arena.py MODEL/model.onnx --tiles 1504,1888,2048 --runs 5
    python bench/arena.py MODEL/model.onnx --tiles 64x608x608 --runs 2     # a 3D tile

It prints, per tile and arena, the time of the runs and the peak RSS (the whole process, model and
session included), the measurements behind :mod:`idl.infer.runtime.arena`.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time


def child(model: str, tile: str, runs: int, shared: bool) -> None:
    """Run ``runs`` calls of a random ``1 x 1 x tile`` input and print the time and the peak RSS."""
    import numpy as np

    from idl.infer.runtime.arena import REGION
    from idl.infer.runtime.session import OnnxRunner

    shape = tuple(int(n) for n in tile.split("x"))
    if len(shape) == 1:
        shape = shape * 2
    runner = OnnxRunner(model, "cpu", expected=REGION if shared else None)
    assert runner.shared_arena == shared
    batch = np.random.default_rng(0).random((1, 1, *shape), dtype=np.float32)
    start = time.perf_counter()
    for _ in range(runs):
        runner(batch)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{tile:>14}  {'shared' if shared else 'default':>7}  {seconds:8.2f} s  {peak:8.0f} MB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="an ONNX graph of one input (N, C, *spatial)")
    parser.add_argument("--tiles", default="1504,1888,2048,2240", help="sides (2D) or ZxYxX, comma-separated")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", choices=("default", "shared"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.model, args.tiles, args.runs, args.child == "shared")
        return
    print(f"{'tile':>14}  {'arena':>7}  {'time':>10}  {'peak RSS':>11}")
    for tile in args.tiles.split(","):
        for arena in ("default", "shared"):
            command = [sys.executable, __file__, args.model, "--tiles", tile, "--runs", str(args.runs)]
            subprocess.run([*command, "--child", arena], check=True)


if __name__ == "__main__":
    main()
