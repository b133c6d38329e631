"""Where a Monte Carlo prediction's answer should come from: the deterministic pass or the samples'
mean (``idl-predict --mc-answer``), measured on trained real projects.

For every PROJECT (a project folder trained by ``idl-train``, e.g. the ones ``bench/real_data.py``
leaves in its ``--out`` folder, with ``test/image`` and ``test/groundtruth``) this predicts the test
images with the exported model three times, as ``idl-predict`` does, and evaluates them: without
sampling, with ``--mc-samples N`` (the default answer: the deterministic pass, the samples giving the
uncertainty), with ``--mc-samples N --mc-answer mean``, with test-time augmentation (``--tta d4``) and
with both. Printed: the headline score of each, how well its uncertainty flags wrong pixels or
images (AUROC, the share of errors among the 10 % most uncertain) and the time of each command, so
the default can be checked to never score below the deterministic prediction, and the mean's and
TTA's gain or loss is seen per task.

    python bench/mc_answer.py PROJECT [PROJECT ...] [--samples 20] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

HEADLINE = ("ap50_95", "jaccard", "pearson_median", "accuracy")
SETTINGS = {
    "deterministic": [],
    "--mc-samples N (default answer)": ["--mc-samples", "{n}"],
    "--mc-samples N --mc-answer mean": ["--mc-samples", "{n}", "--mc-answer", "mean"],
    "--tta d4": ["--tta", "d4"],
    "--tta d4 --mc-samples N": ["--tta", "d4", "--mc-samples", "{n}"],
}
UNCERTAINTY = ("uncertainty_auroc", "errors_caught_10")


def headline(summary: dict) -> tuple[str, float]:
    for key in HEADLINE:
        if key in summary:
            return key, float(summary[key])
    raise KeyError(f"no headline score in {sorted(summary)}")


def task_of(project: Path) -> str:
    return json.loads((project / "model" / "config.json").read_text())["task"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("projects", type=Path, nargs="+")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench_mc_answer"))
    args = parser.parse_args()
    rows = []
    for project in args.projects:
        task = task_of(project)
        scores = {}
        for label, extra in SETTINGS.items():
            out = args.out / project.name / f"setting{list(SETTINGS).index(label)}"
            shutil.rmtree(out, ignore_errors=True)
            command = [
                "idl-predict",
                str(project / "model"),
                str(project / "test" / "image"),
                "--out",
                str(out),
                "--gt",
                str(project / "test" / "groundtruth"),
                "--quiet",
                *[a.format(n=args.samples) for a in extra],
            ]
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            seconds = time.perf_counter() - start
            summary = json.loads((out / "evaluation" / "summary.json").read_text())
            metric, value = headline(summary)
            flags = tuple(summary.get(k, float("nan")) for k in UNCERTAINTY)
            scores[label] = (value, seconds, flags)
            print(
                f"{project.name} ({task}) {label}: {metric} {value:.4f}, {flags} ({seconds:.0f} s)",
                flush=True,
            )
        rows.append((project.name, task, metric, scores))
    print(
        f"\n| project | task | score | deterministic | {args.samples} samples, default answer | their mean |"
    )
    print("|---|---|---|---:|---:|---:|")
    for name, task, metric, scores in rows:
        cells = " | ".join(f"{v:.4f} ({s:.0f} s)" for v, s in scores.values())
        print(f"| {name} | {task} | {metric} | {cells} |")


if __name__ == "__main__":
    main()
