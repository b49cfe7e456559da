"""A small self-supervised loop for the per-particle backbone on subsampled neighbour clouds.

The shared Lightning trainer builds full-structure graphs; here each step draws a random subsample
of environments (from idealized crystals and/or trajectory frames) and applies one of the cloud
pretext tasks of :mod:`atomssl.task.cloud` in turn, which keeps a step cheap on a CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..representation import build_backbone
from ..task import build_task
from ._clouds import cloud_batch

DEFAULT_BACKBONE = {
    "name": "gaa",
    "k": 12,
    "width": 16,
    "n_blocks": 1,
    "rank": 2,
    "hidden_factor": 1.0,
    "species_dim": 8,
    "dropout": 0.0,
    "normalize": None,
}
DEFAULT_TASKS = ("noisy_bond", "nearest_bond", "cloud_denoise", "shift")


@dataclass
class PretrainSettings:
    backbone: dict = field(default_factory=lambda: dict(DEFAULT_BACKBONE))
    tasks: tuple = DEFAULT_TASKS
    steps: int = 300
    batch: int = 128
    lr: float = 2e-3
    seed: int = 0


def pretrain_clouds(
    clouds: np.ndarray,
    settings: PretrainSettings | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
):
    """Train a backbone on ``clouds`` (n, k, 3) with the pretext tasks in rotation.

    Returns ``(backbone, tasks, history)``; ``history`` lists per-step task name, loss and baseline.
    """
    s = settings or PretrainSettings()
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    backbone = build_backbone(dict(s.backbone))
    # the cloud pretext tasks corrupt exactly k bonds per cloud: a cloud holding a whole tied shell
    # (frame_clouds; a near-tie of noisy training environments) trains on its k nearest, sorted first
    clouds = np.asarray(clouds)[:, : int(getattr(backbone, "k", np.asarray(clouds).shape[1]))]
    tasks = {name: build_task({"name": name, "unit": "angstrom"}, backbone) for name in s.tasks}
    params = list(backbone.parameters()) + [p for t in tasks.values() for p in t.parameters()]
    opt = torch.optim.Adam(params, lr=s.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, s.steps))
    backbone.train()
    history = []
    names = list(tasks)
    for step in range(s.steps):
        name = names[step % len(names)]
        idx = rng.choice(len(clouds), size=min(s.batch, len(clouds)), replace=False)
        out = tasks[name].step(cloud_batch(clouds[idx]), backbone, generator=gen)
        opt.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        sched.step()
        rec = {
            "step": step,
            "task": name,
            "loss": float(out["loss"].detach()),
            "baseline": float(out.get("baseline", np.nan)),
        }
        history.append(rec)
        if progress is not None:
            progress(step + 1, s.steps, rec)
    backbone.eval()
    return backbone, tasks, history


def save_pretrained(path: str | Path, backbone, tasks, history, settings: PretrainSettings) -> Path:
    """Write an atomssl checkpoint (loadable with :func:`atomssl.train.load_backbone`)."""
    from ..train._checkpoint import save_checkpoint

    last = {}
    for rec in history[-4 * max(1, len(tasks)) :]:
        last.setdefault(rec["task"], []).append(rec["loss"])
    metrics = {f"{k}/loss": float(np.mean(v)) for k, v in last.items()}
    return save_checkpoint(
        path,
        backbone,
        config={"order_pretrain": settings.__dict__, "time": time.time()},
        tasks=tasks,
        metrics=metrics,
    )
