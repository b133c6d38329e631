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

from idl.infer.post.instance_labels import object_windows

PROB_THRESHOLD = 0.5  # a pixel is followed from this foreground probability on
STEPS = 200  # Euler steps of unit length at most along the flows (cellpose's niter)
SEED_COUNT = 10  # paths ending in one 5 x 5 (x 5) neighbourhood for a sink (cellpose's)
GROW = 5  # px a sink's area grows over bins where more than 2 paths end (cellpose's)
FLOW_ERROR = 0.4  # an object whose predicted flows differ from its own by more (mean squared) is dropped
MIN_SIZE = 15  # px (voxels): a smaller object is dropped (cellpose's min_size)


def _centre(mask: np.ndarray) -> tuple[int, ...]:
    """The pixel of ``mask`` nearest the median of its coordinates: a point inside the object even
    where it bends (its mean can lie outside)."""
    coords = np.argwhere(mask)
    median = np.median(coords, axis=0)
    return tuple(int(c) for c in coords[np.argmin(((coords - median) ** 2).sum(axis=1))])


def _object_heat(mask: np.ndarray, iterations: int) -> np.ndarray:
    """The heat of one object (``mask``, with a margin of at least one background pixel around it)
    after ``iterations`` steps: one unit added at its centre, then every pixel takes the mean of its
    3 x 3 (x 3) neighbourhood, the pixels outside the object counting as 0."""
    centre = _centre(mask)
    heat = np.zeros(mask.shape)
    for _ in range(iterations):
        heat[centre] += 1.0
        heat = ndimage.uniform_filter(heat, 3, mode="constant") * mask
    return heat


def diffused_heat(labels: np.ndarray, iterations: int | None = None) -> np.ndarray:
    """``labels``' shape, float64: in each object, the logarithm of the heat diffused from its
    centre, scaled to 0 (its coldest pixel) .. 1 (its centre); 0 in the background. 2D or 3D.

    The heat is cellpose's: each object diffuses on its own, over its own pixels, for ``iterations``
    steps (default: twice its summed extents, enough to reach its every pixel; cellpose's), from its
    pixel nearest the median of its coordinates. The logarithm and the scale leave the direction of
    its gradient (the flow) as it is, and make the heat a value that 16 bits hold without losing the
    gradient at an object's edge, where the heat itself is many orders of magnitude below the
    centre's. Each object is diffused in its bounding box, so a volume's few large nuclei cost their
    own boxes and steps, not the largest one's steps over every object."""
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, np.float64)
    for grown, mask in object_windows(labels):
        steps = iterations if iterations is not None else 2 * sum(np.ptp(np.nonzero(mask), axis=1) + 1)
        heat = _object_heat(mask, steps)
        logs = np.log(np.maximum(heat[mask], np.finfo(np.float64).tiny))
        span = logs.max() - logs.min()
        out[grown][mask] = (logs - logs.min()) / span if span > 1e-12 else 1.0  # one pixel: its centre
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
    return _object_means(labels, ((flow_field(labels) - flows) ** 2).sum(axis=0))


def _object_means(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per object ``1..N`` of ``labels``, the mean of ``values`` over its pixels; 0 at index 0."""
    count = np.bincount(labels.ravel(), minlength=labels.max() + 1)
    total = np.bincount(labels.ravel(), weights=values.ravel(), minlength=labels.max() + 1)
    means = total / np.maximum(count, 1)
    means[0] = 0.0
    return means


def _fill_and_sieve(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Each object with its holes filled, those smaller than ``min_size`` px removed, renumbered
    1..N in the same order."""
    out = np.zeros_like(labels)
    for i, (box, mask) in enumerate(object_windows(labels), start=1):
        filled = ndimage.binary_fill_holes(mask)
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
    return labels, _object_means(labels, prob).astype(np.float32)[labels]


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
