"""The LightningModule of ``atomssl order pretrain``: a per-particle backbone and the cloud pretext
tasks of :mod:`atomssl.task.cloud`, one task a step in rotation, on random subsamples of
per-particle neighbour clouds.

A step's batch is a :func:`~atomssl.order.cloud_batch` of ``batch`` clouds (the training loader
deals every cloud once per epoch, in an order fixed by (seed, epoch), cut into exact per-rank
shares under DDP). The task of step ``s`` is ``tasks[s % len(tasks)]``; its corruptions and the
global RNG (dropout) are seeded by (seed, step, rank), so a run resumed from a mid-run checkpoint
trains exactly as an uninterrupted one. Adam, cosine learning rate over the run's ``steps``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..representation import build_backbone
from ..task import build_task
from ..train._checkpoint import plain
from ..train._engine import check_finite, scalar_metrics
from ..train._runkit import index_loader, seed_of, step_generator
from ._clouds import cloud_batch


class CloudCollate:
    """``collate_fn``: indices of clouds -> their :func:`cloud_batch`."""

    def __init__(self, clouds: np.ndarray):
        self.clouds = clouds

    def __call__(self, indices: list[int]):
        return cloud_batch(self.clouds[np.asarray(indices, dtype=np.int64)])


class CloudPretrainModule(L.LightningModule):
    """Backbone + cloud pretext tasks + Adam with a cosine schedule over ``settings.steps``."""

    def __init__(self, settings, clouds: np.ndarray):
        super().__init__()
        self.settings = settings
        self.seed = int(settings.seed)
        torch.manual_seed(self.seed)
        self.backbone = build_backbone(dict(settings.backbone))
        self.names = list(settings.tasks)
        if not self.names:
            raise ConfigError("no pretext task configured (tasks: [...])")
        self.tasks = nn.ModuleDict(
            {n: build_task({"name": n, "unit": "angstrom"}, self.backbone) for n in self.names}
        )
        # the cloud tasks corrupt exactly k bonds per cloud: a cloud holding a whole tied shell
        # (frame_clouds; a near-tie of noisy environments) trains on its k nearest, sorted first
        clouds = np.asarray(clouds)
        k = int(getattr(self.backbone, "k", int(clouds.shape[1])))
        self.clouds = np.ascontiguousarray(clouds[:, :k], dtype=np.float32)

    def train_dataloader(self):
        s = self.settings
        return index_loader(len(self.clouds), int(s.batch), self.trainer, seed=self.seed,
                            collate_fn=CloudCollate(self.clouds))  # fmt: skip

    def training_step(self, batch, batch_idx):
        step = int(self.global_step)
        torch.manual_seed(seed_of(self.seed, 3, step, self.global_rank))  # dropout
        name = self.names[step % len(self.names)]
        out = self.tasks[name].step(
            batch, self.backbone, generator=step_generator(self.seed, 1, step, self.global_rank)
        )
        loss = out["loss"]
        check_finite(loss, self.current_epoch, step)
        opts = dict(batch_size=int(batch.num_nodes), on_step=True, on_epoch=False, sync_dist=True)
        self.log("train/loss", loss.detach(), prog_bar=True, **opts)
        for key, value in out.items():
            if key != "loss":
                value = value.detach() if isinstance(value, torch.Tensor) else float(value)
                self.log(f"train/{name}/{key}", value, **opts)
        self.log(f"train/{name}/loss", loss.detach(), **opts)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=float(self.settings.lr))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(1, int(self.settings.steps))
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        metrics = scalar_metrics(self)
        checkpoint["atomssl"] = {
            "config": plain({"order_pretrain": settings_dict(self.settings)}),
            "backbone_config": plain(self.backbone.config),
            "backbone": self.backbone.state_dict(),
            "tasks": {k: t.state_dict() for k, t in self.tasks.items()},
            "task_configs": plain({k: getattr(t, "config", {}) for k, t in self.tasks.items()}),
            "metrics": metrics,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint.pop("atomssl", None)


def settings_dict(settings) -> dict:
    """The settings as plain data (tasks as a list)."""
    d = asdict(settings)
    d["tasks"] = list(d["tasks"])
    return d
