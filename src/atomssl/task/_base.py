"""The one interface every task (pretext or downstream) implements.

A task owns its corruption of the input (noise, masks), its head(s), its loss and metrics, and
reports a trivial baseline beside its loss (predict zero / the mean / the majority class /
chance), so every number has a yardstick.

``task.step(batch, backbone)`` returns a dict with at least ``loss`` (a scalar tensor with
grad) and ``baseline`` (the same loss for the trivial predictor, no grad), plus any metrics.
Tasks do not own the backbone: several tasks can share one (multi-task pretraining), and a
backbone trained by one task loads into any other task or a downstream head.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn


class Task(nn.Module):
    """Base class of the task heads (pretext and downstream) trained on a backbone's outputs.

    Subclasses are filed with :func:`register_task`, list the backbone outputs they need in
    ``requires`` (checked here, at construction) and implement ``step``, which returns a dict of
    tensors with at least ``"loss"``.
    """

    name: ClassVar[str] = "task"
    #: backbone outputs this task needs ("vector", "edge", "edge_vector"); checked at build time
    requires: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, backbone, **config: Any):
        super().__init__()
        self.config: dict[str, Any] = {"name": self.name, **config}
        missing = [r for r in self.requires if not _provides(backbone, r)]
        if missing:
            from ..errors import ConfigError

            raise ConfigError(
                f"task {self.name!r} needs backbone outputs {missing}, which backbone {backbone.name!r} does not provide"
            )

    def step(
        self, batch, backbone, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def _provides(backbone, what: str) -> bool:
    return bool(
        {
            "vector": getattr(backbone, "provides_vectors", False),
            "edge": getattr(backbone, "provides_edges", False),
            "edge_vector": getattr(backbone, "provides_edge_vectors", False),
        }.get(what, False)
    )


TASKS: dict[str, type[Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: file a :class:`Task` subclass in :data:`TASKS` under ``name`` (and set its
    ``name``), so that :func:`build_task` builds it from ``{"name": name, ...}``."""

    def wrap(cls: type[Task]) -> type[Task]:
        cls.name = name
        TASKS[name] = cls
        return cls

    return wrap


def build_task(config: dict[str, Any] | str, backbone) -> Task:
    """Build a task head for ``backbone`` from ``{"name": ..., **options}`` (or just a name); a
    ``weight`` (the trainer's loss weight) is ignored. Unknown names and options: ConfigError."""
    from ..errors import ConfigError

    if isinstance(config, str):
        config = {"name": config}
    config = dict(config)
    name = config.pop("name", None)
    config.pop("weight", None)
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; available: {sorted(TASKS)}")
    try:
        return TASKS[name](backbone, **config)
    except TypeError as exc:
        raise ConfigError(f"task {name!r}: bad option: {exc}") from None
