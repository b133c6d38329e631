"""Flow fields (cellpose, Stringer et al. 2021): objects from a foreground probability and, for every
pixel, the direction towards its object's centre, in numpy and scipy (no torch).

An object is described by the heat that spreads from its centre inside it: every pixel's flow is the
unit vector up that heat's gradient, so flows point along the object, around its bends, to the one
centre. The network predicts the foreground probability and the two flow components; labels follow
the flows from every foreground pixel for a fixed number of steps, and the pixels whose paths end at
the same sink form one object. Touching objects stay apart because their flows point to different
sinks, and a bent or non-convex cell is one object because the heat follows its shape (where a
polygon from the centre or a watershed of distances would cut it).

- :func:`flow_field`: the training target (and the check of predicted objects) from a label image;
- :func:`follow_flows` and :func:`labels_from_flows`: label images from the network's outputs.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential

PROB_THRESHOLD = 0.5  # a pixel is followed from this foreground probability on
STEPS = 200  # Euler steps of unit length at most along the flows (cellpose's niter)
SEED_COUNT = 10  # paths ending in one 5 x 5 neighbourhood for a sink (cellpose's)
GROW = 5  # px a sink's area grows over bins where more than 2 paths end (cellpose's)
FLOW_ERROR = 0.4  # an object whose predicted flows differ from its own by more (mean squared) is dropped
MIN_SIZE = 15  # px: a smaller object is dropped (cellpose's min_size)


def _neighbours(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The object pixels' coordinates ``(P, 2)``, and ``(P, 9)`` indices of each one's 3 x 3
    neighbourhood among them (itself included), ``P`` where the neighbour lies in another object, the
    background or outside the image."""
    ys, xs = np.nonzero(labels)
    index = np.full((labels.shape[0] + 2, labels.shape[1] + 2), ys.size, np.int64)
    index[ys + 1, xs + 1] = np.arange(ys.size)
    padded = np.pad(labels, 1)
    own = labels[ys, xs]
    columns = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            same = padded[ys + 1 + dy, xs + 1 + dx] == own
            columns.append(np.where(same, index[ys + 1 + dy, xs + 1 + dx], ys.size))
    return np.stack([ys, xs], axis=1), np.stack(columns, axis=1), own


def _centres(coords: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Per object (in order of ``own``'s values), the index of its pixel nearest the median of its
    coordinates: a point inside the object even where it bends (its mean can lie outside)."""
    order = np.argsort(own, kind="stable")
    ids, starts = np.unique(own[order], return_index=True)
    centres = np.empty(ids.size, np.int64)
    for k, (start, stop) in enumerate(zip(starts, [*starts[1:], own.size], strict=True)):
        members = order[start:stop]
        median = np.median(coords[members], axis=0)
        centres[k] = members[np.argmin(((coords[members] - median) ** 2).sum(axis=1))]
    return centres


def diffused_heat(labels: np.ndarray, iterations: int | None = None) -> np.ndarray:
    """``(Y, X)`` float64: in each object, the logarithm of the heat diffused from its centre, scaled
    to 0 (its coldest pixel) .. 1 (its centre); 0 in the background.

    The heat is cellpose's: at each of ``iterations`` steps (default: twice the largest object's
    height plus width, enough to reach every pixel of every object) one unit is added at each centre
    and every pixel takes the mean of its 3 x 3 neighbourhood, counting pixels of other objects and
    of the background as 0. All objects diffuse at once, each only over its own pixels. The
    logarithm and the scale leave the direction of its gradient (the flow) as it is, and make the
    heat a value that 16 bits hold without losing the gradient at an object's edge, where the heat
    itself is many orders of magnitude below the centre's."""
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, np.float64)
    if not labels.any():
        return out
    coords, neighbours, own = _neighbours(labels)
    centres = _centres(coords, own)
    if iterations is None:
        boxes = [b for b in ndimage.find_objects(labels) if b is not None]
        iterations = 2 * max(b[0].stop - b[0].start + b[1].stop - b[1].start for b in boxes)
    heat = np.zeros(coords.shape[0] + 1)  # the last entry stays 0: the neighbours outside the object
    for _ in range(iterations):
        heat[centres] += 1.0
        heat[:-1] = heat[neighbours].mean(axis=1)
    logs = np.log(np.maximum(heat[:-1], np.finfo(np.float64).tiny))
    low = ndimage.minimum(logs, own, np.unique(own))
    high = ndimage.maximum(logs, own, np.unique(own))
    rank = np.searchsorted(np.unique(own), own)
    span = np.maximum(high - low, 1e-12)[rank]
    out[coords[:, 0], coords[:, 1]] = np.where(span > 1e-12, (logs - low[rank]) / span, 1.0)
    return out


