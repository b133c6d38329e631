"""bioimage.io pre- and post-processing in numpy, for tiled prediction.

Every operation works on an array together with a string naming its axes, one letter per axis
(``b`` batch, ``c`` channel, ``z``, ``y``, ``x`` space), e.g. ``"yxc"`` for an image crop or ``"bcyx"``
for a batch of network outputs. Operations are either pointwise (sigmoid, clip, ...) or need statistics
of the whole sample (``zero_mean_unit_variance``, ``scale_range``). The latter are *fitted* once on the
whole image, which turns them into a pointwise :class:`Standardize`; every tile is then processed with
the statistics of the whole image, exactly as bioimage.io tools process the untiled image.

Formulas follow the bioimage.io model spec 0.5 (and bioimageio.core): ``scale_range`` is
``(x - p_low) / (p_high - p_low + eps)`` with linearly interpolated percentiles, ``zero_mean_unit_variance``
is ``(x - mean) / (std + eps)`` with the population standard deviation. The declared ``eps`` is used;
bioimageio.core 0.11 uses its default 1e-6 whatever a package declares, so results differ from it
only for packages that declare another ``eps``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from idl.infer.core.errors import ModelError
from idl.infer.core.grid import read_window

SPACE = "zyx"


def _along(values: Sequence[float] | float, letter: str | None, axes: str) -> np.ndarray:
    """Parameters (one value, or one per entry of axis ``letter``) shaped to broadcast over ``axes``."""
    array = np.asarray(values, dtype=np.float32)
    if array.size == 1:
        return array.reshape(())
    if letter is None or letter not in axes:
        raise ModelError(f"{array.size} processing parameters need an axis of the tensor '{axes}'")
    shape = [1] * len(axes)
    shape[axes.index(letter)] = -1
    return array.reshape(shape)


def _finite_or_nan(x: np.ndarray) -> np.ndarray:
    """``x`` itself when every value is finite (always for integers); else a copy with NaN in place
    of every non-finite value, for the nan-ignoring statistics (see :mod:`idl.infer.core.nonfinite`)."""
    if x.dtype.kind not in "fc":
        return x
    finite = np.isfinite(x)
    if finite.all():
        return x
    return np.where(finite, x, np.nan)


def _reduce_axes(axes: str, over: str | None) -> tuple[int, ...]:
    """Positions to reduce for statistics ``over`` some axes (``None``: all but batch)."""
    letters = axes.replace("b", "") if over is None else over
    spatial = [a for a in axes if a in SPACE]
    if any(a not in letters for a in spatial):
        raise ModelError(
            f"statistics over axes '{over}' leave a spatial axis unreduced; idl supports statistics over "
            f"all spatial axes (per channel or per image) only."
        )
    return tuple(i for i, a in enumerate(axes) if a in letters and a != "b")


@dataclass(frozen=True)
class Op:
    """Base class: a pointwise operation (``needs_fit`` False) or one that needs sample statistics."""

    needs_fit = False

    def fit(self, x: np.ndarray, axes: str) -> Op:
        """The pointwise operation equivalent to ``self`` on the whole sample ``x``."""
        return self

    def __call__(self, x: np.ndarray, axes: str) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class EnsureDtype(Op):
    dtype: str = "float32"

    def __call__(self, x: np.ndarray, axes: str) -> np.ndarray:
        return x.astype(self.dtype, copy=False)


@dataclass(frozen=True)
class Sigmoid(Op):
    def __call__(self, x: np.ndarray, axes: str) -> np.ndarray:
        """1 / (1 + exp(-x)) in float32, stable for logits of any size (exp of -|x| only), as SciPy's
        ``expit`` within a few units in the last place; numpy alone, because importing
        ``scipy.special`` took 0.2 s of idl-predict's start."""
        x = x.astype(np.float32, copy=False)
        small = np.abs(x)
        np.negative(small, out=small)
        np.exp(small, out=small)  # exp(-|x|), in (0, 1]
        out = small + np.float32(1.0)
        np.reciprocal(out, out=out)  # sigmoid(|x|)
        small *= out  # sigmoid(-|x|)
        np.copyto(out, small, where=x < 0)
        return out


