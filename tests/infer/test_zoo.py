"""Models by bioimage.io id and URL: fetched from a collection (a local HTTP server here) into the
model cache, then run from the cache with the server gone."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from idl.cli import predict as predict_cli
from idl.infer.io.images import read_image, write_tiff
from idl.infer.runtime.zoo import remote_source

pytest.importorskip("bioimageio.spec")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(folder: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture
def collection(small_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A collection with the package as ``tiny-conv`` and ``tiny-conv/1.1`` and as a zip file, served on
    127.0.0.1; bioimageio.spec and the model cache are pointed at it."""
    from bioimageio.spec._internal._settings import settings
    from bioimageio.spec._internal.io_utils import get_id_map

    site = tmp_path / "site"
    for name in ("tiny-conv", "tiny-conv/1.1"):
        with zipfile.ZipFile(small_package) as archive:
            archive.extractall(site / name / "files")
    (site / "zips").mkdir()
    shutil.copy(small_package, site / "zips" / "tiny.zip")
    server, url = _serve(site)
    # DOIs resolve through the collection's id map (the legacy Zenodo DOIs of the zoo)
    rdf = site / "tiny-conv" / "files" / "rdf.yaml"
    entry = {
        "source": f"{url}/tiny-conv/files/rdf.yaml",
        "sha256": hashlib.sha256(rdf.read_bytes()).hexdigest(),
    }
    (site / "id_map.json").write_text(json.dumps({"10.5281/zenodo.5764892": entry}))
    get_id_map.cache_clear()
    monkeypatch.setenv("IDL_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(settings, "collection_http_pattern", url + "/{bioimageio_id}/files/rdf.yaml")
    monkeypatch.setattr(settings, "id_map", url + "/id_map.json")
    monkeypatch.setattr(settings, "cache_path", tmp_path / "spec-cache")
    yield server, url
    get_id_map.cache_clear()
    if server.poll() is None:
        server.kill()


def _predict(model: str, image: Path, out: Path, *more: str) -> np.ndarray:
    result = CliRunner().invoke(predict_cli.main, [model, str(image), "--out", str(out), "--quiet", *more])
    assert result.exit_code == 0, result.output
    return read_image(out / image.name)


def test_zoo_ids_and_urls_run_from_the_cache_once_the_server_is_gone(
    collection, small_package: Path, tmp_path: Path
) -> None:
    server, url = collection
    image = tmp_path / "cells.tif"
    write_tiff(image, np.random.default_rng(0).random((40, 56)).astype(np.float32))
    local = _predict(str(small_package), image, tmp_path / "local")

    by_id = _predict("tiny-conv", image, tmp_path / "id")
    by_version = _predict("tiny-conv/1.1", image, tmp_path / "version")
    by_rdf_url = _predict(f"{url}/tiny-conv/files/rdf.yaml", image, tmp_path / "rdf-url")
    by_zip_url = _predict(f"{url}/zips/tiny.zip", image, tmp_path / "zip-url")
    by_doi = _predict("doi:10.5281/zenodo.5764892", image, tmp_path / "doi")
    for got in (by_id, by_version, by_rdf_url, by_zip_url, by_doi):
        assert got.shape == local.shape == (2, 40, 56)
        assert np.max(np.abs(got - local)) == 0.0
    cache = tmp_path / "cache"
    assert {p.name for p in cache.glob("*.zip")} >= {"tiny-conv.zip", "tiny-conv@1.1.zip"}
    assert len(list(cache.glob("url-*.zip"))) == 2 and (cache / "doi-10.5281_zenodo.5764892.zip").is_file()

    os.kill(server.pid, signal.SIGTERM)  # the network is gone
    server.wait(timeout=10)
    again = _predict("tiny-conv", image, tmp_path / "again")
    assert np.max(np.abs(again - local)) == 0.0
    listing = CliRunner().invoke(predict_cli.main, ["--list-cached"])
    assert listing.exit_code == 0 and "5 package(s)" in listing.output
    assert "tiny-conv/1.1" in listing.output and "small package" in listing.output

    missing = CliRunner().invoke(predict_cli.main, ["other-model", "--info"])
    assert missing.exit_code != 0
    assert f"'other-model' is not in the model cache ({cache})" in missing.output
    assert "idl-predict other-model --download" in missing.output and "other-model.zip" in missing.output

    # a zip copied into the cache by hand under the documented name is used as it is
    shutil.copy(small_package, cache / "other-model.zip")
    assert np.max(np.abs(_predict("other-model", image, tmp_path / "copied") - local)) == 0.0


def test_download_refreshes_and_a_broken_download_leaves_nothing(collection, tmp_path: Path) -> None:
    server, url = collection
    result = CliRunner().invoke(predict_cli.main, ["tiny-conv", "--download"])
    assert result.exit_code == 0, result.output
    assert "cached as" in result.output and (tmp_path / "cache" / "tiny-conv.zip").is_file()
    (tmp_path / "site" / "zips" / "broken.zip").write_bytes(b"<html>not found</html>")
    broken = CliRunner().invoke(predict_cli.main, [f"{url}/zips/broken.zip", "--download"])
    assert broken.exit_code != 0 and "not a complete zip archive: it is an HTML page" in broken.output
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.suffix == ".zip") == ["tiny-conv.zip"]
    assert not list((tmp_path / "cache").glob(".*.part"))


@pytest.mark.parametrize(
    "text, kind, key",
    [
        ("affable-shark", "id", "affable-shark"),
        ("affable-shark/1.2", "id", "affable-shark@1.2"),
        ("10.5281/zenodo.5764892", "doi", "doi-10.5281_zenodo.5764892"),
        ("doi:10.5281/zenodo.5764892", "doi", "doi-10.5281_zenodo.5764892"),
        ("https://doi.org/10.5281/zenodo.5764892", "doi", "doi-10.5281_zenodo.5764892"),
    ],
)
def test_remote_sources_and_their_cache_names(text: str, kind: str, key: str) -> None:
    remote = remote_source(text)
    assert remote is not None and (remote.form, remote.key) == (kind, key)


def test_local_names_are_not_remote() -> None:
    assert remote_source("model.zip") is None and remote_source("PROJECT/model") is None
    url = remote_source("https://example.org/models/unet.zip")
    assert url is not None and url.form == "url" and url.key.startswith("url-") and url.key.endswith("-unet")


def test_registry_versions_are_named_and_cached_per_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from idl.infer.core.errors import ModelError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://lab-server:5000")
    remote = remote_source("models:/nuclei-unet2d/3")
    assert remote is not None and remote.form == "registry"
    server = hashlib.sha256(b"http://lab-server:5000").hexdigest()[:8]
    assert remote.key == f"mlflow-{server}-nuclei-unet2d@3"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://other:5000")
    assert remote_source("models:/nuclei-unet2d/3").key != remote.key
    for wrong in ("models:/nuclei-unet2d", "models:/nuclei-unet2d/latest", "models:/a@champion"):
        with pytest.raises(ModelError, match="name an MLflow registry model as models:/NAME/VERSION"):
            remote_source(wrong)


def test_registry_models_without_mlflow_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else found(name, *a)
    )
    monkeypatch.setenv("IDL_MODEL_CACHE", str(tmp_path))
    result = CliRunner().invoke(predict_cli.main, ["models:/nuclei-unet2d/3", "--info"])
    assert result.exit_code != 0
    assert "need mlflow: pip install 'idl-toolkit[registry]'" in result.output
    assert not list(tmp_path.iterdir())  # nothing half-downloaded
