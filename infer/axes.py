"""Axis order of 2D images: explicit (``--axes``) or guessed from the shape, never silently.

idl works internally with channels-last ``YXC`` arrays. Supported 2D orders: ``yx``, ``yxc``, ``cyx``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from idl.infer.errors import DataError
from idl.infer.io import read_image

SUPPORTED_2D = ("yx", "yxc", "cyx")
MAX_GUESSED_CHANNELS = 4


def guess_axes_2d(shape: tuple[int, ...]) -> str | None:
    """Guess a 2D axis order from a shape, or ``None`` when the shape is ambiguous.

    A 3-axis shape is channels-last when only its last axis is small (<= 4, e.g. RGB or RGBA), and
    channels-first when only its first axis is small.
    """
    if len(shape) == 2:
        return "yx"
    if len(shape) == 3:
        first_small = shape[0] <= MAX_GUESSED_CHANNELS
        last_small = shape[-1] <= MAX_GUESSED_CHANNELS
        if last_small and not first_small:
            return "yxc"
        if first_small and not last_small:
            return "cyx"
    return None


def resolve_axes_2d(shape: tuple[int, ...], axes: str | None, source: str) -> tuple[str, bool]:
    """Return ``(axes, guessed)`` for an array of ``shape`` read from ``source``.

    Raises :class:`DataError` when explicit axes do not fit the shape or the shape cannot be guessed.
    """
    if axes is not None:
        axes = axes.lower()
        if axes not in SUPPORTED_2D:
            raise DataError(f"--axes '{axes}' is not a 2D axis order; use one of {', '.join(SUPPORTED_2D)}.")
        if len(axes) != len(shape):
            raise DataError(
                f"{source}: has shape {shape} ({len(shape)} axes) but --axes is '{axes}' ({len(axes)} axes)."
            )
        return axes, False
    guess = guess_axes_2d(shape)
    if guess is None:
        raise DataError(
            f"{source}: cannot tell the axis order of an image with shape {shape}. "
            f"Pass it explicitly, e.g. --axes yxc or --axes cyx (2D orders: {', '.join(SUPPORTED_2D)})."
        )
    return guess, True


def to_yxc(image: np.ndarray, axes: str) -> np.ndarray:
    """Return a channels-last ``(Y, X, C)`` view of ``image`` whose axis order is ``axes``."""
    if axes == "yx":
        return image[..., np.newaxis]
    if axes == "cyx":
        return np.moveaxis(image, 0, -1)
    return image


def read_yxc(path: Path, axes: str | None) -> tuple[np.ndarray, str, bool]:
    """Read an image as channels-last ``(Y, X, C)``; returns ``(image, axes, guessed)``."""
    raw = read_image(path)
    resolved, guessed = resolve_axes_2d(raw.shape, axes, str(path))
    return to_yxc(raw, resolved), resolved, guessed
