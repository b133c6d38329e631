from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.io import imsave

from idl.infer.core.errors import DataError
from idl.infer.io.images import atomic_path, read_image, write_tiff


def test_roundtrip_tiff_png_npy(tmp_path: Path, rng) -> None:
    a16 = rng.integers(0, 60000, (20, 30)).astype(np.uint16)
    write_tiff(tmp_path / "a.tif", a16)
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif"), a16)
    rgb = rng.integers(0, 255, (20, 30, 3)).astype(np.uint8)
    imsave(tmp_path / "b.png", rgb, check_contrast=False)
    np.testing.assert_array_equal(read_image(tmp_path / "b.png"), rgb)
    np.save(tmp_path / "c.npy", a16.astype(np.float32))
    np.testing.assert_array_equal(read_image(tmp_path / "c.npy"), a16.astype(np.float32))


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(DataError, match=r"broken\.tif: cannot read the image"):
        read_image(bad)
    with pytest.raises(DataError, match="unsupported file type '.bmp'"):
        read_image(tmp_path / "x.bmp")


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.tif"
    write_tiff(target, np.zeros((4, 4), np.uint8))
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tifffile.imwrite(tmp, np.ones((4, 4), np.uint8))
        raise RuntimeError("interrupted")
    assert read_image(target).sum() == 0  # the previous file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]
    assert oct(target.stat().st_mode & 0o777) != "0o600"
