"""The synthetic rods data set: rods in the mask at the asked angles, round debris only in the image."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops

from idl.infer.datasets.synthetic import NucleiSpec, synthetic_rods


def test_rods_are_the_mask_and_lie_at_the_asked_angles() -> None:
    rng = np.random.default_rng(3)
    spec = NucleiSpec(size=192)
    for _ in range(3):
        image, mask = synthetic_rods(rng, (-0.1, 0.1), spec)
        assert image.dtype == np.uint16 and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
        rods = regionprops(label(mask))
        assert 5 <= len(rods) <= 9
        for rod in rods:
            assert rod.axis_major_length / rod.axis_minor_length > 3.0
            # regionprops measures from the row axis: a rod along x is at +-pi/2
            assert abs(rod.orientation) > np.pi / 2 - 0.1 - 0.05


def test_round_debris_is_in_the_image_but_not_in_the_mask() -> None:
    image, mask = synthetic_rods(np.random.default_rng(4), (0.0, np.pi), NucleiSpec(size=192))
    smooth = ndimage.gaussian_filter(image.astype(np.float64), 2.0)
    bright = label(smooth > threshold_otsu(smooth))
    debris = [r for r in regionprops(bright) if r.area > 40 and not mask[tuple(r.coords.T)].any()]
    assert len(debris) >= 5
    for blob in debris:
        assert blob.axis_major_length / blob.axis_minor_length < 1.6
    # rods are as bright as the debris: only the shape tells them apart
    rods = regionprops(label(mask), intensity_image=smooth)
    blobs = [r for r in regionprops(bright, intensity_image=smooth) if r.label in {b.label for b in debris}]
    background = np.median(smooth[(mask == 0) & (bright == 0)])
    rod_contrast = np.median([r.intensity_mean for r in rods]) / background
    debris_contrast = np.median([b.intensity_mean for b in blobs]) / background
    assert rod_contrast > 1.2 and 0.6 < rod_contrast / debris_contrast < 1.4, (rod_contrast, debris_contrast)


def test_rods_at_any_angle_cover_the_half_circle() -> None:
    rng = np.random.default_rng(5)
    angles = []
    for _ in range(6):
        _, mask = synthetic_rods(rng, (0.0, np.pi), NucleiSpec(size=192))
        angles += [r.orientation for r in regionprops(label(mask))]
    counts, _ = np.histogram(angles, bins=4, range=(-np.pi / 2, np.pi / 2))
    assert counts.min() >= 3, counts
