"""The LightningModule of pretraining: one backbone shared by weighted pretext tasks.

``loss = sum_k weight_k * loss_k``; each task's loss, baseline and metrics are logged as
``<stage>/<key>/<metric>`` (``key`` = task name, or its ``key`` option when a task appears twice),
the totals as ``<stage>/loss`` and ``<stage>/baseline``.

Randomness of corruptions comes from a generator seeded by ``(seed, stage, step, rank, task)``:
it does not depend on history, so a resumed run corrupts exactly as an uninterrupted one, and
validation uses the same corruptions every epoch (comparable across epochs).
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..representation import build_backbone
from ..task import Task, build_task
from ._engine import scalar_metrics

OPTIM_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "weight_decay": 0.0,
    "scheduler": "cosine",  # cosine | constant
    "warmup_steps": 0,
    "min_lr_ratio": 0.01,
}
_STAGES = {"train": 0, "val": 1}


def task_keys(tasks_cfg: list) -> list[str]:
    keys = []
    for t in tasks_cfg:
        name = t if isinstance(t, str) else t.get("key", t.get("name"))
        if not isinstance(name, str):
            raise ConfigError(f"task entry {t!r} has no name")
        keys.append(name)
    if len(set(keys)) != len(keys):
        raise ConfigError(f"task keys {keys} repeat; give repeated tasks distinct 'key' options")
    return keys


class PretrainModule(L.LightningModule):
    """Backbone + pretext tasks + optimiser, configured by a plain dict (the run config)."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = config
        self.seed = int(config.get("seed", 0))
        bb_cfg = dict(config["backbone"])
        init_from = bb_cfg.pop("checkpoint", None)
        if init_from:
            from ._checkpoint import load_checkpoint

            ck = load_checkpoint(init_from)
            bb_cfg = {**ck["backbone_config"], **{k: v for k, v in bb_cfg.items() if k != "name"}}
            self.backbone = build_backbone(bb_cfg)
            try:
                self.backbone.load_state_dict(ck["backbone"])
            except RuntimeError as exc:
                from ..errors import CheckpointError

                raise CheckpointError(
                    f"{init_from}: weights do not fit backbone {bb_cfg.get('name')!r}: {exc}"
                ) from None
        else:
            self.backbone = build_backbone(bb_cfg)
        tasks_cfg = config.get("tasks") or []
        if not tasks_cfg:
            raise ConfigError("no pretext task configured (tasks: [...])")
        self.keys = task_keys(tasks_cfg)
        self.tasks = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        for key, t in zip(self.keys, tasks_cfg):
            t = {"name": t} if isinstance(t, str) else dict(t)
            t.pop("key", None)
            self.weights[key] = float(t.get("weight", 1.0))
            self.tasks[key] = build_task(t, self.backbone)
        self.optim_cfg = {**OPTIM_DEFAULTS, **(config.get("optim") or {})}

    # ----------------------------------------------------------------------------- steps
    def _generator(self, stage: str, step: int, task_index: int) -> torch.Generator:
        seq = np.random.SeedSequence(
            [self.seed, _STAGES[stage], int(step), int(self.global_rank), task_index]
        )
        g = torch.Generator()
        g.manual_seed(int(seq.generate_state(1, dtype=np.uint64)[0] >> 1))
        return g

    def _shared_step(self, batch, stage: str, step: int) -> torch.Tensor:
        total: torch.Tensor | float = 0.0
        baseline = 0.0
        n = int(batch.num_graphs)
        for i, key in enumerate(self.keys):
            task = self.tasks[key]
            assert isinstance(task, Task)
            res = task.step(batch, self.backbone, generator=self._generator(stage, step, i))
            w = self.weights[key]
            total = total + w * res["loss"]
            baseline = baseline + w * float(res["baseline"])
            for name, value in res.items():
                self.log(
                    f"{stage}/{key}/{name}",
                    value.detach(),
                    batch_size=n,
                    on_step=False,
                    on_epoch=True,
                    sync_dist=True,
                )
        assert isinstance(total, torch.Tensor)  # at least one task (checked in __init__)
        if stage == "train":
            # the epoch's mean is averaged over processes; the per-step value (progress bar,
            # metrics.csv) is this process's own: averaging it too would make every step wait for
            # every process once more in each step, between forward and backward
            self.log("train/loss_step", total.detach(), batch_size=n, prog_bar=True,
                     on_step=True, on_epoch=False, sync_dist=False)  # fmt: skip
            self.log("train/loss_epoch", total.detach(), batch_size=n,
                     on_step=False, on_epoch=True, sync_dist=True)  # fmt: skip
        else:
            self.log(f"{stage}/loss", total.detach(), batch_size=n, prog_bar=True,
                     on_step=False, on_epoch=True, sync_dist=True)  # fmt: skip
        self.log(
            f"{stage}/baseline",
            baseline,
            batch_size=n,
            on_step=False,
            on_epoch=True,
            sync_dist=True,
        )
        return total

    def on_train_epoch_start(self) -> None:
        # dropout etc. draw from the global RNG: reseed it from (seed, epoch, rank) so that a
        # resumed epoch draws exactly what the uninterrupted one would have
        seq = np.random.SeedSequence([self.seed, 2, int(self.current_epoch), int(self.global_rank)])
        torch.manual_seed(int(seq.generate_state(1, dtype=np.uint64)[0] >> 1))

    def training_step(self, batch, batch_idx):
        loss = self._shared_step(batch, "train", self.global_step)
        if not torch.isfinite(loss.detach()).all():
            # stop before the optimiser step spreads NaN/inf into the weights: the checkpoints
            # written so far (last.pt, best.pt) keep the last good state
            from ..errors import TrainingError

            raise TrainingError(
                f"non-finite training loss ({float(loss.detach())}) at epoch {self.current_epoch}, step {self.global_step}: "
                "training stopped; the checkpoints of the last completed epoch are kept (lower optim.lr, or check the data)"
            )
        return loss

    def validation_step(self, batch, batch_idx):
        self._shared_step(batch, "val", batch_idx)

    # ------------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        c = self.optim_cfg
        opt = torch.optim.AdamW(
            self.parameters(), lr=float(c["lr"]), weight_decay=float(c["weight_decay"])
        )
        kind = c["scheduler"]
        if kind == "constant":
            return opt
        if kind != "cosine":
            raise ConfigError(f"optim.scheduler must be 'cosine' or 'constant', got {kind!r}")
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        return warmup_cosine(opt, total, int(c["warmup_steps"]), float(c["min_lr_ratio"]))

    # ----------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from ._checkpoint import plain

        metrics = scalar_metrics(self)
        checkpoint["atomssl"] = {
            "config": plain(self.config),
            "backbone_config": plain(self.backbone.config),
            "backbone": self.backbone.state_dict(),
            "tasks": {k: t.state_dict() for k, t in self.tasks.items()},
            "task_configs": plain({k: t.config for k, t in self.tasks.items()}),
            "task_weights": dict(self.weights),
            "metrics": metrics,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint.pop("atomssl", None)


def warmup_cosine(opt, total: int, warm: int, floor: float) -> dict[str, Any]:
    """Lightning optimiser config: linear warm-up over ``warm`` steps, then cosine decay to ``floor * lr``."""

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min((step - warm) / max(total - warm, 1), 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
