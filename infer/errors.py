"""User-facing errors: each says which file is affected, what is wrong and what to do."""

from __future__ import annotations


class IdlError(Exception):
    """An error caused by the user's input, shown without a traceback by the command-line tools."""


class DataError(IdlError):
    """A data file or folder is missing, unreadable or inconsistent."""


class ModelError(IdlError):
    """A model file is missing, unreadable or lacks what idl needs."""


class ConfigError(IdlError):
    """A configuration key or value is invalid."""
