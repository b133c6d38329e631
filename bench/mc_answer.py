"""Where a Monte Carlo prediction's answer should come from: the deterministic pass or the samples'
mean (``idl-predict --mc-answer``), measured on trained real projects.

For every PROJECT (a project folder trained by ``idl-train``, e.g. the ones ``bench/real_data.py``
leaves in its ``--out`` folder, with ``test/image`` and ``test/groundtruth``) this predicts the test
images with the exported model five times, as ``idl-predict`` does, and evaluates them: without
sampling, with ``--mc-samples N`` (the task's default answer: the samples' mean for semantic masks,
else the deterministic pass, the samples giving the uncertainty), with ``--mc-samples N --mc-answer
mean``, with test-time augmentation (``--tta d4``) and with both. Printed: the headline score of each,
how well its uncertainty flags wrong pixels or images (objects for instance segmentation: AUROC, the
share of errors among the 10 % most uncertain) and the time of each command, so the default can be
checked to never score below the deterministic prediction, and the mean's and TTA's gain or loss is
seen per task.

    python bench/mc_answer.py PROJECT [PROJECT ...] [--samples 20] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

HEADLINE = {
    "semantic": "jaccard",
    "instance": "ap50_95",
    "regression": "pearson_median",
    "classification": "accuracy",
}
SETTINGS = {
    "deterministic": [],
    "--mc-samples N (default answer)": ["--mc-samples", "{n}"],
    "--mc-samples N --mc-answer mean": ["--mc-samples", "{n}", "--mc-answer", "mean"],
    "--tta d4": ["--tta", "d4"],
    "--tta d4 --mc-samples N": ["--tta", "d4", "--mc-samples", "{n}"],
}
UNCERTAINTY = ("uncertainty_auroc", "errors_caught_10")  # pixels or images
OBJECT_UNCERTAINTY = ("object_uncertainty_auroc", "object_errors_caught_10")  # instance: objects


def headline(summary: dict, task: str) -> tuple[str, float]:
    return HEADLINE[task], float(summary[HEADLINE[task]])


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
        name = project.name if project.name != "default" else project.parent.name
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
            done = subprocess.run(command, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode:  # a setting the task refuses (e.g. TTA of a classifier)
                print(f"{name} ({task}) {label}: refused: {done.stderr.strip().splitlines()[-1]}", flush=True)
                scores[label] = (float("nan"), seconds, (float("nan"), float("nan")))
                continue
            summary = json.loads((out / "evaluation" / "summary.json").read_text())
            metric, value = headline(summary, task)
            keys = OBJECT_UNCERTAINTY if task == "instance" else UNCERTAINTY
            flags = tuple(summary.get(k, float("nan")) for k in keys)
            scores[label] = (value, seconds, flags)
            print(
                f"{name} ({task}) {label}: {metric} {value:.4f}, {flags} ({seconds:.0f} s)",
                flush=True,
            )
        rows.append((name, task, HEADLINE[task], scores))
    print("\nscore (uncertainty AUROC, errors among the 10 % most uncertain; time of the command)")
    print("(pixels for semantic segmentation, objects for instance, images for classification)")
    print(
        "| project | task | score | " + " | ".join(x.replace("N", str(args.samples)) for x in SETTINGS) + " |"
    )
    print("|---|---|---|" + "---:|" * len(SETTINGS))
    for name, task, metric, scores in rows:
        cells = " | ".join(f"{v:.4f} ({f[0]:.3f}, {f[1]:.2f}; {s:.0f} s)" for v, s, f in scores.values())
        print(f"| {name} | {task} | {metric} | {cells} |")


if __name__ == "__main__":
    main()
