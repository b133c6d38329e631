"""The inference benchmarks against peers in one command: bench/predict_2d.py, then bench/predict_3d.py,
then both reports together (each script's own tables; see their docstrings and bench/_peers.py).

    python bench/suite.py --model-2d demo_project/model   # full sizes: 4096 x 4096; 64 and 256 x 1024^2
    python bench/suite.py --quick                         # small sizes, to check that everything runs

The peers' libraries come with ``pip install -e '.[bench]'``; a missing one is skipped with a note.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from _peers import SKIPPABLE, add_skip_options

BENCH = Path(__file__).parent
QUICK = {"predict_2d": ["--size", "1024"], "predict_3d": ["--side", "256", "--planes", "64", "128"]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("bench_out"), help="folder of both benchmarks")
    parser.add_argument("--model-2d", type=Path, help="trained 2D PROJECT/model (default: train a quick one)")
    parser.add_argument("--model-3d", type=Path, help="trained 3D PROJECT/model (default: train a tiny one)")
    parser.add_argument("--quick", action="store_true", help="1024 x 1024 and 64 / 128 x 256 x 256")
    add_skip_options(parser)
    args = parser.parse_args()
    common = [f"--skip-{name}" for name in SKIPPABLE if getattr(args, f"skip_{name}")]
    reports = []
    for script, model in (("predict_2d", args.model_2d), ("predict_3d", args.model_3d)):
        cmd = [sys.executable, str(BENCH / f"{script}.py"), "--work", str(args.work / script), *common]
        cmd += (["--model", str(model)] if model else []) + (QUICK[script] if args.quick else [])
        print(f"running {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        result = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        reports.append(f"== {script}.py ==\n{result.stdout.strip()}\n")
    print("\n".join(reports))


if __name__ == "__main__":
    main()
