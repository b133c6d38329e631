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

import itertools

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential

PROB_THRESHOLD = 0.5  # a pixel is followed from this foreground probability on
STEPS = 200  # Euler steps of unit length at most along the flows (cellpose's niter)
SEED_COUNT = 10  # paths ending in one 5 x 5 (x 5) neighbourhood for a sink (cellpose's)
GROW = 5  # px a sink's area grows over bins where more than 2 paths end (cellpose's)
FLOW_ERROR = 0.4  # an object whose predicted flows differ from its own by more (mean squared) is dropped
MIN_SIZE = 15  # px (voxels): a smaller object is dropped (cellpose's min_size)


def _offsets(dims: int) -> list[tuple[int, ...]]:
    """The 3**dims offsets of a pixel's neighbourhood (itself included), in row-major order."""
    return list(itertools.product((-1, 0, 1), repeat=dims))


def _neighbours(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The object pixels' coordinates ``(P, D)``, their labels ``(P,)`` and ``(P, 3**D)`` indices of
    each one's neighbourhood (:func:`_offsets`) among them, ``P`` where the neighbour lies in another
    object, the background or outside the image."""
    coords = np.stack(np.nonzero(labels), axis=1)
    count = coords.shape[0]
    index = np.full(tuple(n + 2 for n in labels.shape), count, np.int64)
    index[tuple((coords + 1).T)] = np.arange(count)
    padded = np.pad(labels, 1)
    own = labels[tuple(coords.T)]
    columns = []
    for offset in _offsets(labels.ndim):
        at = tuple((coords + 1 + np.array(offset)).T)
        columns.append(np.where(padded[at] == own, index[at], count))
    return coords, np.stack(columns, axis=1), own


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
    """``labels``' shape, float64: in each object, the logarithm of the heat diffused from its
    centre, scaled to 0 (its coldest pixel) .. 1 (its centre); 0 in the background. 2D or 3D.

    The heat is cellpose's: at each of ``iterations`` steps (default: twice the largest object's
    summed extents, enough to reach every pixel of every object) one unit is added at each centre
    and every pixel takes the mean of its 3 x 3 (x 3) neighbourhood, counting pixels of other objects
    and of the background as 0. All objects diffuse at once, each only over its own pixels. The
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
        iterations = 2 * max(sum(s.stop - s.start for s in b) for b in boxes)
    heat = np.zeros(coords.shape[0] + 1)  # the last entry stays 0: the neighbours outside the object
    for _ in range(iterations):
        heat[centres] += 1.0
        heat[:-1] = heat[neighbours].mean(axis=1)
    logs = np.log(np.maximum(heat[:-1], np.finfo(np.float64).tiny))
    ids = np.unique(own)
    low, high = ndimage.minimum(logs, own, ids), ndimage.maximum(logs, own, ids)
    rank = np.searchsorted(ids, own)
    span = (high - low)[rank]
    flat = span <= 1e-12  # a one-pixel object: its centre
    out[tuple(coords.T)] = np.where(flat, 1.0, (logs - low[rank]) / np.where(flat, 1.0, span))
    return out


def heat_flows(labels: np.ndarray, heat: np.ndarray, dims: int = 2) -> np.ndarray:
    """``(..., dims, *spatial)`` float32 unit vectors (one component per spatial axis, ``(dy, dx)`` in
    2D) up the gradient of ``heat`` (central differences over the last ``dims`` axes, a neighbour in
    another object or the background counting as 0), 0 in the background and where the heat is flat.
    ``labels`` and ``heat`` are ``(..., *spatial)``: one image, or a batch of patches."""
    lead = labels.ndim - dims
    pad = [(0, 0)] * lead + [(1, 1)] * dims
    padded_labels, padded_heat = np.pad(labels, pad), np.pad(heat, pad)
    inner = tuple(slice(1, 1 + n) for n in labels.shape[lead:])

    def neighbour(axis: int, step: int) -> np.ndarray:
        window = list(inner)
        window[axis] = slice(1 + step, 1 + step + labels.shape[lead + axis])
        at = (..., *window)
        return np.where(padded_labels[at] == labels, padded_heat[at], 0.0)

    grads = [neighbour(axis, 1) - neighbour(axis, -1) for axis in range(dims)]
    norm = np.sqrt(sum(g**2 for g in grads))
    moving = (labels > 0) & (norm > 0)
    norm = np.where(moving, norm, 1.0)
    return np.stack([np.where(moving, g / norm, 0.0) for g in grads], axis=-dims - 1).astype(np.float32)


def flow_field(labels: np.ndarray) -> np.ndarray:
    """``(D, *spatial)`` float32 unit vectors: for each object pixel the direction up the heat
    diffused from its object's centre (:func:`diffused_heat`), 0 in the background. 2D or 3D."""
    labels = np.asarray(labels)
    return heat_flows(labels, diffused_heat(labels), labels.ndim)


