"""Instance ground truth and output: label images (0 background, 1..N one value per object, uint16).

- :func:`binary_to_labels`: connected components of a binary mask; with ``split_touching`` the
  components are cut along the valleys of their distance transform (a watershed from its peaks), so
  touching round objects become separate objects (one mask per object: :func:`~idl.infer.io.images.
  masks_to_labels`; the Kaggle DSB2018 layout: :mod:`idl.infer.datasets.dsb2018`);
- the U-Net's three-class target (background, interior, boundary) and labels from its probabilities;
- a table of the objects of a label image.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

log = logging.getLogger("idl")


def binary_to_labels(mask: np.ndarray, split_touching: bool = False, min_distance: int = 3) -> np.ndarray:
    """Label image (uint16, 0 background) of the non-zero pixels of ``mask`` (2D or 3D).

    Objects are the connected components (pixels touching by a side or a corner). With
    ``split_touching`` each component is cut by a watershed of its distance transform from the
    transform's local maxima at least ``min_distance`` pixels apart.
    """
    from skimage.feature import peak_local_max
    from skimage.measure import label
    from skimage.segmentation import watershed

    foreground = np.asarray(mask) > 0
    components = label(foreground)
    if not split_touching or components.max() == 0:
        return components.astype(np.uint16)
    from scipy import ndimage  # imported where needed: idl-predict starts 0.2 s sooner without it

    distance = ndimage.distance_transform_edt(foreground)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
    markers = np.zeros(foreground.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # components without a peak (too thin for min_distance) keep one marker of their own
    missing = np.setdiff1d(np.unique(components[foreground]), np.unique(components[markers > 0]))
    for i, component in enumerate(missing, start=len(peaks) + 1):
        markers[tuple(np.argwhere(components == component)[0])] = i
    split = watershed(-distance, markers, mask=foreground)
    return split.astype(np.uint16)


INSTANCE_CLASSES = ("background", "interior", "boundary")


def instance_target(labels: np.ndarray) -> np.ndarray:
    """The U-Net instance model's training target from a label image: 0 background, 1 object
    interior, 2 object boundary (an object's own pixels next to the background or another object),
    so that touching objects are separated by their boundaries."""
    from skimage.segmentation import find_boundaries

    target = (labels > 0).astype(np.uint8)
    target[find_boundaries(labels, mode="inner") & (labels > 0)] = 2
    return target


# the watershed's thresholds by default; idl-train fits them on the validation images (they travel
# in the model description's ``postprocessing``)
FOREGROUND_THRESHOLD = 0.5
SEED_THRESHOLD = 0.5
# 0: seeds are the connected interiors; > 0: the interior's maxima of at least this dynamic
SEED_DYNAMIC = 0.0


def labels_from_probabilities(
    probabilities: np.ndarray,
    min_size: int = 4,
    foreground_threshold: float = FOREGROUND_THRESHOLD,
    seed_threshold: float = SEED_THRESHOLD,
    seed_dynamic: float = SEED_DYNAMIC,
) -> np.ndarray:
    """Label image (uint32 when more than 65535 objects, else uint16) from the instance U-Net's
    ``(3, ...)`` probabilities, by a watershed over the foreground (1 - p_background >
    ``foreground_threshold``), so boundary pixels go to the object they border. Its seeds:

    - ``seed_dynamic`` 0: the connected interiors (p > ``seed_threshold``, at least ``min_size``
      pixels), grown on the interior probability;
    - ``seed_dynamic`` > 0: the maxima of the interior probability (smoothed by a 1-px Gaussian)
      above ``seed_threshold`` that rise at least ``seed_dynamic`` over every path to a higher one
      (h-maxima), grown on the smoothed probability. Two touching nuclei whose interiors meet above
      the threshold are one seed in the first way and two in this one. Computed within each
      foreground component alone (:func:`maxima_watershed`).
    """
    foreground = foreground_of(probabilities, foreground_threshold)
    interior = probabilities[1]
    if seed_dynamic > 0:
        labels = maxima_watershed(interior, foreground, seed_dynamic, seed_threshold)
    else:
        from skimage.measure import label

        seeds = label(interior > seed_threshold)
        small = np.bincount(seeds.ravel()) < min_size
        small[0] = False
        seeds[small[seeds]] = 0  # specks are no objects
        labels = watershed_by_component(-interior, seeds, foreground)
    return labels.astype(label_dtype(int(labels.max())))


def foreground_of(probabilities: np.ndarray, threshold: float = FOREGROUND_THRESHOLD) -> np.ndarray:
    """The pixels of the U-Net's ``(3, ...)`` probabilities that belong to some object: 1 -
    p_background > ``threshold``."""
    return probabilities[0] < 1.0 - threshold


def _components(mask: np.ndarray) -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
    """Each connected component of ``mask`` (pixels touching by a side or a corner): its bounding box
    and its pixels there."""
    from scipy import ndimage

    components = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))[0]
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is not None:
            yield box, components[box] == index


def watershed_by_component(image: np.ndarray, seeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``watershed(image, seeds, mask=mask)`` run on each connected component of ``mask`` (pixels
    touching by a side or a corner) in its own bounding box, so a component's labels depend on its
    pixels alone. scikit-image's watershed breaks ties between equal values (a saturated network's
    interiors are exactly 1.0) by the layout of its heap, which holds the whole image: the same
    component in another crop could be split otherwise, and a volume labelled block by block
    (:mod:`idl.infer.post.block_labels`) relies on the labels of a component being the same in every
    window that holds it."""
    from skimage.segmentation import watershed

    labels = np.zeros(mask.shape, np.int32)
    for box, inside in _components(mask):
        local = np.where(inside, seeds[box], 0)
        if not local.any():
            continue  # no seed: background, as the watershed of the whole image leaves it
        flooded = watershed(image[box], local, mask=inside)
        labels[box][inside] = flooded[inside]
    return labels


def maxima_watershed(interior: np.ndarray, mask: np.ndarray, dynamic: float, floor: float) -> np.ndarray:
    """Labels of each connected component of ``mask`` from the maxima of its ``interior``
    probability: within the component's bounding box (the pixels outside it taken as 0, so the labels
    depend on the component alone, as :func:`watershed_by_component`'s do), the interior smoothed by a
    1-px Gaussian, its h-maxima of height ``dynamic`` above ``floor`` as seeds (each connected
    plateau one object), grown by a watershed of the smoothed interior. A component without such a
    maximum stays background, as one without a seed does."""
    from scipy import ndimage
    from skimage.measure import label
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    labels = np.zeros(mask.shape, np.int32)
    count = 0
    for box, inside in _components(mask):
        smooth = ndimage.gaussian_filter(np.where(inside, interior[box], 0).astype(np.float32), 1.0)
        peaks = h_maxima(smooth, dynamic).astype(bool) & inside & (smooth > floor)
        seeds, found = label(peaks, return_num=True)
        if not found:
            continue
        flooded = watershed(-smooth, seeds, mask=inside)
        labels[box][inside] = flooded[inside] + count
        count += found
    return labels


def object_windows(labels: np.ndarray) -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
    """Each object of a label image (1..N, in order): its bounding box grown by one pixel on every
    side (within the image) and its mask there, for per-object work that must see the object's
    edge."""
    from scipy import ndimage

    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is not None:
            grown = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box)
            yield grown, labels[grown] == i


def label_dtype(count: int) -> type:
    """uint16 labels, or uint32 beyond 65 535 objects."""
    return np.uint16 if count <= np.iinfo(np.uint16).max else np.uint32


def objects_table(
    labels: np.ndarray, uncertainty: np.ndarray | None = None, scores: np.ndarray | None = None
):
    """One row per object: label, area (pixels), centroid, and with Monte Carlo dropout the mean
    pixel uncertainty inside the object; its ``score``: Mask R-CNN's detection score, the star-convex
    network's object probability, the U-Net's mean foreground probability (pandas DataFrame)."""
    import pandas as pd
    from skimage.measure import regionprops_table

    table = pd.DataFrame(regionprops_table(labels, properties=["label", "area", "centroid"]))
    axes = "zyx"[-labels.ndim :]
    table = table.rename(columns={f"centroid-{i}": f"centroid_{a}" for i, a in enumerate(axes)})
    for name, values in (("score", scores), ("uncertainty_mean", uncertainty)):
        if values is not None:
            means = regionprops_table(labels, intensity_image=values, properties=["intensity_mean"])
            table[name] = means["intensity_mean"]
    return table
