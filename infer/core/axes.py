"""Axis order of images: explicit (``--axes``) or guessed from the shape, never silently.

idl works internally with channels-last arrays: ``YXC`` for 2D, ``ZYXC`` for 3D. Any order of the
spatial letters plus an optional ``c`` can be given explicitly (``yx``, ``cyx``, ``zyx``, ``czyx``,
``xyc``, ...); guesses cover the common layouts (``yx``, ``yxc``, ``cyx``; ``zyx``, ``zyxc``, ``czyx``
and ImageJ's ``zcyx``) and are logged by the callers.
"""

from __future__ import annotations

import numpy as np

from idl.infer.core.errors import DataError

DIMS = (2, 3)  # spatial dimensions: 2D images (yx) and 3D volumes (zyx)
SUPPORTED_2D = ("yx", "yxc", "cyx")
SUPPORTED_3D = ("zyx", "zyxc", "czyx", "zcyx")
MAX_GUESSED_CHANNELS = 4


def reorder(array: np.ndarray, source: str, target: str) -> np.ndarray:
    """Transpose ``array`` from axes ``source`` to ``target``; size-1 axes may be dropped or added."""
    for letter in source:
        if letter not in target:
            size = array.shape[source.index(letter)]
            if size != 1:
                raise DataError(f"cannot drop axis '{letter}' of size {size} (axes '{source}' -> '{target}')")
            array = np.squeeze(array, axis=source.index(letter))
            source = source.replace(letter, "")
    for letter in target:
        if letter not in source:
            array = array[..., np.newaxis]
            source += letter
    return np.transpose(array, [source.index(a) for a in target])


def guess_axes(shape: tuple[int, ...], spatial: str = "yx") -> str | None:
    """Guess the axis order of an image with ``spatial`` axes, or ``None`` when ambiguous.

    Without a channel axis the spatial order is assumed. With one extra axis, it is the channel
    axis when it is the only small one (<= 4, e.g. RGB) among the candidate positions.
    """
    if len(shape) == len(spatial):
        return spatial
    if len(shape) != len(spatial) + 1:
        return None
    candidates = SUPPORTED_2D[1:] if spatial == "yx" else SUPPORTED_3D[1:]
    small = [a for a in candidates if shape[a.index("c")] <= MAX_GUESSED_CHANNELS]
    return small[0] if len(small) == 1 else None


def _check_explicit(axes: str, spatial: str, shape: tuple[int, ...], source: str) -> str:
    axes = axes.lower()
    letters = sorted(axes.replace("c", ""))
    if sorted(spatial) != letters or len(set(axes)) != len(axes) or set(axes) - set(spatial + "c"):
        examples = SUPPORTED_2D if spatial == "yx" else SUPPORTED_3D
        raise DataError(
            f"--axes '{axes}' is not a {len(spatial)}D axis order: use the letters {spatial} once each, "
            f"plus c for channels, e.g. {', '.join(examples)}."
        )
    if len(axes) != len(shape):
        raise DataError(
            f"{source}: has shape {shape} ({len(shape)} axes) but --axes is '{axes}' ({len(axes)} axes)."
        )
    return axes


def resolve_axes(
    shape: tuple[int, ...], axes: str | None, source: str, spatial: str = "yx"
) -> tuple[str, bool]:
    """Return ``(axes, guessed)`` for an array of ``shape`` read from ``source``.

    Raises :class:`DataError` when explicit axes do not fit the shape or the shape cannot be guessed.
    """
    if axes is not None:
        return _check_explicit(axes, spatial, shape, source), False
    guess = guess_axes(shape, spatial)
    if guess is None:
        raise DataError(f"{source}: {_unguessable(shape, spatial)}")
    return guess, True


def _unguessable(shape: tuple[int, ...], spatial: str) -> str:
    """Why ``shape`` cannot be read as a ``spatial`` image, and advice that can work."""
    n = len(spatial)
    model = f"the model is {n}D ({spatial}) and takes {spatial} plus at most one channel axis"
    if len(shape) > n + 1:
        hint = (
            "; this looks like a volume or a time series: use a 3D model, or save each plane as an image"
            if n == 2
            else "; save each time point or position as its own volume"
        )
        return f"has {len(shape)} axes (shape {shape}), but {model}{hint}."
    if len(shape) < n:
        return f"has {len(shape)} axes (shape {shape}), but {model}."
    examples = SUPPORTED_2D if spatial == "yx" else SUPPORTED_3D
    extra = min(range(len(shape)), key=lambda i: shape[i])
    if shape[extra] > MAX_GUESSED_CHANNELS:
        planes = "a volume or a stack" if n == 2 else "a stack of volumes"
        return (
            f"shape {shape} has no axis small enough to be channels (at most {MAX_GUESSED_CHANNELS}), so it "
            f"looks like {planes} of {shape[extra]} planes; {model}. Use a {n + 1}D model if there is one, "
            f"or if the axis really holds channels, pass it, e.g. --axes {examples[2]}."
        )
    return (
        f"cannot tell the axis order of a {n}D image with shape {shape}. Pass it explicitly, e.g. "
        f"--axes {examples[1]} or --axes {examples[2]} (common orders: {', '.join(examples)})."
    )


def to_channels_last(image: np.ndarray, axes: str, spatial: str = "yx") -> np.ndarray:
    """A channels-last view (``spatial + "c"``) of ``image`` whose axis order is ``axes``."""
    return reorder(image, axes, spatial + "c")


def match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """A channels-last image with ``channels`` channels where that loses nothing: a grey image repeated
    into the three channels of a colour model, or a colour image whose channels are all equal (grey
    saved as RGB) reduced to one. Otherwise ``image`` unchanged (callers report the mismatch)."""
    have = image.shape[-1]
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=-1)
    grey = have == 3 and all(np.array_equal(image[..., 0], image[..., i]) for i in (1, 2))
    if channels == 1 and grey:
        return image[..., :1]
    return image
