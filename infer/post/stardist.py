"""Star-convex polygons (StarDist, Schmidt et al. 2018): objects from an object probability and the
distances to the object's edge along rays, in numpy and scikit-image (no torch).

A star-convex object is one whose every edge point is seen from its centre: it is described, from
any pixel inside it, by the distances to its edge along ``n`` rays at equal angles. The network
predicts for every pixel how central it lies in an object (the normalized distance to the object's
edge) and the ``n`` distances; each pixel above a probability threshold proposes a polygon, and a
greedy non-maximum suppression keeps the most probable proposals that do not overlap a kept one by
more than an IoU threshold. Touching nuclei stay apart because each is its own polygon, which a
threshold and a watershed can get wrong.

- :func:`star_distances` and :func:`object_probability`: the training targets from a label image;
- :func:`polygons_to_labels` and :func:`labels_from_stars`: label images from the network's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from idl.infer.post.instance_labels import object_windows

RAYS = 32  # StarDist's default for 2D nuclei
PROB_THRESHOLD = 0.5  # a pixel proposes a polygon from this object probability on
NMS_THRESHOLD = 0.4  # a proposal overlapping a kept polygon by more than this IoU is dropped


def ray_directions(n: int) -> np.ndarray:
    """``(n, 2)`` unit vectors ``(dy, dx)`` at angles ``2 pi k / n``, counter-clockwise from +x."""
    angles = 2 * np.pi * np.arange(n) / n
    return np.stack([np.sin(angles), np.cos(angles)], axis=1)


def star_distances(labels: np.ndarray, n: int = RAYS) -> np.ndarray:
    """``(n, Y, X)`` float32 distances from each object pixel to its object's edge along each ray
    (0 in the background). A ray is followed in unit steps until it reaches a pixel of another
    value or leaves the image; the last step is taken back to the edge between the two pixels."""
    labels = np.asarray(labels)
    out = np.zeros((n, *labels.shape), np.float32)
    ys, xs = np.nonzero(labels)
    if not ys.size:
        return out
    own = labels[ys, xs]
    height, width = labels.shape
    for k, (dy, dx) in enumerate(ray_directions(n)):
        correction = 1 - 0.5 / max(abs(dy), abs(dx))
        active = np.arange(ys.size)
        step = 0
        while active.size:
            step += 1
            y = np.rint(ys[active] + step * dy).astype(np.int64)
            x = np.rint(xs[active] + step * dx).astype(np.int64)
            inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
            same = np.zeros(active.size, bool)
            same[inside] = labels[y[inside], x[inside]] == own[active[inside]]
            done = active[~same]
            out[k, ys[done], xs[done]] = step - correction
            active = active[same]
    return out


def object_probability(labels: np.ndarray) -> np.ndarray:
    """``(Y, X)`` float32: each object pixel's distance to the object's edge (Euclidean, to the
    nearest pixel outside it) divided by the largest in its object, so 1 at the centre and small at
    the edge; 0 in the background."""
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, np.float32)
    for grown, mask in object_windows(labels):
        distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        out[grown][mask] = (distance[mask] / distance[mask].max()).astype(np.float32)
    return out


@dataclass(frozen=True)
class Stars:
    """Polygon proposals: centres ``(N, 2)`` (row, column), distances ``(N, n)`` and probabilities
    ``(N,)``, most probable first."""

    centres: np.ndarray
    distances: np.ndarray
    probabilities: np.ndarray

    def vertices(self, i: int) -> np.ndarray:
        """``(n, 2)`` polygon corners of proposal ``i`` (row, column)."""
        return self.centres[i] + self.distances[i][:, None] * ray_directions(self.distances.shape[1])


GRID = 2  # proposals from every GRID-th pixel along each axis (StarDist's grid for nuclei)
MIN_RADIUS = 1.0  # px: a polygon whose mean distance is shorter is no object


def proposals(prob: np.ndarray, dist: np.ndarray, threshold: float = PROB_THRESHOLD) -> Stars:
    """The pixels of ``prob`` ``(Y, X)`` on the :data:`GRID` (even rows and columns: tiles start
    at even offsets, so a tile proposes what the whole image does) at or above ``threshold``, with
    their distances from ``dist`` ``(n, Y, X)`` averaging at least :data:`MIN_RADIUS`, sorted by
    probability (highest first; ties in row-major order). Every object is proposed by its central
    pixels; the grid and the smallest radius keep an untrained network's flat output (every pixel
    at 0.5, every distance near 0) from proposing a polygon per pixel."""
    on_grid = np.zeros(prob.shape, bool)
    on_grid[::GRID, ::GRID] = True
    ys, xs = np.nonzero(on_grid & (prob >= threshold) & (dist.mean(axis=0) >= MIN_RADIUS))
    p = prob[ys, xs]
    order = np.lexsort((np.arange(p.size), -p))
    centres = np.stack([ys, xs], axis=1)[order].astype(np.float64)
    distances = np.maximum(dist[:, ys, xs].T[order], 0.0).astype(np.float64)
    return Stars(centres, distances, p[order].astype(np.float32))


def _raster(vertices: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    from skimage.draw import polygon

    return polygon(vertices[:, 0], vertices[:, 1], shape)


def suppress(stars: Stars, shape: tuple[int, int], threshold: float = NMS_THRESHOLD) -> list[int]:
    """Greedy non-maximum suppression of rasterized polygons: the indices kept, most probable first.

    A proposal is dropped when its pixels overlap one kept polygon by more than ``threshold`` IoU.
    Kept polygons are painted into a map of owners (a pixel keeps its first owner), from which a
    proposal's intersection with each kept polygon is counted. A proposal whose centre pixel a kept
    polygon already covers is dropped without rasterizing it: it is another proposal of that object
    (every pixel of an object proposes it), and on a 520 x 696 image of nuclei this skips over 99 %
    of the proposals."""
    owner = np.zeros(shape, np.int64)  # 0: free, else the kept polygon's number + 1
    areas: list[int] = []
    kept: list[int] = []
    centres = np.rint(stars.centres).astype(np.int64)
    for i in range(len(stars.probabilities)):
        if owner[centres[i, 0], centres[i, 1]]:
            continue
        rr, cc = _raster(stars.vertices(i), shape)
        if not rr.size:
            continue
        hit = owner[rr, cc]
        overlaps = np.bincount(hit[hit > 0], minlength=len(areas) + 1)
        others = np.nonzero(overlaps)[0]
        if others.size:
            inter = overlaps[others]
            union = rr.size + np.asarray(areas)[others - 1] - inter
            if np.max(inter / union) > threshold:
                continue
        free = hit == 0
        owner[rr[free], cc[free]] = len(kept) + 1
        areas.append(int(rr.size))
        kept.append(i)
    return kept


def polygons_to_labels(stars: Stars, keep: list[int], shape: tuple[int, int]) -> np.ndarray:
    """Label image (int32) of the polygons ``keep``, numbered 1.. in that order; where two overlap,
    the more probable (earlier) one wins."""
    labels = np.zeros(shape, np.int32)
    for number, i in reversed(list(enumerate(keep, start=1))):
        rr, cc = _raster(stars.vertices(i), shape)
        labels[rr, cc] = number
    return labels


def labels_from_stars(
    prob: np.ndarray,
    dist: np.ndarray,
    prob_threshold: float = PROB_THRESHOLD,
    nms_threshold: float = NMS_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """Label image (int32) and each pixel's object probability (the probability of its polygon's
    centre, 0 in the background) from ``prob`` ``(Y, X)`` and ``dist`` ``(n, Y, X)``."""
    shape = prob.shape
    stars = proposals(prob, dist, prob_threshold)
    keep = suppress(stars, shape, nms_threshold)
    labels = polygons_to_labels(stars, keep, shape)
    scores = np.concatenate([[0.0], stars.probabilities[keep]]).astype(np.float32)[labels]
    return labels, scores


def objects_from_output(out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores (:func:`labels_from_stars`) from a network output ``(1 + n, Y, X)``: the
    probability, then the distances."""
    return labels_from_stars(out[0], out[1:])
