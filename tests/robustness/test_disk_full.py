"""A full disk during idl-predict (issue 30, item 8): the output that did not fit, the space it needs
and how to continue, exit status 1 without a traceback; the images finished before are kept, and the
same command completes the rest once space is freed.

The disk is a 20 MB tmpfs where the machine lets root mount one (a real ENOSPC from the kernel);
elsewhere TIFF writes go through a writer with a byte budget that raises ENOSPC beyond it."""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from idl.cli import predict as predict_cli
from idl.infer.io.images import DiskFull, megabytes, write_tiff
from idl.infer.io.places import LEFTOVER
from idl.infer.io.sinks import TiffSink

from ..small_disk import SmallDisk, small_disk


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmallDisk]:
    """A 20 MB tmpfs when root may mount one, else TIFF writes with a byte budget."""
    with small_disk(tmp_path / "disk") as small:
        if not small.mounted:
            imwrite: Callable[..., Any] = tifffile.imwrite

            def budgeted(path: Any, data: Any, **kwargs: Any) -> Any:
                staged = io.BytesIO()
                imwrite(staged, data, **kwargs)
                small.take(len(staged.getvalue()))
                return imwrite(path, data, **kwargs)

            monkeypatch.setattr(tifffile, "imwrite", budgeted)
        yield small


def _inputs(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in "abcd":
        write_tiff(folder / f"{name}.tif", rng.random((256, 256)).astype(np.float32))
    return folder


def test_predict_on_a_full_disk_keeps_finished_images_and_the_same_command_completes(
    identity_model: Callable[..., Path], tmp_path: Path, disk: SmallDisk
) -> None:
    model, inputs, out = identity_model(), _inputs(tmp_path / "in"), disk.folder / "out"
    args = [str(model), str(inputs), "--out", str(out), "--save-probabilities", "--quiet"]
    reference = tmp_path / "reference"
    assert CliRunner().invoke(predict_cli.main, [*args[:3], str(reference), *args[4:]]).exit_code == 0
    each = sum(p.stat().st_size for p in reference.rglob("?.tif")) // 4  # 236 kB probabilities, 11 kB mask
    assert 240_000 < each < 260_000

    disk.fill(leave=2 * each + 4 * 4096 + each // 2)  # two images and half the third
    result = CliRunner().invoke(predict_cli.main, args)
    assert result.exit_code == 1, result.output
    message = result.output.strip().splitlines()[-1]
    failed = out / "probabilities" / "c.tif"  # written first; the prediction itself last
    found = re.fullmatch(
        rf"Error: No space left on {re.escape(str(failed))} \(needs about (\S+) MB, (\S+) MB free\)\. Free "
        r"space there, then: Finished images are kept in --out; the same command continues with the rest "
        r"\(--overwrite redoes all\)\.",
        message,
    )
    assert found, message
    size = (reference / "probabilities" / "c.tif").stat().st_size
    assert abs(float(found[1]) * 2**20 - size) < 0.03 * size + 4096  # 0.23 MB, as written when it fits
    if disk.mounted:  # the tmpfs's free space, once the unfinished file was removed
        assert found[2] == megabytes(shutil.disk_usage(disk.folder).free)
    assert "Traceback" not in result.output
    kept = {p.relative_to(out).as_posix() for p in out.rglob("*.tif")}
    assert kept == {"a.tif", "b.tif", "probabilities/a.tif", "probabilities/b.tif"}
    assert (out / "a.tif").read_bytes() == (reference / "a.tif").read_bytes()  # whole files only
    assert not [p for p in out.rglob("*") if LEFTOVER.match(p.name)]

    disk.free()
    again = CliRunner().invoke(predict_cli.main, args[:-1])
    assert again.exit_code == 0, again.output
    assert "a.tif: already predicted" in again.output and "b.tif: already predicted" in again.output
    assert "c.tif: already predicted" not in again.output
    for name in "abcd":
        assert (out / f"{name}.tif").read_bytes() == (reference / f"{name}.tif").read_bytes()


def test_a_tile_sink_on_a_full_disk_names_its_output_and_removes_the_part(
    tmp_path: Path, disk: SmallDisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out-of-core outputs are sparse files filled tile by tile: the disk fills on a tile's write."""
    if not disk.mounted:
        pwrite = os.pwrite

        def budgeted(fd: int, data: bytes, offset: int) -> int:
            disk.take(len(data))
            return pwrite(fd, data, offset)

        monkeypatch.setattr(os, "pwrite", budgeted)
    target = disk.folder / "big.tif"
    sink = TiffSink(target, (1000, 1000), np.float32)  # 3.8 MB
    disk.fill(leave=1024 * 1024)
    with pytest.raises(DiskFull) as caught:
        for row in range(0, 1000, 100):
            sink[row : row + 100, :] = np.ones((100, 1000), np.float32)
    assert str(caught.value).startswith(f"No space left on {target} (needs about 3.8 MB, ")
    if disk.mounted:
        free = megabytes(shutil.disk_usage(disk.folder).free)
        assert str(caught.value).endswith(f"3.8 MB, {free} MB free).")
    assert caught.value.errno == errno.ENOSPC and isinstance(caught.value, OSError)
    assert not target.exists() and not [p for p in disk.folder.iterdir() if LEFTOVER.match(p.name)]
