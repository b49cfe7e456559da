"""Tasks: pretext (self-supervised) and downstream heads, each owning corruption, head, loss, metrics."""

from ._base import TASKS, Task, build_task, register_task

__all__ = ["TASKS", "Task", "build_task", "register_task"]

# Concrete tasks register themselves on import.
for _mod in ("denoise", "mask", "cloud", "downstream"):
    try:
        __import__(f"{__name__}.{_mod}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__name__}.{_mod}":
            raise
