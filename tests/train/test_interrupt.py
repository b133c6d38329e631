"""Ctrl-C at the start of idl-train's evaluation (issue 30, item 10): a SIGINT that arrives while the
garbage collector runs a finalizer (SQLAlchemy's, left by MLflow's store, in the issue) raised its
KeyboardInterrupt inside that finalizer, where Python prints "Exception ignored in ..." and goes on:
the run finished with exit status 0. Now the interrupt is raised again from ordinary code, and a
command that received a signal ends with exit status 130 whatever swallowed it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from idl.infer.datasets.synthetic import NucleiSpec, write_semantic_project
from idl.infer.io.places import LEFTOVER
from idl.train.checkpoint import load_checkpoint

# the moment made exact: the evaluation stage starts with a finalizer run by the garbage
# collector, during which SIGINT arrives (as Ctrl-C does in the terminal: to the process)
DRIVER = """
import gc
import signal
import sys

import idl.train.pipeline as pipeline
from idl.cli.train import main

evaluate = pipeline.evaluate


class Finalized:
    def __del__(self):
        signal.raise_signal(signal.SIGINT)


def evaluate_after_a_finalizer(run, tracker):
    cycle = Finalized()
    cycle.cycle = cycle  # only the garbage collector frees it
    del cycle
    gc.collect()
    print("evaluation starts", file=sys.stderr, flush=True)
    return evaluate(run, tracker)


pipeline.evaluate = evaluate_after_a_finalizer
main()
"""
TINY_RUN = ["--epochs", "1", "--steps-per-epoch", "1", "--depth", "2", "--filters", "4", "--image-size", "48"]
TINY_RUN += ["--batch-size", "4", "--no-uncertainty", "--no-package", "--no-int8", "--quiet"]


@pytest.mark.slow  # a whole idl-train process (about 20 s on 2 busy cores, of which 1 step of training)
def test_ctrl_c_while_a_finalizer_runs_at_the_evaluation_ends_with_130(tmp_path: Path) -> None:
    project = write_semantic_project(tmp_path / "p", n_train=4, n_test=2, seed=3, spec=NucleiSpec(size=64))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    done = subprocess.run(
        [sys.executable, str(driver), str(project), "--task", "semantic", *TINY_RUN],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "evaluation starts" in done.stderr, done.stderr  # the signal came where it was meant to
    assert done.returncode == 130, done.stderr
    assert (
        "Error: interrupted. idl-train PROJECT --resume continues from the last finished epoch "
        "(PROJECT/model/last.pt); before the first epoch ends there is none: run the same command again."
    ) in done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr
    assert "MLflow run" not in done.stdout  # the run did not go on to its end
    assert load_checkpoint(project / "model" / "last.pt")["state"]["epoch"] == 1  # what --resume needs
    assert not [p for p in project.rglob("*") if LEFTOVER.match(p.name)]  # no temporary file left
