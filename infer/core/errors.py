"""User-facing errors: each says which file is affected, what is wrong and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class IdlError(Exception):
    """An error caused by the user's input, shown without a traceback by the command-line tools."""


class DataError(IdlError):
    """A data file or folder is missing, unreadable or inconsistent."""


class ModelError(IdlError):
    """A model file is missing, unreadable or lacks what idl needs."""


class BatchError(DataError):
    """Some inputs of a batch failed; every other one was processed."""

    def __init__(self, failures: list[tuple[Path, str]], total: int) -> None:
        self.failures = failures
        lines = [
            f"  {reason}" if reason.startswith(str(path)) else f"  {path}: {reason}"
            for path, reason in failures
        ]
        super().__init__(
            f"{len(failures)} of {total} input(s) failed; the other {total - len(failures)} were "
            "written:\n" + "\n".join(lines)
        )


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest valid name, or an empty text."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


class ConfigError(IdlError):
    """A configuration key or value is invalid."""


class ExportError(IdlError):
    """An exported model or package does not behave like the network it came from."""


class NothingToShow(ExportError):
    """The model's output on the package's test image is empty (e.g. a detector that finds nothing),
    which bioimage.io refuses as a test output."""
