"""``--dask``: the blocks of one volume predicted by Dask workers (a local cluster of processes, or a
running scheduler: dask-jobqueue's ``SLURMCluster``, Kubernetes, ...).

Each block is one Dask task: :func:`predict_block_task` loads the model once per worker, reads its block
with the halo from the input file, writes the block's own zarr chunks into the volume's block store and
records the block as done (:mod:`idl.infer.tiling.blocks`, :mod:`idl.infer.io.blocks`). Dask
recomputes the tasks of a worker that is lost; the store keeps finished blocks across whole restarts,
and the last step (mask, OME-Zarr metadata) is taken by the process that called Dask.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from idl.infer.core.errors import IdlError
from idl.infer.runtime.model import LoadedModel
from idl.infer.runtime.session import THREADS_VARIABLE
from idl.infer.tiling.blocks import BlockJob
from idl.infer.tiling.volume import block_step

log = logging.getLogger("idl")

MISSING = (
    "--dask needs Dask and its distributed scheduler, which are not installed: pip install "
    "'idl-toolkit[dask]' (or pip install dask distributed), or predict without --dask (--shard for job "
    "arrays)."
)

# the workers of --dask local:N without two of Dask's defaults that cost a worker predicting blocks its
# speed (docs/benchmarks.md): MALLOC_TRIM_THRESHOLD_ in the workers' environment (glibc then maps and
# unmaps every large array, each tile's among them, instead of reusing it: one process predicting 4
# blocks took 33 % more page faults and 5 % more time with it), and the statistical profiler, which
# samples each task's stack every 10 ms
LOCAL_WORKERS = {
    "distributed.nanny.pre-spawn-environ": {
        "OMP_NUM_THREADS": 1,
        "MKL_NUM_THREADS": 1,
        "OPENBLAS_NUM_THREADS": 1,
    },
    "distributed.worker.profile.enabled": False,
}

_MODELS: dict[tuple[str, str, str], LoadedModel] = {}  # per worker process: each model loaded once


@dataclass(frozen=True)
class Address:
    """Where the workers are: a local cluster of ``workers`` processes (``local`` or ``local:N``), or
    the ``scheduler`` of a running cluster (``tcp://host:8786``, or a scheduler file)."""

    workers: int = 0
    scheduler: str = ""


def parse_address(text: str) -> Address:
    """``local``, ``local:N`` or a scheduler's address; raises :class:`IdlError` naming the forms."""
    text = text.strip()
    if text == "local":
        return Address(workers=max(1, os.cpu_count() or 1))
    if text.startswith("local:"):
        count = text.partition(":")[2]
        if not count.isdigit() or int(count) < 1:
            raise IdlError(f"--dask {text}: give local:N with N >= 1 worker processes (e.g. local:4).")
        return Address(workers=int(count))
    if not text:
        raise IdlError("--dask: give local, local:N or the address of a Dask scheduler (tcp://host:8786).")
    return Address(scheduler=text)


def predict_block_task(
    model: str, device: str, threads: int, job: BlockJob, index: int, by: str, precision: str = "fp32"
) -> int:
    """One Dask task: ``job``'s step for block ``index`` (predicted and recorded done, or its part of
    the last step); returns the index. ``precision``: the model's graph (``--precision``; ``auto`` is
    decided by each worker's CPU)."""
    from idl.infer.service.load import load_model

    os.environ[THREADS_VARIABLE] = str(threads)
    key = (model, device, precision)
    if key not in _MODELS:
        _MODELS[key] = load_model(model, device, precision=precision)
    block_step(_MODELS[key], job, index, by)
    return index


def peak_memory() -> int:
    """This process's peak resident memory, bytes (Linux reports kilobytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@dataclass
class DaskBlocks:
    """A :data:`~idl.infer.tiling.volume.BlockRunner` on Dask: the model (its path, as the workers
    load it), the ONNX Runtime device and threads of each worker, where the workers are. ``task``
    replaces :func:`predict_block_task` (tests inject failures with it). The cluster is started once
    (:meth:`start`, in the background while the caller prepares the volume) and serves every step
    until :meth:`close`, which logs each worker's peak resident memory (bytes, in ``peaks``)."""

    address: Address
    model: str
    device: str = "auto"
    threads: int = 1
    progress: bool = True
    task: Callable[..., int] = predict_block_task
    peaks: dict[str, int] | None = None
    precision: str = "fp32"  # the model's graph on the workers (--precision)
    _client: Any = field(default=None, repr=False)
    _cluster: Any = field(default=None, repr=False)
    _starting: threading.Thread | None = field(default=None, repr=False)
    _failed: BaseException | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start the cluster (a local one: its worker processes) and connect, in the background."""
        if self._starting is None and self._client is None:
            self._starting = threading.Thread(target=self._connect, name="idl-dask-start", daemon=True)
            self._starting.start()

    def _connect(self) -> None:
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError as exc:
            self._failed = IdlError(MISSING)
            self._failed.__cause__ = exc
            return
        try:
            for name in ("distributed", "distributed.scheduler", "distributed.core", "distributed.nanny"):
                logging.getLogger(name).setLevel(
                    logging.WARNING
                )  # their INFO lines are the cluster's chatter
            where = self.address.scheduler
            if self.address.workers:
                with dask.config.set(LOCAL_WORKERS):
                    self._cluster = LocalCluster(
                        n_workers=self.address.workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                        silence_logs=logging.ERROR,
                    )
                self._client = Client(self._cluster)
            elif Path(where).is_file():  # a scheduler file (dask-jobqueue, dask-mpi)
                self._client = Client(scheduler_file=where)
            else:
                self._client = Client(where)
        except BaseException as exc:  # handed to the caller by _connected
            self._failed = exc
            if self._cluster is not None:  # started, but no client: its workers are stopped here
                self._cluster.close()
                self._cluster = None

    def _connected(self) -> Any:
        self.start()
        if self._starting is not None:
            self._starting.join()
            self._starting = None
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed
        return self._client

    def __call__(self, job: BlockJob, todo: list[int]) -> None:
        if not todo:
            return
        client = self._connected()
        from distributed import as_completed

        log.info(
            "Dask: %s of %d block(s) of %s on %d worker(s)",
            job.step,
            len(todo),
            job.source.name,
            len(client.scheduler_info()["workers"]),
        )
        # in the order given (the most expensive blocks first), as priorities: Dask's own order for
        # independent tasks is not the order of submission
        futures = [
            client.submit(
                self.task,
                self.model,
                self.device,
                self.threads,
                job,
                index,
                "dask",
                precision=self.precision,
                pure=False,
                priority=len(todo) - rank,
            )
            for rank, index in enumerate(todo)
        ]
        bar = tqdm(total=len(todo), unit="block", desc=job.step, disable=None if self.progress else True)
        try:
            for future in as_completed(futures):
                try:
                    future.result()
                except IdlError:
                    raise
                except Exception as exc:  # a worker's error, or a task that killed its workers
                    raise IdlError(f"Dask could not {job.step} a block of {job.source}: {exc}") from exc
                bar.update()
        except BaseException:
            client.cancel(futures)  # no block of a failed step goes on writing into its store
            raise
        finally:
            bar.close()
        self.peaks = {str(k): int(v) for k, v in client.run(peak_memory).items()}

    def close(self) -> None:
        """Log the workers' peak memory, disconnect, and stop a local cluster."""
        if self._starting is not None:
            self._starting.join()
            self._starting = None
        if self.peaks:
            log.info(
                "Dask workers' peak memory: %s MB",
                ", ".join(f"{peak / 2**20:.0f}" for peak in sorted(self.peaks.values())),
            )
        client, cluster, self._client, self._cluster = self._client, self._cluster, None, None
        try:
            if client is not None:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()

    def __enter__(self) -> DaskBlocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
