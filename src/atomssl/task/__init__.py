"""Tasks: pretext (self-supervised) and downstream heads, each owning corruption, head, loss, metrics."""

from ._base import TASKS, Task, build_task, register_task

__all__ = ["TASKS", "Task", "build_task", "register_task"]

# Concrete tasks register themselves on import: imported by name, so a broken module fails
# loudly instead of silently vanishing from the registry.
from . import cloud, denoise, downstream, mask, spectrum  # noqa: E402,F401
