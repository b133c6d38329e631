"""A Ctrl-C that something swallowed still ends a command with exit status 130 (issue 30, item 10):
raised inside a finalizer (where Python prints "Exception ignored in ..." and goes on) it is raised
again from ordinary code; caught by a library, or turned into another error, it still counts."""

from __future__ import annotations

import gc
import signal
import sys
import time

import click
import pytest

from idl.cli.common import Interrupted, interruptible

HOW = "the same command continues."


class _Finalized:
    """Sends SIGINT from its finalizer, which the garbage collector runs."""

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)


def _collect_a_finalizer() -> None:
    cycle = _Finalized()
    cycle.cycle = cycle  # type: ignore[attr-defined]  # only the garbage collector frees it
    del cycle
    gc.collect()


def test_an_interrupt_swallowed_by_a_finalizer_is_raised_again(capsys: pytest.CaptureFixture[str]) -> None:
    steps = []

    @interruptible(HOW)
    def work() -> str:
        _collect_a_finalizer()
        for step in range(200):  # 2 s of work that the interrupt must stop
            steps.append(step)
            time.sleep(0.01)
        return "finished"

    with pytest.raises(Interrupted) as caught:
        work()
    assert caught.value.exit_code == 130 and caught.value.message == f"interrupted. {HOW}"
    # stopped, not run to its end (a count of steps, not a wall time: a loaded machine runs fewer)
    assert len(steps) < 100
    assert "Exception ignored" not in capsys.readouterr().err


def test_an_interrupt_caught_on_its_way_still_ends_with_130() -> None:
    @interruptible(HOW)
    def work() -> str:
        try:
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.01)
        except KeyboardInterrupt:  # a library that catches it and goes on
            pass
        return "finished"

    with pytest.raises(Interrupted) as caught:
        work()
    assert caught.value.exit_code == 130


def test_an_error_caused_by_the_interrupt_is_reported_as_the_interrupt() -> None:
    """Ctrl-C inside MLflow's SQLite session left the store locked: "database is locked" was the
    error shown, exit status 1."""

    @interruptible(HOW)
    def work() -> None:
        try:
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.01)
        except KeyboardInterrupt as exc:
            raise RuntimeError("(sqlite3.OperationalError) database is locked") from exc

    with pytest.raises(Interrupted) as caught:
        work()
    assert caught.value.exit_code == 130 and caught.value.message == f"interrupted. {HOW}"


def test_handlers_are_given_back_and_other_errors_pass() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), sys.unraisablehook

    @interruptible(HOW)
    def work() -> None:
        assert signal.getsignal(signal.SIGINT) is not before[0]
        raise click.UsageError("give a MODEL")

    with pytest.raises(click.UsageError):
        work()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), sys.unraisablehook) == before
