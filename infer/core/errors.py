"""User-facing errors: each says which file is affected, what is wrong and what to do."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class IdlError(Exception):
    """An error caused by the user's input, shown without a traceback by the command-line tools."""


class DataError(IdlError):
    """A data file or folder is missing, unreadable or inconsistent."""


class ModelError(IdlError):
    """A model file is missing, unreadable or lacks what idl needs."""


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
