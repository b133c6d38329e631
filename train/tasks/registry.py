"""The tasks idl can train, by the name users give with ``--task``; :func:`register` adds one
(importing :mod:`idl.train.tasks` registers the built-in ones)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from idl.infer.core.errors import ConfigError

if TYPE_CHECKING:
    from idl.train.tasks.base import Trainer

_TRAINERS: dict[str, Trainer] = {}


def register(trainer: Trainer) -> Trainer:
    """Make ``trainer`` the one that trains ``trainer.task`` (a later registration replaces one)."""
    if not trainer.task:
        raise ValueError(f"{type(trainer).__name__}: a trainer needs a task name")
    _TRAINERS[trainer.task] = trainer
    return trainer


def trainer_for(task: str) -> Trainer:
    """The trainer of ``task``; raises :class:`ConfigError` naming the known tasks."""
    if task not in _TRAINERS:
        raise ConfigError(f"task '{task}' cannot be trained; known: {', '.join(_TRAINERS)}")
    return _TRAINERS[task]


def trainer_names() -> tuple[str, ...]:
    """The tasks that can be trained, in registration order."""
    return tuple(_TRAINERS)


def all_trainers() -> tuple[Trainer, ...]:
    """Every registered trainer (for what concerns all of them: loss names, model file names)."""
    return tuple(_TRAINERS.values())
