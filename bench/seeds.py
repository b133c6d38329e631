"""One project of bench/real_data.py over several seeds of the default: how often a user's run
lands where (issue 32, "no run left at the trivial answer").

For each seed: ``idl-train`` as bench/real_data.py runs it (InstantDL's examples through their
unchanged config files) with ``--seed S`` and any extra options, then the test score, the steps
trained (with the budget's extensions and restarts from plan.json) and the wall time of the whole
command. Prints one Markdown row per seed and a summary (mean, lowest, how many reach ``--target``).

    python bench/seeds.py DATA_DIR --project "InstantDL semantic" [--seeds 42,1,2,3,4,5]
        [--target 0.85] [--out DIR] [-- EXTRA idl-train OPTIONS]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_data  # noqa: E402


def run_seed(project: real_data.Project, data: Path, root: Path, seed: int, extra: list[str]) -> dict:
    folder = real_data.prepare(project, data, root)
    wall = real_data.train(project, folder, root, ["--seed", str(seed), *extra])
    plan = json.loads((folder / "model" / "plan.json").read_text())
    result = {
        "seed": seed,
        "score": real_data.test_score(project, folder),
        "steps": real_data.steps_trained(folder),
        "planned_steps": plan["epochs"] * plan["steps_per_epoch"],
        "extensions": plan.get("extensions", []),
        "restarts": plan.get("restarts", []),
        "wall_seconds": wall,
        "train_seconds": real_data.training_seconds(folder),
    }
    shutil.rmtree(root)  # models and results: up to 100 MB a run
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path)
    parser.add_argument(
        "--project",
        required=True,
        help="a project name of bench/real_data.py (the whole name, or a part that names one)",
    )
    parser.add_argument("--seeds", default="42,1,2,3,4,5")
    parser.add_argument("--target", type=float, default=None, help="count the seeds reaching this score")
    parser.add_argument("--out", type=Path, default=Path("bench_seeds"))
    parser.add_argument("extra", nargs="*", help="more idl-train options (after --)")
    args = parser.parse_args()
    wanted = args.project.lower()
    chosen = [p for p in real_data.PROJECTS if p.name.lower() == wanted] or [
        p for p in real_data.PROJECTS if wanted in p.name.lower()
    ]
    if len(chosen) != 1:
        raise SystemExit(f"--project '{args.project}' names {len(chosen)} projects; be more precise")
    project = chosen[0]
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "results.json"
    results = []
    print(f"{project.name}, idl-train {' '.join(args.extra) or '(default)'}")
    print("| seed | test score | steps (planned) | train | idl-train | extensions, restarts |")
    print("|---:|---:|---:|---:|---:|---|")
    for seed in [int(s) for s in args.seeds.split(",")]:
        r = run_seed(project, args.data, args.out / f"seed{seed}", seed, args.extra)
        results.append(r)
        store.write_text(json.dumps(results, indent=2))
        notes = "; ".join([*r["restarts"], *r["extensions"]]) or "-"
        print(
            f"| {seed} | {r['score']:.3f} | {r['steps']} ({r['planned_steps']}) | "
            f"{r['train_seconds'] / 60:.1f} min | {r['wall_seconds'] / 60:.1f} min | {notes} |",
            flush=True,
        )
    scores = [r["score"] for r in results]
    line = f"mean {sum(scores) / len(scores):.3f}, lowest {min(scores):.3f}"
    if args.target is not None:
        line += f", {sum(s >= args.target for s in scores)} of {len(scores)} at least {args.target}"
    print(line)


if __name__ == "__main__":
    main()