def _linear(field: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``field`` ``(C, *spatial)`` at ``points`` ``(N, D)`` inside the image, interpolated linearly
    (scipy's ``map_coordinates``): ``(N, C)``."""
    at = points.T
    return np.stack(
        [ndimage.map_coordinates(f, at, order=1, mode="nearest", prefilter=False) for f in field], 1
    )


def follow_flows(flows: np.ndarray, mask: np.ndarray, steps: int = STEPS) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of ``mask`` and where each ends after ``steps`` Euler steps along ``flows`` ``(D,
    *spatial)`` (set to 0 outside the mask, so a path stops at the foreground's edge), kept inside
    the image: ``(N, D)`` int coordinates and ``(N, D)`` float end points."""
    field = (flows * mask).astype(np.float32)
    start = np.stack(np.nonzero(mask), axis=1)
    points = start.astype(np.float32)
    upper = np.array(mask.shape, np.float32) - 1
    for _ in range(steps):
        points = np.clip(points + _linear(field, points), 0, upper)
    return start, points


def _sinks(ends: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A label image of the sinks: the bins (pixels) where many paths end, each numbered and grown
    over the neighbouring bins where paths also end (cellpose's seeds and their extension)."""
    rounded = tuple(np.rint(ends).astype(np.int64).T)
    counts = np.zeros(shape, np.int64)
    np.add.at(counts, rounded, 1)
    peaks = (counts == ndimage.maximum_filter(counts, 5)) & (counts > SEED_COUNT)
    sinks = np.zeros(shape, np.int64)
    at = np.nonzero(peaks)
    order = np.argsort(-counts[at], kind="stable")
    sinks[tuple(a[order] for a in at)] = np.arange(1, order.size + 1)
    grows = counts > 2
    for _ in range(GROW):
        grown = ndimage.grey_dilation(sinks, size=(3,) * len(shape))
        sinks = np.where((sinks == 0) & grows, grown, sinks)
    return sinks


def flow_errors(labels: np.ndarray, flows: np.ndarray) -> np.ndarray:
    """Per object ``1..N`` of ``labels`` (index 0, the background: 0), the mean over its pixels of
    the squared difference between the predicted flows and the flows of its own shape."""
    own = flow_field(labels)
    error = ((own - flows) ** 2).sum(axis=0)
    count = np.bincount(labels.ravel(), minlength=labels.max() + 1)
    total = np.bincount(labels.ravel(), weights=error.ravel(), minlength=labels.max() + 1)
    out = total / np.maximum(count, 1)
    out[0] = 0.0
    return out


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


def sink_objects(prob: np.ndarray, flows: np.ndarray, prob_threshold: float = PROB_THRESHOLD) -> np.ndarray:
    """Label image (int32, objects 1..N, the sink where most paths end first) of the pixels of
    ``prob`` ``(*spatial)`` at or above ``prob_threshold`` followed along ``flows`` ``(D, *spatial)``:
    the pixels whose paths end in one sink form an object. Before the checks of
    :func:`checked_objects`."""
    shape = prob.shape
    mask = prob >= prob_threshold
    labels = np.zeros(shape, np.int32)
    if mask.any():
        start, ends = follow_flows(flows, mask)
        sinks = _sinks(ends, shape)
        labels[tuple(start.T)] = sinks[tuple(np.rint(ends).astype(np.int64).T)]
    return relabel_sequential(labels)[0].astype(np.int32)


def checked_objects(
    labels: np.ndarray,
    errors: np.ndarray,
    prob: np.ndarray,
    flow_error: float = FLOW_ERROR,
    min_size: int = MIN_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """The objects of :func:`sink_objects` whose flow error (``errors``, per object,
    :func:`flow_errors`) is at most ``flow_error``, holes filled, none under ``min_size`` px; with
    each pixel's object score (its object's mean foreground probability, 0 in the background)."""
    labels = labels.copy()
    labels[errors[labels] > flow_error] = 0
    labels = _fill_and_sieve(labels, min_size)
    count = np.bincount(labels.ravel(), minlength=labels.max() + 1)
    total = np.bincount(labels.ravel(), weights=prob.ravel(), minlength=labels.max() + 1)
    means = (total / np.maximum(count, 1)).astype(np.float32)
    means[0] = 0.0
    return labels, means[labels]


def labels_from_flows(
    prob: np.ndarray,
    flows: np.ndarray,
    prob_threshold: float = PROB_THRESHOLD,
    flow_error: float = FLOW_ERROR,
    min_size: int = MIN_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Label image (int32, objects 1..N) and each pixel's object score (its object's mean foreground
    probability, 0 in the background) from ``prob`` ``(*spatial)`` and ``flows`` ``(D, *spatial)``,
    2D or 3D.

    The foreground's pixels are followed along the flows; the pixels whose paths end in one sink
    form an object. As in cellpose, an object whose predicted flows disagree with the flows of its
    own shape by more than ``flow_error`` (mean squared difference of the unit vectors) is dropped:
    its pixels did not agree on a centre. Holes are filled and objects under ``min_size`` px
    dropped. A model trained by idl carries the thresholds fitted on its validation images
    (:func:`objects_from_output`)."""
    labels = sink_objects(prob, flows, prob_threshold)
    return checked_objects(labels, flow_errors(labels, flows), prob, flow_error, min_size)


def objects_from_output(out: np.ndarray, **thresholds: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores (:func:`labels_from_flows`, with ``thresholds``: its ``prob_threshold`` and
    ``flow_error``) from a network output ``(1 + D, *spatial)``: the foreground probability, then
    the flows."""
    return labels_from_flows(out[0], out[1:], **thresholds)  # type: ignore[arg-type]
