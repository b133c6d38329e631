"""Test-set calibration before and after the temperature, measured on trained projects.

For every PROJECT (a project folder trained by ``idl-train`` with its calibration on, e.g. the ones
``bench/real_data.py`` leaves in its ``--out`` folder) this predicts the test images with the exported
model as ``idl-predict`` does (``--save-probabilities``; classifiers: ``results.csv``) and evaluates
them with ``idl-evaluate``: the calibrated probabilities' expected calibration error (ECE) of the test
pixels (segmentation) or images (classification). The same predictions with the temperature undone
(``p ** T`` renormalized for softmax classes, the logit times ``T`` for a sigmoid: what the network
gave before calibration) are evaluated by the same command, so the two ECEs differ only by the
temperature. Printed beside them: the temperature and the validation ECE before and after, from the
model description.

    python bench/calibration.py PROJECT [PROJECT ...] [--out DIR] [--predict-args "--mc-samples 10"]

``--predict-args`` are added to the ``idl-predict`` command, e.g. Monte Carlo samples, whose mean is
the answer of a semantic model (drawn under mirrors and turns by default): the probabilities are then
the samples' mean, and "before" undoes the temperature on that mean, which is only approximately what
an uncalibrated network's samples would average to (a mean of softmaxes is not the softmax of a mean).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import tifffile

from idl.infer.post.postprocess import uncalibrated
from idl.infer.service.load import load_model


def undo_temperature(probabilities: np.ndarray, temperature: float, class_axis: int) -> np.ndarray:
    """The probabilities before a calibration by ``temperature``: one sigmoid channel through
    :func:`uncalibrated`, softmax classes as ``softmax(T log p)`` along ``class_axis``."""
    if probabilities.shape[class_axis] == 1:
        return uncalibrated(probabilities, temperature)
    logp = temperature * np.log(np.clip(probabilities.astype(np.float64), 1e-12, 1.0))
    logp -= logp.max(axis=class_axis, keepdims=True)
    p = np.exp(logp)
    return (p / p.sum(axis=class_axis, keepdims=True)).astype(np.float32)


def run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")


def uncalibrated_segmentation(predicted: Path, target: Path, temperature: float) -> None:
    """A copy of ``predicted`` (masks and ``probabilities/``) with the temperature undone."""
    shutil.copytree(predicted, target, ignore=shutil.ignore_patterns("evaluation", "probabilities"))
    (target / "probabilities").mkdir()
    for path in sorted((predicted / "probabilities").iterdir()):
        p = tifffile.imread(path)  # (Y, X) of a sigmoid or (K, Y, X), as idl-predict writes them
        before = undo_temperature(p[None] if p.ndim == 2 else p, temperature, 0)
        tifffile.imwrite(target / "probabilities" / path.name, before[0] if p.ndim == 2 else before)


def uncalibrated_classification(predicted: Path, target: Path, temperature: float) -> None:
    """A copy of ``predicted/results.csv`` with the probability columns' temperature undone."""
    target.mkdir(parents=True)
    with (predicted / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in rows[0] if c.startswith("probability_")]
    p = np.array([[float(r[c]) for c in columns] for r in rows])
    before = undo_temperature(p, temperature, 1)
    for row, values in zip(rows, before, strict=True):
        row.update({c: f"{v:.6g}" for c, v in zip(columns, values, strict=True)})
    with (target / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("projects", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=Path("bench_calibration"))
    parser.add_argument("--predict-args", default="", help="more idl-predict arguments, one string")
    args = parser.parse_args()
    rows = []
    for project in args.projects:
        name = project.name if project.name != "default" else project.parent.name
        config = json.loads((project / "model" / "config.json").read_text())
        task = config["task"]
        info = load_model(project / "model").info
        calibration = info.training.get("calibration") or {}
        temperature = info.temperature
        out = args.out / name
        shutil.rmtree(out, ignore_errors=True)
        predicted, before = out / "calibrated", out / "uncalibrated"
        ground_truth = project / "test" / "groundtruth"  # classification: the folder holding groundtruth.csv
        run(
            [
                "idl-predict",
                str(project / "model"),
                str(project / "test" / "image"),
                "--out",
                str(predicted),
                "--save-probabilities",
                "--quiet",
                *args.predict_args.split(),
            ]
        )
        if task == "classification":
            uncalibrated_classification(predicted, before, temperature)
        else:
            uncalibrated_segmentation(predicted, before, temperature)
        ece = {}
        for label, folder in (("before", before), ("after", predicted)):
            run(
                [
                    "idl-evaluate",
                    str(folder),
                    str(ground_truth),
                    "--task",
                    task,
                    "--quiet",
                    "--out",
                    str(folder / "evaluation"),
                ]
            )
            ece[label] = json.loads((folder / "evaluation" / "summary.json").read_text()).get(
                "ece", float("nan")
            )
        rows.append((name, task, temperature, calibration, ece))
        print(f"{name}: T {temperature:.3f}, test ECE {ece['before']:.4f} -> {ece['after']:.4f}", flush=True)
    print("\n| project | temperature | validation ECE | test ECE |")
    print("|---|---:|---|---|")
    for name, task, temperature, calibration, ece in rows:
        unit = "images" if task == "classification" else "pixels"
        validation = (
            f"{calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f}"
            if "ece_before" in calibration
            else "-"
        )
        print(
            f"| {name} ({unit}) | {temperature:.3f} | {validation} | "
            f"{ece['before']:.4f} -> {ece['after']:.4f} |"
        )


if __name__ == "__main__":
    main()
