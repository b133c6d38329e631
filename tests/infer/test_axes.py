from __future__ import annotations

import numpy as np
import pytest

from idl.infer.core.axes import guess_axes, resolve_axes, to_channels_last
from idl.infer.core.errors import DataError


def test_guesses() -> None:
    assert guess_axes((100, 200), "yx") == "yx"
    assert guess_axes((100, 200, 3), "yx") == "yxc"
    assert guess_axes((2, 100, 200), "yx") == "cyx"
    assert guess_axes((3, 100, 4), "yx") is None
    assert guess_axes((30, 100, 200), "yx") is None


def test_ambiguous_shape_asks_for_axes() -> None:
    with pytest.raises(DataError, match=r"img\.tif: cannot tell the axis order .* --axes yxc or --axes cyx"):
        resolve_axes((3, 100, 4), None, "img.tif", "yx")


def test_a_volume_or_a_5d_array_given_to_a_2d_model_gets_advice_that_can_work() -> None:
    with pytest.raises(DataError) as volume:
        resolve_axes((30, 100, 200), None, "img.tif", "yx")
    assert str(volume.value) == (
        "img.tif: shape (30, 100, 200) has no axis small enough to be channels (at most 4), so it looks like "
        "a volume or a stack of 30 planes; the model is 2D (yx) and takes yx plus at most one channel axis. "
        "Use a 3D model if there is one, or if the axis really holds channels, pass it, e.g. --axes cyx."
    )
    with pytest.raises(
        DataError, match=r"img\.tif: has 5 axes \(shape \(2, 3, 4, 64, 64\)\), but the model is 2D"
    ):
        resolve_axes((2, 3, 4, 64, 64), None, "img.tif", "yx")
    with pytest.raises(DataError, match="has shape"):
        resolve_axes((30, 100), "yxc", "img.tif", "yx")
    assert resolve_axes((30, 100, 200), "cyx", "img.tif", "yx") == ("cyx", False)


def test_to_channels_last() -> None:
    x = np.zeros((2, 5, 7))
    assert to_channels_last(x, "cyx", "yx").shape == (5, 7, 2)
    assert to_channels_last(np.zeros((5, 7)), "yx", "yx").shape == (5, 7, 1)
