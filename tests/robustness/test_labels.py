"""A stray mask value does not silently make a binary project a many-class one: classes that no mask
holds are an error naming the masks with the odd value; --num-classes accepts them."""

from __future__ import annotations

import numpy as np
import pytest

from idl.infer.core.errors import DataError
from idl.infer.post.labels import infer_num_classes


def _masks(values: list[list[int]]) -> list[np.ndarray]:
    masks = []
    for held in values:
        mask = np.zeros((8, 8), np.uint8)
        for i, v in enumerate(held):
            mask[i, :2] = v
        masks.append(mask)
    return masks


def test_a_stray_value_is_an_error_naming_its_mask() -> None:
    masks = _masks([[0, 1], [0, 1], [0, 1, 7]])
    names = ["a.tif", "b.tif", "c.tif"]
    with pytest.raises(DataError) as error:
        infer_num_classes(masks, names, strict=True)
    assert str(error.value) == (
        "the masks hold the class values 0, 1, 7, so classes 2, 3, 4, 5, 6 appear in no mask; value(s) 7 "
        "are in c.tif. Fix those masks (classes must be 0..K-1), or pass --num-classes 8 to train 8 "
        "classes as they are."
    )
    assert infer_num_classes(masks) == 8  # evaluation: a test set may lack a class


@pytest.mark.parametrize(
    ("values", "expected"),
    [([[0, 1], [0, 255]], 2), ([[0, 1], [0, 2]], 3), ([[0, 3], [1, 2]], 4), ([[0], [0, 1]], 2)],
)
def test_contiguous_or_binary_values_are_classes(values: list[list[int]], expected: int) -> None:
    assert infer_num_classes(_masks(values), strict=True) == expected
