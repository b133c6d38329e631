"""Training in several processes with torch.distributed, as ``torchrun`` starts them.

``torchrun --nproc_per_node N idl-train PROJECT ...`` (or with ``--nnodes``/``--rdzv-endpoint`` for
several machines) sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in every process; :func:`from_environment`
reads them and :meth:`Ranks.start` joins the process group (NCCL on GPUs, gloo on CPUs). Without
torchrun there is one process and every method here does nothing.

The split keeps a distributed run equal to a single-process run with the same global batch: the plan's
batch size is the global batch, every optimizer step's batch is the single-process one cut into
``world`` equal parts (:func:`share_indices`), and DistributedDataParallel averages the gradients.
Rank 0 alone validates (the score is broadcast, so every rank stops at the same epoch), saves
checkpoints, logs to MLflow, exports, evaluates and packages.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from idl.infer.core.errors import IdlError

log = logging.getLogger("idl")

T = TypeVar("T")

# rank 0 may export, evaluate and validate a package while the others wait for it at the end
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local: int = 0  # the rank on this machine: which GPU it uses

    @property
    def main(self) -> bool:
        """Rank 0: the one that logs, checkpoints, exports, evaluates and packages."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def start(self, device: torch.device) -> torch.device:
        """Join the process group (NCCL on CUDA, gloo otherwise); returns this rank's device."""
        if not self.active:
            return device
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", self.local)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, rank=self.rank, world_size=self.world, timeout=TIMEOUT)
            log.info("process %d of %d joined (%s, %s)", self.rank + 1, self.world, backend, device)
        return device

    def stop(self) -> None:
        if self.active:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def local_batch(self, batch_size: int) -> int:
        """Each rank's part of a global batch; refuses a batch the ranks cannot share equally."""
        if batch_size % self.world:
            raise IdlError(
                f"the batch size {batch_size} cannot be split over {self.world} processes: pass --batch-size "
                f"with a multiple of {self.world} (the global batch; each process takes an equal part)."
            )
        return batch_size // self.world

    def wrap(self, model: nn.Module, device: torch.device, unused_parameters: bool = False) -> nn.Module:
        """The network DistributedDataParallel trains (gradients averaged over ranks), or ``model``."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused_parameters)

    def mean(self, value: float) -> float:
        """``value`` averaged over the ranks (each rank's mean loss over an equal share of samples)."""
        if not self.active:
            return value
        import torch.distributed as dist

        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total)
        return float(total.item()) / self.world

    def from_main(self, compute: Callable[[], T]) -> T:
        """``compute()`` run on rank 0 alone, its result given to every rank."""
        if not self.active:
            return compute()
        import torch.distributed as dist

        box: list[Any] = [compute() if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def average_buffers(self, model: nn.Module) -> None:
        """Average floating-point buffers (batch-norm statistics each rank re-estimated on its own
        batches) so every rank holds the same network."""
        if not self.active:
            return
        import torch.distributed as dist

        for buffer in model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer.div_(self.world)

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()


SINGLE = Ranks()


def from_environment(environ: dict[str, str] | None = None) -> Ranks:
    """The ranks ``torchrun`` set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one process without them."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        message = f"RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (torchrun sets them): {exc}"
        raise IdlError(message) from exc
    if world < 1 or not 0 <= rank < world:
        raise IdlError(f"RANK {rank} does not fit WORLD_SIZE {world}: start the processes with torchrun.")
    return Ranks(rank, world, local)


def share_indices(length: int, batch_size: int, ranks: Ranks) -> list[int]:
    """The items of an epoch of ``length`` items that ``ranks.rank`` takes: its equal part of every
    global batch, in order, so the ranks' batches of a step together are the single-process batch.
    With several ranks a last incomplete global batch is left out: every rank must take as many
    steps as the others."""
    part = ranks.local_batch(batch_size)
    first = ranks.rank * part
    end = length - length % batch_size if ranks.active else length
    return [s + first + i for s in range(0, end, batch_size) for i in range(part) if s + first + i < end]
