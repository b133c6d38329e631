"""Untrusted package files: not a zip, an HTML error page, a cut-off download, and a zip bomb (a small
file whose member unpacks to 2 GB) are refused with plain messages before anything is unpacked."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from idl.infer.core.errors import ModelError
from idl.infer.service.load import load_model


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\x00\x01random bytes" * 100, "it is a file starting b'\\x00\\x01random'"),
        (
            b"<!DOCTYPE html><html>Not found</html>",
            "it is an HTML page (an error page saved instead of the file?)",
        ),
        (None, "it is cut off (an incomplete download?)"),
    ],
)
def test_broken_package_files_get_plain_messages(tmp_path: Path, content: bytes | None, says: str) -> None:
    path = tmp_path / "model.zip"
    if content is None:  # a real zip, cut off halfway
        whole = _zip(
            tmp_path / "whole.zip", {"rdf.yaml": b"x" * 5000, "weights.onnx": bytes(range(256)) * 400}
        )
        path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(ModelError) as error:
        load_model(path)
    assert str(error.value) == (
        f"{path}: not a complete zip archive: {says}. Download the package again (on bioimage.io: "
        "'Download' -> zip) and check its size."
    )


def _bomb(path: Path, member_gb: float = 2.0) -> Path:
    """A zip of a few MB whose weights member unpacks to ``member_gb`` GB of zeros."""
    chunk = bytes(2**24)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr(
            "rdf.yaml", b"format_version: 0.5.3\ntype: model\nweights: {onnx: {source: w.onnx}}\n"
        )
        with archive.open("w.onnx", "w", force_zip64=True) as member:
            for _ in range(int(member_gb * 2**30) // len(chunk)):
                member.write(chunk)
    return path


def test_a_zip_bomb_is_refused_without_unpacking_it(tmp_path: Path) -> None:
    bomb = _bomb(tmp_path / "bomb.zip")
    assert bomb.stat().st_size < 16 * 2**20
    # a fresh process runs idl-predict as its child and reports that child's peak RSS alone
    command = [sys.executable, "-c", f"from idl.cli.predict import main; main(['{bomb}', '--info'])"]
    wrapper = (
        "import resource, subprocess, sys; "
        f"done = subprocess.run({command!r}, capture_output=True, text=True); "
        "sys.stderr.write(done.stderr); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(done.returncode)"
    )
    done = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, timeout=120)
    peak_mb = int(done.stdout.split()[-1]) / 1024  # kB on Linux
    print(
        f"idl-predict on a {bomb.stat().st_size / 2**20:.1f} MB zip with a 2 GB member: "
        f"peak RSS {peak_mb:.0f} MB"
    )
    assert done.returncode == 1, done.stderr
    assert "the member w.onnx unpacks to 2048 MB" in done.stderr and "IDL_MAX_MEMBER_MB" in done.stderr
    assert peak_mb < 300


def test_the_member_cap_can_be_raised_and_lowered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from idl.infer.runtime.package import check_zip

    package = _zip(tmp_path / "small.zip", {"rdf.yaml": b"a", "w.onnx": bytes(3 * 2**20)})
    check_zip(package)  # 3 MB: within the default cap
    monkeypatch.setenv("IDL_MAX_MEMBER_MB", "1")
    with pytest.raises(ModelError, match="the member w.onnx unpacks to 3 MB .* beyond 1 MB per file"):
        check_zip(package)
