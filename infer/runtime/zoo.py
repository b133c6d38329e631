"""Models named by bioimage.io id, DOI or URL, kept in a local cache so a lab PC runs them offline.

A MODEL that is not a local file or folder but looks like a bioimage.io id (``affable-shark``,
``affable-shark/1.2``), a DOI (``10.5281/zenodo.5764892``, ``doi:...``, ``https://doi.org/...``) or a URL
(of an ``rdf.yaml``/``bioimageio.yaml`` or a package ``.zip``) is resolved with bioimageio.spec (its
``BIOIMAGEIO_*`` settings choose the collection), downloaded with every file it names, checked like a
local package, and stored as one zip in the cache folder. Later calls find it there and need no
network.

The cache folder is ``--cache DIR``, else ``$IDL_MODEL_CACHE``, else the user cache folder
(``~/.cache/idl/models`` on Linux). Each package is ``<key>.zip`` with a ``<key>.json`` beside it
(source, name, version, size, time of download); the key is the id with ``/`` as ``@``
(``affable-shark@1.2``), ``doi-<DOI>`` or ``url-<hash>-<file name>``. A zip copied there by hand under
that name is used as it is.

``models:/NAME/VERSION`` is a version in an MLflow model registry (``$MLFLOW_TRACKING_URI`` names the
server; ``idl-train`` registers every validated package there): its package is downloaded by the
``registry`` function the caller passes (``idl-predict`` passes MLflow's, from the ``[registry]``
extra: this layer never imports mlflow) and cached as ``mlflow-SERVER-NAME@VERSION.zip``, a registered
version being immutable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idl.infer.core.errors import ModelError
from idl.infer.io.places import writable_folder
from idl.infer.runtime.package import check_zip, max_member_bytes, read_description

log = logging.getLogger("idl")

CACHE_VARIABLE = "IDL_MODEL_CACHE"

_URL = re.compile(r"^(https?|ftp)://", re.IGNORECASE)
_DOI = re.compile(r"^(doi:|https?://(dx\.)?doi\.org/)?(10\.\d{4,}/\S+)$", re.IGNORECASE)
# affable-shark, affable-shark/1.2, affable-shark/draft
_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)+(/[\w.]+)?$")
_REGISTRY = re.compile(r"^models:/([^/@]+)/(\d+)$")


def cache_folder(override: Path | None = None) -> Path:
    """Where downloaded packages are kept: ``override``, else ``$IDL_MODEL_CACHE``, else the user cache
    folder (``~/.cache/idl/models`` on Linux)."""
    if override is not None:
        return Path(override).expanduser()
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("idl")) / "models"


@dataclass(frozen=True)
class RemoteSource:
    """A model named by id, DOI or URL: what bioimageio.spec is given, and its cache key."""

    text: str  # as the user wrote it
    form: str  # "id", "doi", "url" or "registry" (models:/NAME/VERSION)
    source: str  # what is resolved: the id, the bare DOI, the URL or the models:/ URI
    server: str = ""  # registry: the MLflow tracking URI it is fetched from

    @property
    def key(self) -> str:
        """The file name (without ``.zip``) of this model in the cache."""
        if self.form == "id":
            return self.source.replace("/", "@")
        if self.form == "doi":
            return "doi-" + re.sub(r"[^\w.-]", "_", self.source)
        if registered := _REGISTRY.match(self.source):  # versions of the same name on two servers differ
            server = hashlib.sha256(self.server.encode()).hexdigest()[:8]
            name = re.sub(r"[^\w.-]", "_", registered.group(1))
            return f"mlflow-{server}-{name}@{registered.group(2)}"
        name = re.sub(r"[^\w.-]", "_", self.source.rstrip("/").rsplit("/", 1)[-1])[:40]
        return f"url-{hashlib.sha256(self.source.encode()).hexdigest()[:12]}-{name.removesuffix('.zip')}"


def remote_source(text: str) -> RemoteSource | None:
    """``text`` as a bioimage.io id, DOI, URL or MLflow registry version, or ``None`` when it is none of
    these."""
    if text.startswith("models:/"):
        if not _REGISTRY.match(text):
            raise ModelError(
                f"{text}: name an MLflow registry model as models:/NAME/VERSION, e.g. models:/nuclei-unet2d/3"
            )
        return RemoteSource(text, "registry", text, os.environ.get("MLFLOW_TRACKING_URI", ""))
    if doi := _DOI.match(text.strip()):
        return RemoteSource(text, "doi", doi.group(3))
    if _URL.match(text):
        return RemoteSource(text, "url", text)
    if _ID.match(text):
        return RemoteSource(text, "id", text)
    return None


def cached_path(remote: RemoteSource, cache: Path) -> Path:
    return cache / f"{remote.key}.zip"


# writes the package zip of a models:/NAME/VERSION URI to a path (idl.cli.registry.download_registered)
RegistryDownload = Callable[[str, Path], None]


def fetch(
    remote: RemoteSource, cache: Path, refresh: bool = False, registry: RegistryDownload | None = None
) -> Path:
    """The cached package zip of ``remote``; downloaded (and checked) first when it is not cached or
    ``refresh`` is set (a registry version by ``registry``). Offline and not cached: a
    :class:`ModelError` naming the cache folder."""
    target = cached_path(remote, cache)
    if target.is_file() and not refresh:
        log.info("%s: from the cache, %s", remote.text, target)
        return target
    if remote.form == "registry" and registry is None:
        raise ModelError(
            f"{remote.text}: models from an MLflow registry need mlflow: pip install 'idl-toolkit[registry]'"
        )
    writable_folder(cache, "model cache")
    partial = cache / f".{remote.key}.{os.getpid()}.part"
    try:
        if remote.form == "registry":
            assert registry is not None
            registry(remote.source, partial)
        else:
            _download(remote, partial, cache)
        check_zip(partial)
        descr, _ = read_description(partial)
    except ModelError as exc:
        partial.unlink(missing_ok=True)
        raise ModelError(f"{remote.text}: the downloaded package is not usable: {exc}") from exc
    except Exception as exc:
        partial.unlink(missing_ok=True)
        raise ModelError(_not_cached(remote, cache, exc)) from exc
    record = {
        "source": remote.text,
        "name": str(descr.name),
        "id": str(getattr(descr, "id", None) or ""),
        "version": str(getattr(descr, "version", None) or ""),
        "bytes": partial.stat().st_size,
        "downloaded": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    os.replace(partial, target)
    _write_json(target.with_suffix(".json"), record)
    log.info("%s: stored in the model cache as %s", remote.text, target)
    return target


def _not_cached(remote: RemoteSource, cache: Path, exc: Exception) -> str:
    reason = " ".join(str(exc).split())[:400]
    if remote.form == "registry":
        return (
            f"'{remote.text}' is not in the model cache ({cache}) and could not be fetched from the MLflow "
            f"registry at {os.environ.get('MLFLOW_TRACKING_URI') or 'the default tracking URI'}: {reason}\n"
            "Set MLFLOW_TRACKING_URI (or --tracking-uri) to the server the model was registered on."
        )
    return (
        f"'{remote.text}' is not in the model cache ({cache}) and could not be downloaded: {reason}\n"
        f"On a computer with internet, run 'idl-predict {remote.text} --download' and copy "
        f"{cached_path(remote, cache).name} from its cache into {cache} (or save the package zip from "
        f"bioimage.io there under that name, or pass the .zip file itself). Another cache folder: "
        f"--cache DIR or {CACHE_VARIABLE}."
    )


def _download(remote: RemoteSource, partial: Path, cache: Path) -> None:
    """Write the package of ``remote`` as a zip to ``partial``: a zip URL byte by byte, anything else
    through bioimageio.spec (the description and every file it names)."""
    if remote.form == "url" and remote.source.lower().split("?")[0].endswith(".zip"):
        _download_file(remote.source, partial)
        return
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec._internal._settings import settings

    if not os.environ.get("BIOIMAGEIO_CACHE_PATH"):
        settings.cache_path = cache / ".bioimageio"  # bioimageio.spec's file cache, inside ours
    save_bioimageio_package(remote.source, output_path=partial)


def _download_file(url: str, partial: Path) -> None:
    """Stream ``url`` into ``partial`` with a progress bar, refusing more than the package size cap."""
    import httpx
    from tqdm import tqdm

    cap = max_member_bytes()
    with httpx.stream("GET", url, follow_redirects=True, timeout=30) as response:
        response.raise_for_status()
        total = int(response.headers.get("content-length") or 0) or None
        with (
            open(partial, "wb") as file,
            tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], leave=False) as bar,
        ):
            for chunk in response.iter_bytes():
                file.write(chunk)
                bar.update(len(chunk))
                if file.tell() > cap:
                    raise ModelError(f"{url}: larger than {cap / 2**20:.0f} MB; refused.")


def _write_json(path: Path, record: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.part")
    partial.write_text(json.dumps(record, indent=2), encoding="utf-8")
    os.replace(partial, path)


@dataclass(frozen=True)
class CachedModel:
    """One package in the cache, as ``--list-cached`` shows it."""

    path: Path
    source: str
    name: str
    version: str
    megabytes: float
    downloaded: str


def cached_models(cache: Path) -> list[CachedModel]:
    """The packages in the cache folder, with what their ``.json`` records say (a zip copied in by hand
    has only its file name and size)."""
    if not cache.is_dir():
        return []
    found = []
    for zip_path in sorted(cache.glob("*.zip")):
        record: dict[str, Any] = {}
        if zip_path.with_suffix(".json").is_file():
            try:
                record = json.loads(zip_path.with_suffix(".json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                record = {}
        found.append(
            CachedModel(
                zip_path,
                str(record.get("source") or zip_path.stem.replace("@", "/")),
                str(record.get("name", "")),
                str(record.get("version", "")),
                zip_path.stat().st_size / 2**20,
                str(record.get("downloaded", "copied in")),
            )
        )
    return found
