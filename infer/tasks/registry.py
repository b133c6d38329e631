"""The tasks idl knows on the inference side, by kind; :func:`register` adds one."""

from __future__ import annotations

from idl.infer.core.errors import ModelError
from idl.infer.core.model_info import ModelInfo
from idl.infer.runtime.iospec import IOSpec
from idl.infer.runtime.model import LoadedModel
from idl.infer.tasks.base import Task

_TASKS: dict[str, Task] = {}
PACKAGE_KIND = "package"  # a package made elsewhere, output written as it is
CLASSIFIER_KIND = "classification"
TENSORS_KIND = "tensors"  # a package with several tensors (or outputs of another size), run as it is


def register(task: Task) -> Task:
    """Make ``task`` the one that serves models of ``task.kind`` (a later registration replaces an
    earlier one)."""
    if not task.kind:
        raise ValueError(f"{type(task).__name__}: a task needs a kind")
    _TASKS[task.kind] = task
    return task


def task_named(name: str) -> Task:
    """The task serving kind ``name``, or the first registered for the task users call ``name``."""
    if name in _TASKS:
        return _TASKS[name]
    for task in _TASKS.values():
        if task.task == name:
            return task
    names = sorted({t.task for t in _TASKS.values() if t.task})
    raise ModelError(f"no task '{name}' is known; known: {', '.join(names)}.")


def task_for(model: LoadedModel) -> Task:
    """The task of a loaded model: its kind for idl models; for other packages, the multi-tensor runner
    when they have several tensors, classification when the output has no space axes (one value per
    class), else their output as it is."""
    if model.info is not None:
        return task_named(model.info.kind)
    if not model.tensors.simple:
        return _TASKS[TENSORS_KIND]
    spatial = any(a in model.io.output_axes for a in "zyx")
    return _TASKS[PACKAGE_KIND if spatial else CLASSIFIER_KIND]


def kind_of(info: ModelInfo) -> Task:
    """The task serving an idl model (what the loaders ask for its IOSpec)."""
    return task_named(info.kind)


def io_for_info(info: ModelInfo) -> IOSpec:
    """How to feed an idl model and read its output, as its task describes it."""
    return kind_of(info).io_spec(info)


def out_channels(info: ModelInfo) -> int:
    """Channels of an idl model's graph output, as its task counts them."""
    return kind_of(info).out_channels(info)


def task_names() -> tuple[str, ...]:
    """The task names users can give (--task), in registration order."""
    return tuple(dict.fromkeys(t.task for t in _TASKS.values() if t.task))
