"""Shared command-line plumbing: logging and turning user errors into one clear line."""

from __future__ import annotations

import functools
import importlib.util
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import click

from idl.infer.core.errors import IdlError

F = TypeVar("F", bound=Callable[..., Any])


def setup_logging(quiet: bool = False) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
        force=True,
    )


TRAIN_EXTRAS = ("torch", "torchvision", "onnx", "mlflow")


def require_training_extras(command: str) -> None:
    """Stop ``command`` with an install hint when the ``[train]`` extras are missing (the lab-PC
    install, ``pip install idl-toolkit``, has only what idl-predict needs)."""
    missing = [m for m in TRAIN_EXTRAS if importlib.util.find_spec(m) is None]
    if missing:
        raise IdlError(
            f"{command} needs the training extras; not installed: {', '.join(missing)}. Install them with "
            "pip install 'idl-toolkit[train]' (idl-predict, idl-evaluate and idl-labels work without them)."
        )


def user_errors(func: F) -> F:
    """Show :class:`IdlError` (bad input, missing files) as ``error: ...`` and a non-zero exit status."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except IdlError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


class Interrupted(click.ClickException):
    """Ctrl-C or SIGTERM: what was finished is kept, and how to continue."""

    exit_code = 130  # the shell's code for SIGINT


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def interruptible(how_to_continue: str) -> Callable[[F], F]:
    """SIGTERM (a job scheduler's or ``kill``'s) interrupts like Ctrl-C, so the same clean-up runs
    (temporary files deleted, the MLflow run ended); either ends with ``interrupted`` and
    ``how_to_continue`` instead of click's bare "Aborted!", exit status 130."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, _raise_interrupt)
            try:
                return func(*args, **kwargs)
            except KeyboardInterrupt:
                raise Interrupted(f"interrupted. {how_to_continue}") from None

        return wrapper  # type: ignore[return-value]

    return decorate


def parse_task_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Our task name from ours or InstantDL's spelling (``SemanticSegmentation`` -> ``semantic``)."""
    from idl.infer.core.model_info import normalize_task

    if value is None:
        return None
    try:
        return normalize_task(value)
    except ValueError as exc:
        from idl.infer.tasks.registry import task_names

        if value in task_names():  # a task registered beyond the built-in ones
            return value
        raise click.BadParameter(str(exc)) from exc


def parse_threshold_option(ctx: click.Context, param: click.Parameter, value: str) -> str | float:
    from idl.infer.post.postprocess import parse_threshold

    try:
        return parse_threshold(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
