"""GPU training switches, each with its CPU fallback: mixed precision, data-loader workers and pinned
memory, resolved from the config and the device in one place.

- Mixed precision (``--amp``): on CUDA ``auto`` is bfloat16 where the GPU supports it (no gradient
  scaler needed: bf16 keeps float32's exponent range), else float16 with a gradient scaler. On a CPU
  training stays float32: autocast there would only slow the convolutions of a lab PC.
- Workers (``--workers``): on CUDA batches are made in worker processes while the GPU computes; on a
  CPU they would take cores from the training itself (data waits were under 1 % of a CPU run,
  docs/benchmarks.md), so 0 unless asked.
- Pinned memory: page-locked batches copy to the GPU asynchronously; meaningless without a GPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Protocol

import torch

log = logging.getLogger("idl")

MAX_AUTO_WORKERS = 4


@dataclass(frozen=True)
class Acceleration:
    """What the training loop uses (the :class:`~idl.train.loop.LoopSettings` fields of the same names)."""

    amp: str  # "bf16", "fp16" or "off"
    workers: int
    pin_memory: bool


class _Requested(Protocol):
    amp: str
    workers: int | None


def acceleration(
    config: _Requested, device: torch.device, bf16: bool | None = None, cpus: int | None = None
) -> Acceleration:
    """The switches for ``device``; ``bf16`` (whether the GPU computes in bfloat16) and ``cpus`` are
    asked of torch and the OS unless given (tests give them)."""
    cuda = device.type == "cuda"
    if not cuda:
        if config.amp in ("bf16", "fp16"):
            log.warning("--amp %s needs a CUDA GPU; training on %s in float32", config.amp, device)
        return Acceleration("off", config.workers or 0, False)
    if bf16 is None:
        bf16 = torch.cuda.is_bf16_supported()
    amp = config.amp
    if amp == "auto":
        amp = "bf16" if bf16 else "fp16"
    elif amp == "bf16" and not bf16:
        log.warning("this GPU does not compute in bfloat16: --amp fp16 (with a gradient scaler) instead")
        amp = "fp16"
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = config.workers if config.workers is not None else min(MAX_AUTO_WORKERS, max(cpus - 1, 0))
    return Acceleration(amp, workers, True)