def heat_flows(labels: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """``(..., 2, Y, X)`` float32 unit vectors ``(dy, dx)`` up the gradient of ``heat`` (central
    differences over the last two axes, a neighbour in another object or the background counting as
    0), 0 in the background and where the heat is flat. ``labels`` and ``heat`` are ``(..., Y, X)``:
    one image, or a batch of patches."""
    pad = [(0, 0)] * (labels.ndim - 2) + [(1, 1), (1, 1)]
    padded_labels, padded_heat = np.pad(labels, pad), np.pad(heat, pad)
    height, width = labels.shape[-2:]

    def neighbour(dy: int, dx: int) -> np.ndarray:
        window = (..., slice(1 + dy, 1 + dy + height), slice(1 + dx, 1 + dx + width))
        return np.where(padded_labels[window] == labels, padded_heat[window], 0.0)

    dy = neighbour(1, 0) - neighbour(-1, 0)
    dx = neighbour(0, 1) - neighbour(0, -1)
    norm = np.sqrt(dy**2 + dx**2)
    moving = (labels > 0) & (norm > 0)
    norm = np.where(moving, norm, 1.0)
    return np.stack([np.where(moving, dy / norm, 0.0), np.where(moving, dx / norm, 0.0)], axis=-3).astype(
        np.float32
    )


def flow_field(labels: np.ndarray) -> np.ndarray:
    """``(2, Y, X)`` float32 unit vectors ``(dy, dx)``: for each object pixel the direction up the
    heat diffused from its object's centre (:func:`diffused_heat`), 0 in the background."""
    return heat_flows(np.asarray(labels), diffused_heat(labels))


def _bilinear(field: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``field`` ``(C, Y, X)`` at ``points`` ``(N, 2)`` inside the image, interpolated linearly:
    ``(N, C)``."""
    height, width = field.shape[1:]
    y0 = np.clip(np.floor(points[:, 0]).astype(np.int64), 0, height - 2 if height > 1 else 0)
    x0 = np.clip(np.floor(points[:, 1]).astype(np.int64), 0, width - 2 if width > 1 else 0)
    y1, x1 = np.minimum(y0 + 1, height - 1), np.minimum(x0 + 1, width - 1)
    fy, fx = points[:, 0] - y0, points[:, 1] - x0
    top = field[:, y0, x0] * (1 - fx) + field[:, y0, x1] * fx
    bottom = field[:, y1, x0] * (1 - fx) + field[:, y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).T


def follow_flows(flows: np.ndarray, mask: np.ndarray, steps: int = STEPS) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of ``mask`` ``(Y, X)`` and where each ends after ``steps`` Euler steps along
    ``flows`` ``(2, Y, X)`` (set to 0 outside the mask, so a path stops at the foreground's edge),
    kept inside the image: ``(N, 2)`` int coordinates and ``(N, 2)`` float end points."""
    field = (flows * mask).astype(np.float32)
    start = np.stack(np.nonzero(mask), axis=1)
    points = start.astype(np.float32)
    upper = np.array(mask.shape, np.float32) - 1
    for _ in range(steps):
        points = np.clip(points + _bilinear(field, points), 0, upper)
    return start, points


def _sinks(ends: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A label image of the sinks: the bins (pixels) where many paths end, each numbered and grown
    over the neighbouring bins where paths also end (cellpose's seeds and their extension)."""
    rounded = np.rint(ends).astype(np.int64)
    counts = np.zeros(shape, np.int64)
    np.add.at(counts, (rounded[:, 0], rounded[:, 1]), 1)
    peaks = (counts == ndimage.maximum_filter(counts, 5)) & (counts > SEED_COUNT)
    sinks = np.zeros(shape, np.int64)
    ys, xs = np.nonzero(peaks)
    order = np.argsort(-counts[ys, xs], kind="stable")
    sinks[ys[order], xs[order]] = np.arange(1, ys.size + 1)
    grows = counts > 2
    for _ in range(GROW):
        grown = ndimage.grey_dilation(sinks, size=(3, 3))
        sinks = np.where((sinks == 0) & grows, grown, sinks)
    return sinks


def _flow_errors(labels: np.ndarray, flows: np.ndarray) -> np.ndarray:
    """Per object ``1..N`` (index 0 unused), the mean over its pixels of the squared difference
    between the predicted flows and the flows of its own shape."""
    own = flow_field(labels)
    error = ((own - flows) ** 2).sum(axis=0)
    count = np.bincount(labels.ravel(), minlength=labels.max() + 1)
    total = np.bincount(labels.ravel(), weights=error.ravel(), minlength=labels.max() + 1)
    return total / np.maximum(count, 1)


def _fill_and_sieve(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Each object with its holes filled, those smaller than ``min_size`` px removed, renumbered
    1..N in the same order."""
    out = np.zeros_like(labels)
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        filled = ndimage.binary_fill_holes(labels[box] == i)
        if np.count_nonzero(filled) >= min_size:
            out[box][filled & (out[box] == 0)] = i
    return relabel_sequential(out)[0].astype(np.int32)


def labels_from_flows(
    prob: np.ndarray,
    flows: np.ndarray,
    prob_threshold: float = PROB_THRESHOLD,
    flow_error: float = FLOW_ERROR,
    min_size: int = MIN_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Label image (int32, objects 1..N, the sink where most paths end first) and each pixel's object score
    (its object's mean foreground probability, 0 in the background) from ``prob`` ``(Y, X)`` and
    ``flows`` ``(2, Y, X)``.

    The foreground's pixels are followed along the flows; the pixels whose paths end in one sink
    form an object. As in cellpose, an object whose predicted flows disagree with the flows of its
    own shape by more than ``flow_error`` (mean squared difference of the unit vectors) is dropped:
    its pixels did not agree on a centre. Holes are filled and objects under ``min_size`` px
    dropped."""
    shape = prob.shape
    mask = prob >= prob_threshold
    labels = np.zeros(shape, np.int32)
    if mask.any():
        start, ends = follow_flows(flows, mask)
        sinks = _sinks(ends, shape)
        rounded = np.rint(ends).astype(np.int64)
        labels[start[:, 0], start[:, 1]] = sinks[rounded[:, 0], rounded[:, 1]]
        if labels.any():
            labels = relabel_sequential(labels)[0]
            errors = _flow_errors(labels, flows)
            labels[errors[labels] > flow_error] = 0
            labels = _fill_and_sieve(labels, min_size)
    count = np.bincount(labels.ravel(), minlength=labels.max() + 1)
    total = np.bincount(labels.ravel(), weights=prob.ravel(), minlength=labels.max() + 1)
    means = (total / np.maximum(count, 1)).astype(np.float32)
    means[0] = 0.0
    return labels, means[labels]


def objects_from_output(out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores (:func:`labels_from_flows`) from a network output ``(3, Y, X)``: the
    foreground probability, then the flows."""
    return labels_from_flows(out[0], out[1:])
