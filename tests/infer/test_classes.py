"""groundtruth.csv: where it is found, how labels become classes, and every error's text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from idl.infer.core.errors import DataError
from idl.infer.io.images import write_tiff
from idl.infer.post.classes import (
    canonical,
    class_indices,
    class_names_of,
    label_key,
    labelled_images,
    read_label_csv,
)


def _split(root: Path, names: list[str], csv: str | None, where: str = "groundtruth/groundtruth.csv") -> Path:
    for name in names:
        write_tiff(root / "image" / name, np.zeros((8, 8), np.uint8))
    if csv is not None:
        path = root / where
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(csv, encoding="utf-8")
    return root


def test_labels_by_name_with_or_without_suffix_and_index_column(tmp_path: Path) -> None:
    split = _split(
        tmp_path, ["a.tif", "b.tif"], ",filename,groundtruth\n0,a.tif,2\n1,b,10\n", "groundtruth.csv"
    )
    items = labelled_images(split)
    assert [(i.name, i.label) for i in items] == [("a", "2"), ("b", "10")]


def test_integer_classes_sort_numerically_and_names_alphabetically() -> None:
    assert class_names_of(["10", "2", "1", "2"]) == ("1", "2", "10")
    assert class_names_of(["neutrophil", "basophil", "monocyte"]) == ("basophil", "monocyte", "neutrophil")
    assert class_indices(["10", "1"], ("1", "2", "10"), "x") == [2, 0]
    with pytest.raises(DataError, match=r"class\(es\) '7' are not among the model's classes \(1, 2, 10\)"):
        class_indices(["7"], ("1", "2", "10"), "x")


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        (
            "file,label\na.tif,1\n",
            r"the header must be filename,groundtruth; found 'file', 'label' \(unknown",
        ),
        ("filename,groundtruth,patient\na.tif,1,p1\n", r"unknown column\(s\): patient"),
        ("filename,groundtruth\n../a.tif,1\n", r"row 2: '../a.tif' is not a plain file name"),
        ("filename,groundtruth\n/data/a.tif,1\n", r"row 2: '/data/a.tif' is not a plain file name"),
        ("filename,groundtruth\na.tif,1\na,2\n", r"rows 2 and 3: 'a' is listed twice"),
        ("filename,groundtruth\na.tif,\n", r"row 2: the class is empty"),
        ("filename,groundtruth\n", r"no rows below the header"),
    ],
)
def test_csv_errors_name_the_file_and_row(tmp_path: Path, csv: str, message: str) -> None:
    path = tmp_path / "groundtruth.csv"
    path.write_text(csv, encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        read_label_csv(path)
    assert str(path) in str(info.value)


def test_missing_csv_rows_and_images(tmp_path: Path, caplog) -> None:
    with pytest.raises(DataError, match=r"groundtruth.csv: not found. Classification needs a CSV file"):
        labelled_images(_split(tmp_path / "none", ["a.tif"], None))
    no_row = _split(tmp_path / "norow", ["a.tif", "b.tif"], "filename,groundtruth\na.tif,x\n")
    with pytest.raises(DataError, match=r"no row for b.tif \(1 image\(s\) without one\)"):
        labelled_images(no_row)
    # rows without an image (InstantDL's example CSV lists thousands): skipped with one warning
    rows = "filename,groundtruth\na.tif,x\n" + "".join(f"gone{i}.png,y\n" for i in range(5))
    orphan = _split(tmp_path / "orphan", ["a.tif"], rows)
    with caplog.at_level("WARNING", logger="idl"):
        found = labelled_images(orphan)
    assert [(i.name, i.label) for i in found] == [("a", "x")]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "5 of 6 row(s) name no image" in warnings[0] and "'gone0'" in warnings[0]
    unlabelled = labelled_images(_split(tmp_path / "test", ["a.tif"], None), require_labels=False)
    assert unlabelled[0].label is None


def test_labels_and_names_are_kept_as_written_unless_clearly_the_same() -> None:
    assert [canonical(v) for v in ("01", "1.0", "-2", "1_0", "1.5", "12345678901234567890")] == [
        "1",
        "1",
        "-2",
        "1_0",
        "1.5",
        "12345678901234567890",
    ]
    assert [label_key(n) for n in ("a.tif", "a.TIFF", "cells.ome.zarr", "sample.01", "a")] == [
        "a",
        "a",
        "cells",
        "sample.01",
        "a",
    ]


def test_dotted_names_and_several_csvs(tmp_path: Path) -> None:
    split = _split(
        tmp_path / "dots",
        ["sample.01.tif", "sample.02.tif"],
        "filename,groundtruth\nsample.01,x\nsample.02.tif,y\n",
    )
    assert [(i.name, i.label) for i in labelled_images(split)] == [("sample.01", "x"), ("sample.02", "y")]
    several = _split(
        tmp_path / "several", ["a.tif"], "filename,groundtruth\na.tif,x\n", "groundtruth/labels.csv"
    )
    (several / "groundtruth" / "other.csv").write_text("x\n")
    with pytest.raises(
        DataError, match=r"holds 2 CSV files \(labels.csv, other.csv\); name the one with the labels"
    ):
        labelled_images(several)
