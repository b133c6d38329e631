"""Run a command as a child process and report its wall time and peak resident memory (Linux)."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Measurement:
    label: str
    seconds: float
    peak_mb: float


def measure(label: str, command: list[str]) -> Measurement:
    """Wall time and the child's own peak RSS (``ru_maxrss`` from ``wait4``), failing loudly."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{label} failed ({proc.returncode}):\n{out}\n{err}")
    return Measurement(label, seconds, usage.ru_maxrss / 1024)
