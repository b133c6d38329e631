from __future__ import annotations

import numpy as np
import pytest

from idl.infer.axes import guess_axes_2d, resolve_axes_2d, to_yxc
from idl.infer.errors import DataError


def test_guesses() -> None:
    assert guess_axes_2d((100, 200)) == "yx"
    assert guess_axes_2d((100, 200, 3)) == "yxc"
    assert guess_axes_2d((2, 100, 200)) == "cyx"
    assert guess_axes_2d((3, 100, 4)) is None
    assert guess_axes_2d((30, 100, 200)) is None


def test_ambiguous_shape_asks_for_axes() -> None:
    with pytest.raises(DataError, match=r"img\.tif: cannot tell the axis order .* --axes"):
        resolve_axes_2d((30, 100, 200), None, "img.tif")
    with pytest.raises(DataError, match="has shape"):
        resolve_axes_2d((30, 100), "yxc", "img.tif")
    assert resolve_axes_2d((30, 100, 200), "cyx", "img.tif") == ("cyx", False)


def test_to_yxc() -> None:
    x = np.zeros((2, 5, 7))
    assert to_yxc(x, "cyx").shape == (5, 7, 2)
    assert to_yxc(np.zeros((5, 7)), "yx").shape == (5, 7, 1)