@dataclass(frozen=True)
class Softmax(Op):
    axis: str = "c"

    def __call__(self, x: np.ndarray, axes: str) -> np.ndarray:
        i = axes.index(self.axis)
        shifted = x.astype(np.float32) - x.max(axis=i, keepdims=True)
        e = np.exp(shifted)
        return (e / e.sum(axis=i, keepdims=True)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Binarize(Op):
    threshold: float | tuple[float, ...] = 0.5
    axis: str | None = None

    def __call__(self, x: np.ndarray, axes: str) -> np.ndarray:
        return x > _along(self.threshold, self.axis, axes)


@dataclass(frozen=True)
class Clip(Op):
    min: float | None = None
    max: float | None = None

    def __call__(self, x: np.ndarray, axes: str) -> np.ndarray:
        return np.clip(x, self.min, self.max)


@dataclass(frozen=True)
class ScaleLinear(Op):
    gain: float | tuple[float, ...] = 1.0
    offset: float | tuple[float, ...] = 0.0
    axis: str | None = None

    def __call__(self, x: np.ndarray, axes: str) -> np.ndarray:
        return x * _along(self.gain, self.axis, axes) + _along(self.offset, self.axis, axes)


@dataclass(frozen=True)
class Standardize(Op):
    """``(x - center) / scale`` with fitted statistics, kept with the axes they were computed for."""

    center: np.ndarray = field(default_factory=lambda: np.zeros(1, np.float32))
    scale: np.ndarray = field(default_factory=lambda: np.ones(1, np.float32))
    axes: str = ""

    def __call__(self, x: np.ndarray, axes: str) -> np.ndarray:
        if axes != self.axes:
            raise ValueError(f"statistics were fitted on axes '{self.axes}', applied to '{axes}'")
        return (x.astype(np.float32, copy=False) - self.center) / self.scale


@dataclass(frozen=True)
class FixedZeroMeanUnitVariance(Op):
    mean: float | tuple[float, ...] = 0.0
    std: float | tuple[float, ...] = 1.0
    axis: str | None = None
    eps: float = 1e-6

    def __call__(self, x: np.ndarray, axes: str) -> np.ndarray:
        mean = _along(self.mean, self.axis, axes)
        std = _along(self.std, self.axis, axes)
        return ((x - mean) / (std + self.eps)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class ZeroMeanUnitVariance(Op):
    over: str | None = None  # axis letters to reduce; None: the whole sample
    eps: float = 1e-6
    needs_fit = True

    def fit(self, x: np.ndarray, axes: str) -> Op:
        reduce = _reduce_axes(axes, self.over)
        cast = x.astype(np.float64, copy=False)
        data = _finite_or_nan(cast)
        mean_of, std_of = (np.mean, np.std) if data is cast else (np.nanmean, np.nanstd)  # ignore non-finite
        mean = mean_of(data, axis=reduce, keepdims=True)
        std = std_of(data, axis=reduce, keepdims=True)
        return Standardize(mean.astype(np.float32), (std + self.eps).astype(np.float32), axes)


@dataclass(frozen=True)
class ScaleRange(Op):
    over: str | None = None
    min_percentile: float = 0.0
    max_percentile: float = 100.0
    eps: float = 1e-6
    needs_fit = True

    def fit(self, x: np.ndarray, axes: str) -> Op:
        reduce = _reduce_axes(axes, self.over)
        qs = [self.min_percentile, self.max_percentile]
        data = _finite_or_nan(x)
        percentile = np.percentile if data is x else np.nanpercentile  # non-finite pixels ignored
        lo, hi = percentile(data, qs, axis=reduce, keepdims=True)
        return Standardize(lo.astype(np.float32), (hi - lo + np.float32(self.eps)).astype(np.float32), axes)


STREAM_VALUES = 1 << 22  # values per block when statistics stream over a lazily read image
SAMPLE_VALUES = 1 << 24  # floating-point percentiles of lazy images come from this many values


def _is_lazy(x: Any) -> bool:
    return not isinstance(x, np.ndarray) or isinstance(x, np.memmap)


def _blocks(x: Any, pending: Sequence[Op], axes: str) -> Iterator[np.ndarray]:
    """Consecutive blocks along the first axis of a (lazy) array, with ``pending`` ops applied."""
    per = int(np.prod(x.shape[1:]))
    step = max(1, STREAM_VALUES // max(per, 1))
    for start in range(0, x.shape[0], step):
        yield apply_ops(pending, np.asarray(x[(slice(start, min(x.shape[0], start + step)),)]), axes)


def _streamed_moments(blocks: Iterator[np.ndarray], reduce: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation over ``reduce`` (keepdims), block by block."""
    total = total_sq = count = None
    for block in blocks:
        data = block.astype(np.float64)
        finite = np.isfinite(data)  # non-finite pixels are ignored
        data = np.where(finite, data, 0.0)
        s, sq = data.sum(axis=reduce, keepdims=True), (data * data).sum(axis=reduce, keepdims=True)
        n = finite.sum(axis=reduce, keepdims=True)
        total, total_sq = (s, sq) if total is None else (total + s, total_sq + sq)
        count = n if count is None else count + n
    count = np.maximum(count, 1)
    mean = total / count
    return mean, np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))


def _streamed_percentiles(
    blocks: Iterator[np.ndarray], reduce: tuple[int, ...], axes: str, qs: tuple[float, float], stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Percentiles over ``reduce`` (keepdims; per channel when the channel axis is kept).

    8- and 16-bit images are counted exactly in histograms (numpy's linear interpolation between
    order statistics, so results equal ``np.percentile``); other types use an evenly strided sample
    sample (every ``stride``-th value).
    """
    per_channel = "c" in axes and axes.index("c") not in reduce
    histograms: list[np.ndarray] = []
    samples: list[list[np.ndarray]] = []
    exact = True
    for block in blocks:
        planes = np.moveaxis(block, axes.index("c"), -1) if per_channel else block[..., np.newaxis]
        planes = planes.reshape(-1, planes.shape[-1])
        if not samples:
            exact = planes.dtype.kind == "u" and planes.dtype.itemsize <= 2  # any byte order
            histograms = [np.zeros(1 << 16, np.int64) for _ in range(planes.shape[1])]
            samples = [[] for _ in range(planes.shape[1])]
        for c in range(planes.shape[1]):
            if exact:
                histograms[c] += np.bincount(planes[:, c], minlength=1 << 16)
            else:
                values = planes[::stride, c].astype(np.float64)
                samples[c].append(values[np.isfinite(values)])  # non-finite pixels are ignored
    lows, highs = [], []
    for c in range(len(samples)):
        if exact:
            cumulative = np.cumsum(histograms[c])
            n = int(cumulative[-1])
            values = []
            for q in qs:
                position = q / 100 * (n - 1)
                k = int(np.floor(position))
                lo = np.searchsorted(cumulative, k, side="right")
                hi = np.searchsorted(cumulative, min(k + 1, n - 1), side="right")
                values.append(lo + (position - k) * (hi - lo))
        else:
            finite = np.concatenate(samples[c])
            values = list(np.percentile(finite, qs)) if finite.size else [0.0, 0.0]  # all non-finite
        lows.append(values[0])
        highs.append(values[1])
    shape = [1] * len(axes)
    if per_channel:
        shape[axes.index("c")] = -1
    return np.asarray(lows).reshape(shape), np.asarray(highs).reshape(shape)


def fit_ops(ops: Sequence[Op], whole: np.ndarray, axes: str) -> tuple[Op, ...]:
    """Turn a chain of operations into pointwise ones using statistics of ``whole`` (the sample).

    A statistics operation sees the sample as transformed by the operations before it, as in
    bioimage.io tools; the transformed sample is only materialized when such an operation follows
    others.
    """
    if _is_lazy(whole):
        return _fit_streaming(ops, whole, axes)
    fitted: list[Op] = []
    current, pending = whole, []
    for op in ops:
        if op.needs_fit:
            current, pending = apply_ops(pending, current, axes), []
            op = op.fit(current, axes)
        fitted.append(op)
        pending.append(op)
    return tuple(fitted)


def _fit_streaming(ops: Sequence[Op], whole: Any, axes: str) -> tuple[Op, ...]:
    """:func:`fit_ops` for images read lazily: statistics accumulate block by block, so memory
    follows the block, not the image."""
    fitted: list[Op] = []
    for op in ops:
        if isinstance(op, ZeroMeanUnitVariance):
            reduce = _reduce_axes(axes, op.over)
            mean, std = _streamed_moments(_blocks(whole, fitted, axes), reduce)
            op = Standardize(mean.astype(np.float32), (std + op.eps).astype(np.float32), axes)
        elif isinstance(op, ScaleRange):
            reduce = _reduce_axes(axes, op.over)
            qs = (op.min_percentile, op.max_percentile)
            stride = max(1, int(np.prod(whole.shape)) // SAMPLE_VALUES)
            lo, hi = _streamed_percentiles(_blocks(whole, fitted, axes), reduce, axes, qs, stride)
            op = Standardize(lo.astype(np.float32), (hi - lo + np.float32(op.eps)).astype(np.float32), axes)
        elif op.needs_fit:
            raise ModelError(f"{type(op).__name__} cannot be computed on an image read lazily")
        fitted.append(op)
    return tuple(fitted)


def apply_ops(ops: Sequence[Op], x: np.ndarray, axes: str) -> np.ndarray:
    """Apply pointwise operations in order."""
    for op in ops:
        x = op(x, axes)
    return x


def split_pointwise(ops: Sequence[Op]) -> tuple[tuple[Op, ...], tuple[Op, ...]]:
    """Split post-processing into the pointwise head (applied per tile and per Monte Carlo sample)
    and the rest, which starts with an operation that needs statistics of the whole output."""
    for i, op in enumerate(ops):
        if op.needs_fit:
            return tuple(ops[:i]), tuple(ops[i:])
    return tuple(ops), ()


def network_tile(image: Any, window: tuple[slice, ...], pre: Sequence[Op], image_axes: str) -> np.ndarray:
    """One tile of a raw channels-last image, pre-processed with ops fitted to the whole image, as the
    network's channels-first ``(C, *spatial)`` input."""
    crop = apply_ops(pre, read_window(image, window), image_axes)
    if crop.dtype.kind == "f" and not np.isfinite(crop).all():  # 0 for the network (core.nonfinite)
        crop = np.nan_to_num(crop, nan=0.0, posinf=0.0, neginf=0.0)  # a copy: never the caller's image
    return np.ascontiguousarray(np.moveaxis(crop, -1, 0))
