"""MLflow logging: parameters, per-epoch metrics and artifacts of every run.

Default store: ``sqlite:///PROJECT/mlflow.db`` with artifacts under ``PROJECT/mlruns`` (MLflow 3 no
longer starts on a plain ``./mlruns`` file store). ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` point
runs at any other store or server (a lab's shared ``mlflow server``: README, "A shared tracking server").

Every validated bioimage.io package is also registered in the store's model registry
(:meth:`Tracker.register`): a new version of the model's name, whose files are the package alone, with
the test metrics and the task as tags, so ``idl-predict models:/NAME/VERSION`` runs it.

A full disk under the store (SQLite's "database or disk is full") or the artifacts is raised as
:class:`~idl.infer.io.images.DiskFull`, naming the file; ending a run that failed never hides why it
failed (:meth:`Tracker.end`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from idl.infer.io.images import DiskFull, disk_full, is_disk_full

log = logging.getLogger("idl")

EXPERIMENT = "idl"
REGISTERED_FOLDER = "package"  # the run's artifact folder a registered version points at
# room a SQLite store needs to go on: MLflow's tables take 0.9 MB in a new one, a run's rows far less
STORE_ROOM = 2**20
SQLITE = "sqlite:///"


def default_tracking_uri(project: Path) -> str:
    return f"sqlite:///{(project / 'mlflow.db').resolve()}"


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` store, or None for any other store."""
    return Path(uri[len(SQLITE) :]) if uri.startswith(SQLITE) else None


def _size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@contextlib.contextmanager
def store_space(uri: str, artifact: Path | None = None) -> Iterator[None]:
    """Raise a full disk met by MLflow as :class:`DiskFull`: logging ``artifact``, the file it names
    and the artifact's size; else the store's database (MLflow wraps SQLite's error, which names no
    file)."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, DiskFull) or not is_disk_full(exc):
            raise
        if artifact is not None:
            full = disk_full(exc)
            raise DiskFull(full.filename if full else None, _size(artifact)) from exc
        raise DiskFull(_sqlite_file(uri), STORE_ROOM) from exc


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``a.b.c`` keys, with characters MLflow refuses in keys (e.g. a class named
    ``CD4+``) replaced by ``_``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = prefix + re.sub(r"[^\w\-. /]", "_", str(key))
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class Tracker:
    """A thin wrapper over one MLflow run (created or resumed by id)."""

    def __init__(self, project: Path, tracking_uri: str | None, run_id: str | None = None) -> None:
        import mlflow

        for noisy in ("alembic", "mlflow"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # its traceback of every database error, which is raised to us anyway (a full disk: nine times)
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        self.mlflow = mlflow
        self._environment = os.environ.get("MLFLOW_TRACKING_URI")  # restored by end()
        explicit = tracking_uri or self._environment
        uri = explicit or default_tracking_uri(project)
        self.uri = uri
        mlflow.set_tracking_uri(uri)  # note: this also sets MLFLOW_TRACKING_URI in os.environ
        with store_space(uri):
            experiment = mlflow.get_experiment_by_name(EXPERIMENT)
            if experiment is None:
                location = None if explicit else (project / "mlruns").resolve().as_uri()
                experiment_id = mlflow.create_experiment(EXPERIMENT, artifact_location=location)
            else:
                experiment_id = experiment.experiment_id
            self.run = mlflow.start_run(
                run_id=run_id,
                experiment_id=None if run_id else experiment_id,
                run_name=None if run_id else project.resolve().name,
            )
        self.run_id = self.run.info.run_id
        log.info("MLflow run %s in %s", self.run_id, uri)

    def log_params(self, params: dict[str, Any]) -> None:
        flat = {k: str(v)[:500] for k, v in _flatten(params).items()}
        with store_space(self.uri):
            existing = self.mlflow.get_run(self.run_id).data.params
            self.mlflow.log_params({k: v for k, v in flat.items() if k not in existing})
            # MLflow parameters cannot change; settings changed on --resume are recorded as tags instead
            changed = {k: v for k, v in flat.items() if k in existing and existing[k] != v}
            if changed:
                log.info(
                    "resumed with changed settings: %s", ", ".join(f"{k}={v}" for k, v in changed.items())
                )
                self.mlflow.set_tags({f"resumed.{k}": v for k, v in changed.items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        with store_space(self.uri):
            self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        with store_space(self.uri, path):
            if path.is_dir():
                self.mlflow.log_artifacts(str(path), artifact_path=folder or path.name)
            elif path.is_file():
                self.mlflow.log_artifact(str(path), artifact_path=folder)

    def register(self, package: Path, name: str, metrics: dict[str, Any], tags: dict[str, str]) -> str:
        """Log ``package`` into the run's ``package/`` folder and register that folder as a new version
        of the registered model ``name`` (created when new); returns the version number."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        self.log_artifact(package, REGISTERED_FOLDER)
        client = MlflowClient()
        try:
            client.create_registered_model(name, description="bioimage.io packages written by idl-train")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        scores = {f"test_{k}": f"{v:.6g}" for k, v in metrics.items() if isinstance(v, float)}
        version = client.create_model_version(
            name,
            f"{self.run.info.artifact_uri}/{REGISTERED_FOLDER}",
            run_id=self.run_id,
            tags={**tags, **scores, "package": package.name},
            description=f"{package.name} from run {self.run_id}",
        )
        log.info("registered as models:/%s/%s in %s", name, version.version, self.uri)
        return str(version.version)

    def end(self, status: str = "FINISHED") -> None:
        """End the run and undo ``set_tracking_uri``'s change of the environment, so the next run
        (e.g. of another project in the same process) goes to its own store.

        A run that failed (any other ``status``) is ended as well as the store allows: the store
        may be what failed (a full disk, a database left locked by Ctrl-C), and the error that ended
        the run, not this one, is what the user must see. Such a run stays RUNNING, with a warning."""
        try:
            with store_space(self.uri):
                self.mlflow.end_run(status=status)
        except Exception as exc:
            if status == "FINISHED":
                raise
            log.warning("MLflow run %s stays RUNNING in %s: %s", self.run_id, self.uri, _first_line(exc))
        finally:
            if self._environment is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = self._environment


def _first_line(exc: BaseException) -> str:
    """The first line of an error's text (MLflow's SQL errors run over many)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
