"""Predict and evaluate: the one sequence ``idl-predict`` and ``idl-train`` (on the test images) run."""

from __future__ import annotations

import logging
from pathlib import Path

from idl.infer.evaluate.run_record import RunRecord
from idl.infer.io.places import check_apart, writable_folder
from idl.infer.runtime.model import LoadedModel
from idl.infer.tasks.base import Request, Summary
from idl.infer.tasks.registry import task_for

log = logging.getLogger("idl")


def predict_and_evaluate(request: Request) -> tuple[Path, Summary | None]:
    """Predict ``request.files`` with the model's task, then evaluate them when ground truth is
    given. The output folders are checked and the ground truth is matched to the images before
    anything is predicted, so a wrong folder or a missing file fails in seconds, not after the
    predictions. Returns what the evaluation read (the predictions'
    folder, or classification's ``results.csv``) and the summary (``None`` without evaluation)."""
    task = task_for(request.model)
    gt = request.groundtruth if isinstance(request.groundtruth, Path) else None
    inputs = [*request.files, *(p for paths in (request.named_inputs or {}).values() for p in paths)]
    check_apart(request.out_dir, inputs, gt)  # an input or ground truth is never replaced or re-read
    if gt is not None:
        check_apart(request.evaluation, inputs, gt, "the evaluation folder")
    writable_folder(request.out_dir)  # before any work: a folder we can write into
    if request.groundtruth is not None:
        writable_folder(request.evaluation, "evaluation")
        task.check(request)
    predictions = task.predict(request)
    if request.groundtruth is None:
        return predictions, None
    if not task.evaluates:
        log.warning("this package was not made by idl, so its task is unknown; skipping evaluation")
        return predictions, None
    summary = task.evaluate(request, predictions)
    report_run(request.evaluation, request.model)
    return predictions, summary


def report_run(evaluation: Path, model: LoadedModel) -> bool:
    """Write the evaluation's report again with the training run of ``model`` (its settings, data,
    plan and training curves), when it is a model folder ``idl-train`` wrote and the evaluation wrote
    a report; returns whether it did."""
    # imported here: pandas, which the report needs, is 0.25 s of a start that predicts without --gt
    from idl.infer.evaluate.report import FIGURES_NAME, write_report

    if not isinstance(model.weights, Path) or not (evaluation / FIGURES_NAME).is_file():
        return False
    run = RunRecord.read(model.weights.parent, model.info)
    if run is not None:
        write_report(evaluation, run)
    return run is not None
