from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from idl.infer.core.errors import DataError
from idl.infer.core.project import pair_files
from idl.infer.io.images import write_tiff


def _make(split: Path, images: list[str], gts: list[str]) -> None:
    for name in images:
        write_tiff(split / "image" / name, np.zeros((8, 8), np.uint8))
    for name in gts:
        write_tiff(split / "groundtruth" / name, np.zeros((8, 8), np.uint8))


def test_pairs_by_name_even_with_other_suffix(tmp_path: Path) -> None:
    _make(tmp_path, ["a.tif", "b.tif"], ["a.tif", "b.tiff"])
    pairs = pair_files(tmp_path)
    assert [(p.name, p.groundtruth.name) for p in pairs] == [("a", "a.tif"), ("b", "b.tiff")]


def test_image_without_groundtruth(tmp_path: Path) -> None:
    _make(tmp_path, ["a.tif", "b.tif"], ["a.tif"])
    with pytest.raises(DataError, match=r"b\.tif has no ground truth: expected .*groundtruth/b\.tif"):
        pair_files(tmp_path)


def test_groundtruth_without_image_is_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    _make(tmp_path, ["a.tif"], ["a.tif", "y.tif", "z.tif"])
    with caplog.at_level("WARNING", logger="idl"):
        pairs = pair_files(tmp_path)
    assert [p.name for p in pairs] == ["a"]
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'groundtruth' / 'y.tif'} has no image (expected {tmp_path / 'image' / 'y.tif'}): "
        "2 ground-truth file(s) without an image are skipped"
    ]
    caplog.clear()
    with caplog.at_level("WARNING", logger="idl"):
        assert [p.name for p in pair_files(tmp_path)] == ["a"]
    assert caplog.records == []  # read again (plan, data, test): said once


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "image").mkdir()
    with pytest.raises(DataError, match="the folder is empty"):
        pair_files(tmp_path)
    with pytest.raises(DataError, match="folder not found"):
        pair_files(tmp_path / "nothing")


def test_test_split_without_groundtruth_is_fine(tmp_path: Path) -> None:
    _make(tmp_path, ["a.tif"], [])
    assert pair_files(tmp_path, require_groundtruth=False)[0].groundtruth is None
