"""Training samples per second on the CPU with one process and with two (torchrun, gloo), side by side.

Both runs train the same project with the same settings, seed and global batch; the two processes take
half of every batch each (``idl.train.distributed``) and average their gradients. Each run is its own
``idl-train`` command; printed are the training samples per second (the patches of all optimizer steps
over the training time idl records in the checkpoint, validation included), the wall time of the whole
command, and how far the per-epoch training losses of the two runs lie apart.

    python bench/train_distributed.py PROJECT [--task semantic] [--epochs 4] [--steps 25] [--rounds 2]

``PROJECT`` (with ``train/``) is copied to a temporary folder first, so a read-only data folder works.
Threads: one process uses both cores (two torch threads); each of two processes one
(``OMP_NUM_THREADS``), so both configurations use the whole 2-core machine. Rounds alternate the order.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _train(project: Path, processes: int, threads: int, flags: list[str]) -> tuple[float, float, list[float]]:
    """(training seconds from the checkpoint, wall seconds, per-epoch losses) of one idl-train run."""
    if processes == 1:
        command = [sys.executable, "-m", "idl.cli.train"]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += [f"--nproc_per_node={processes}", "--module", "idl.cli.train"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run([*command, str(project), *flags], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{processes} process(es) failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    state = torch.load(project / "model" / "last.pt", weights_only=True)["state"]
    return float(state["seconds"]), wall, [h["train_loss"] for h in state["history"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--task", default="semantic")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    flags = ["--task", args.task, "--epochs", str(args.epochs), "--steps-per-epoch", str(args.steps)]
    flags += ["--batch-size", str(args.batch_size), "--image-size", str(args.image_size), "--patience", "99"]
    flags += ["--no-uncertainty", "--no-evaluate", "--quiet", "--overwrite"]
    samples = args.epochs * args.steps * args.batch_size
    results: dict[int, list[tuple[float, float, list[float]]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(args.project / "train", project / "train")
        for round_ in range(args.rounds):
            order = (1, 2) if round_ % 2 == 0 else (2, 1)
            for processes in order:
                threads = max(cores // processes, 1)
                results[processes].append(_train(project, processes, threads, [*flags, "--no-package"]))
                seconds, wall, _ = results[processes][-1]
                rate = samples / seconds
                print(f"round {round_ + 1}, {processes} process(es): {rate:.2f} samples/s, {wall:.1f} s")
    rates = {p: statistics.median(samples / r[0] for r in runs) for p, runs in results.items()}
    wall = {p: statistics.median(r[1] for r in runs) for p, runs in results.items()}
    one, two = results[1][0][2], results[2][0][2]
    apart = max(abs(a - b) / abs(a) for a, b in zip(one, two, strict=True))
    size = f"{args.epochs} epochs x {args.steps} steps x batch {args.batch_size}"
    print(f"\n{samples} training samples ({size}),")
    print(f"{cores} cores, medians of {args.rounds} round(s):\n")
    print("| processes | threads each | samples/s | vs 1 process | idl-train wall time (s) |")
    print("|---:|---:|---:|---:|---:|")
    for p in (1, 2):
        print(f"| {p} | {max(cores // p, 1)} | {rates[p]:.2f} | {rates[p] / rates[1]:.2f}x | {wall[p]:.1f} |")
    print(f"\nper-epoch training losses of the two runs: at most {100 * apart:.2f} % apart")


if __name__ == "__main__":
    main()
