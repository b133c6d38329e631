"""Shared command-line plumbing: logging and turning user errors into one clear line."""

from __future__ import annotations

import _thread
import functools
import importlib.util
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from idl.infer.core.errors import IdlError

F = TypeVar("F", bound=Callable[..., Any])


def _keep_words_whole() -> None:
    """Help texts wrap between words only: click's wrapper (``click._textwrap.TextWrapper``, looked up
    on every wrap) breaks at hyphens by default, which cut option names in two ("--list-" / "cached")."""
    from click import _textwrap

    base = _textwrap.TextWrapper
    if getattr(base, "whole_words", False):
        return

    class WholeWords(base):  # type: ignore[misc, valid-type]
        whole_words = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("break_on_hyphens", False)
            super().__init__(*args, **kwargs)

    _textwrap.TextWrapper = WholeWords


_keep_words_whole()


def digits(values: Sequence[int]) -> tuple[str, ...]:
    """Integer choices as the strings a command line gives (``DIMS`` -> ``("2", "3")``)."""
    return tuple(str(v) for v in values)


class RegisteredChoice(click.Choice):
    """A choice among the values a registry holds when the command runs, not when it was imported: an
    image format registered afterwards (:func:`idl.infer.io.formats.register`) is a choice at once."""

    def __init__(self, values: Callable[[], Sequence[str]]) -> None:
        self._values = values
        super().__init__(())

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        return tuple(self._values())

    @choices.setter
    def choices(self, given: Sequence[str]) -> None:
        """click.Choice stores the values it was given; these are asked for each time instead."""


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


def _disk_full_message(exc: BaseException, how_to_continue: str) -> str | None:
    """The message for an error caused by a full disk, or None for any other error."""
    from idl.infer.io.images import disk_full

    full = disk_full(exc)
    if full is None:
        return None
    return f"{full} Free space {'there' if full.filename else 'on it'}, then: {how_to_continue}"


def user_errors(func: F) -> F:
    """Show :class:`IdlError` (bad input, missing files) and a full disk as ``Error: ...`` with exit
    status 1, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except IdlError as exc:
            raise click.ClickException(str(exc)) from exc
        except click.ClickException:
            raise
        except Exception as exc:
            message = _disk_full_message(exc, "run the same command again.")
            if message is None:
                raise
            raise click.ClickException(message) from exc

    return wrapper  # type: ignore[return-value]


class Interrupted(click.ClickException):
    """Ctrl-C or SIGTERM: what was finished is kept, and how to continue."""

    exit_code = 130  # the shell's code for SIGINT


class _Signals:
    """Ctrl-C and SIGTERM, recorded when they arrive, so that neither is lost.

    A ``KeyboardInterrupt`` raised while Python runs a finalizer or a weak-reference callback (the
    garbage collector runs SQLAlchemy's, left by MLflow's store, at any allocation) cannot propagate:
    Python prints "Exception ignored in ..." and goes on, and a run interrupted at such a moment used
    to finish with exit status 0. Such a swallowed interrupt is raised again a moment later, from
    ordinary code, and a command that received a signal ends with exit status 130 whatever happened
    to the exception."""

    REDELIVER_S = 0.05  # after the finalizer that swallowed the interrupt has returned

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}
        self._unraisable: Callable[[Any], Any] | None = None
        self._again: list[threading.Timer] = []

    def install(self) -> None:
        """Take over SIGINT, SIGTERM and the hook for unraisable exceptions (main thread only)."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._on_signal)
        self._unraisable, sys.unraisablehook = sys.unraisablehook, self._on_unraisable

    def restore(self) -> None:
        """Give back what :meth:`install` took over; an interrupt not yet raised again is dropped (the
        command ends as interrupted in any case)."""
        for timer in self._again:
            timer.cancel()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self._unraisable is not None:
            sys.unraisablehook, self._unraisable = self._unraisable, None

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.received.append(signum)
        raise KeyboardInterrupt

    def _on_unraisable(self, unraisable: Any) -> None:
        if self.received and issubclass(unraisable.exc_type, KeyboardInterrupt):
            # swallowed where it was raised: raise it again once the finalizer has returned
            timer = threading.Timer(self.REDELIVER_S, _thread.interrupt_main)
            self._again.append(timer)
            timer.start()
        elif self._unraisable is not None:
            self._unraisable(unraisable)


def interruptible(how_to_continue: str) -> Callable[[F], F]:
    """SIGTERM (a job scheduler's or ``kill``'s) interrupts like Ctrl-C, so the same clean-up runs
    (temporary files deleted, the MLflow run ended); either ends with ``interrupted`` and
    ``how_to_continue`` instead of click's bare "Aborted!", exit status 130, also when the interrupt
    was swallowed on its way (:class:`_Signals`). A full disk ends with what needs the space, how much,
    and ``how_to_continue``, exit status 1."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            signals = _Signals()
            if threading.current_thread() is threading.main_thread():
                signals.install()
            try:
                result = func(*args, **kwargs)
            except KeyboardInterrupt:
                raise Interrupted(f"interrupted. {how_to_continue}") from None
            except Exception as exc:
                if signals.received:  # an error the interrupt caused, e.g. a store left locked
                    raise Interrupted(f"interrupted. {how_to_continue}") from exc
                if isinstance(exc, (IdlError, click.ClickException)):  # a message of its own
                    raise
                message = _disk_full_message(exc, how_to_continue)
                if message is None:
                    raise
                raise click.ClickException(message) from exc
            finally:
                signals.restore()
            if signals.received:
                raise Interrupted(f"interrupted. {how_to_continue}")
            return result

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


def parse_memory_option(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """``--max-memory``: bytes of a size such as ``1.5G`` or ``800M`` (None: the default)."""
    from idl.infer.tiling.memory import parse_memory

    if value is None:
        return None
    try:
        return parse_memory(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
