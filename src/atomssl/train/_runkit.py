"""Pieces shared by the workflows that bring their own small ``LightningModule`` to the engine
(``atomssl order pretrain``, ``atomssl motif train``; the GAN may follow).

* :func:`start_run`: the run folder (rank 0 makes it, cleans what a crash left, writes
  ``config.yaml``) and :func:`resume_point`, its ``checkpoints/last.pt`` for ``--resume``;
* :func:`run_checkpoints`: ``last.pt`` every epoch (and every N optimiser steps), ``best.pt``,
  the training loader's position, the metrics written with every checkpoint;
* :func:`index_loader`: batches of sample indices over a :class:`ShardedBatchSampler` (exact
  per-rank shares under DDP, mid-epoch resume), turned into batches by ``collate_fn``;
* :func:`seed_of` / :func:`step_generator`: seeds fixed by (seed, step, rank...) alone, so that a
  resumed run draws what an uninterrupted one does;
* :func:`step_rows`: metrics logged per step, merged over the restarts of a run.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..utils import dump_config
from ._engine import clean_partial_files, is_worker, resolve_run_dir
from ._sampler import LoaderPosition

log = logging.getLogger(__name__)


def seed_of(*parts: int) -> int:
    """A 63-bit seed fixed by ``parts`` (e.g. seed, purpose, step, rank)."""
    seq = np.random.SeedSequence([int(p) for p in parts])
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> 1)


def step_generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded by :func:`seed_of` ``(*parts)``."""
    g = torch.Generator()
    g.manual_seed(seed_of(*parts))
    return g


def start_run(
    config: dict, run_dir: str | os.PathLike | None, default_name: str, run_cfg: dict | None = None
) -> Path:
    """The run folder (``run_dir``, else a dated ``runs/default_name-...``); rank 0 removes the
    partial files a crash left there and writes ``config.yaml``."""
    path = resolve_run_dir(run_cfg, run_dir, default_name)
    if not is_worker():
        for p in clean_partial_files(path / "checkpoints") + clean_partial_files(path):
            log.info("removed partial file %s left by an interrupted run", p)
        dump_config(config, path / "config.yaml")
        log.info("run folder: %s", path)
    return path


def resume_point(run_dir: Path, resume: bool) -> str | None:
    """``RUN/checkpoints/last.pt`` when resuming and it exists, else None (start from scratch)."""
    if not resume:
        return None
    last = Path(run_dir) / "checkpoints" / "last.pt"
    if last.is_file():
        log.info("resuming from %s", last)
        return str(last)
    log.info("no checkpoint in %s yet: starting from scratch", last.parent)
    return None


def load_run_config(run_dir: str | os.PathLike, what: str) -> dict:
    """The ``config.yaml`` of a ``what`` run folder (for ``--resume``); a one-line
    :class:`ConfigError` naming the folder when it has none."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no config.yaml: not a {what} run folder")
    return yaml.safe_load(path.read_text()) or {}


def schedule(section: dict | None, defaults: dict, fixed: dict, by: str) -> dict:
    """The ``trainer`` options: ``defaults`` <- ``section``, plus the ``fixed`` ones the workflow's
    own schedule sets (``max_steps`` from ``steps``...); setting one of those is a ConfigError."""
    section = dict(section or {})
    for key, value in fixed.items():
        if section.get(key, value) != value:
            raise ConfigError(f"trainer.{key}={section[key]!r}: the schedule is set by {by}")
    return {**defaults, **section, **fixed}


class FlushLogs(Callback):
    """Write the loggers' buffered rows with every checkpoint, so that a killed run keeps the
    metrics logged before its last checkpoint (Lightning logs the row of the step or epoch that a
    checkpoint closes just after writing it: that one row may be lost)."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        for logger in trainer.loggers:
            logger.save()


class StepCheckpoint(ModelCheckpoint):
    """``last.pt`` every ``every_n_train_steps`` optimiser steps, except after an epoch's last
    batch: the epoch-end ``last.pt`` follows there (after validation), while a run resumed from a
    checkpoint of the last batch would skip that epoch's validation (Lightning 2.6), and with it
    what early stopping and ``best.pt`` make of it."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def run_checkpoints(
    ckpt_dir: Path, monitor: str | None = None, every_n_steps: int | None = None
) -> list:
    """``last.pt`` at every epoch end (also every ``every_n_steps`` optimiser steps), ``best.pt``
    (lowest ``monitor``) when given, the training loader's position, log flushes."""
    common: dict[str, Any] = dict(
        dirpath=ckpt_dir, save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False
    )
    cbs = [ModelCheckpoint(filename="last", monitor=None, every_n_epochs=1, **common)]
    if monitor:
        cbs.append(ModelCheckpoint(filename="best", monitor=monitor, mode="min", **common))
    if every_n_steps:
        if isinstance(every_n_steps, bool) or int(every_n_steps) < 1:
            raise ConfigError(
                f"trainer.checkpoint_every_n_steps must be a positive number of steps (or null), "
                f"got {every_n_steps!r}"
            )
        cbs.append(
            StepCheckpoint(
                filename="last", monitor=None, every_n_train_steps=int(every_n_steps), **common
            )
        )
    for cb in cbs:
        cb.FILE_EXTENSION = ".pt"
    return [*cbs, LoaderPosition(), FlushLogs()]


class _Indices(Dataset):
    def __init__(self, n: int):
        self.n = int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _index_tensor(items: list[int]) -> torch.Tensor:
    return torch.as_tensor(items, dtype=torch.long)


def index_loader(
    n: int,
    batch_size: int,
    trainer=None,
    *,
    shuffle: bool = True,
    seed: int = 0,
    resumable: bool = True,
    collate_fn=_index_tensor,
):
    """Batches of indices ``0..n-1`` (this rank's share with ``trainer``'s world size and rank),
    in an order fixed by (seed, epoch), passed through ``collate_fn`` (default: a long tensor)."""
    from ._data import make_loader

    world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    return make_loader(_Indices(n), int(batch_size), world, rank, shuffle, int(seed),
                       resumable=resumable, collate_fn=collate_fn)  # fmt: skip


def step_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Rows logged per step under ``RUN/logs/version_*/metrics.csv``, one per step, merged over
    restarts (a later version replaces the steps it re-ran)."""
    by_step: dict[int, dict[str, Any]] = {}
    versions = sorted(
        (Path(run_dir) / "logs").glob("version_*/metrics.csv"),
        key=lambda p: int(p.parent.name.split("_")[1]),
    )
    for path in versions:
        fresh: dict[int, dict[str, Any]] = {}
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                if not row.get("step"):
                    continue
                s = int(float(row["step"]))
                for k, v in row.items():
                    if v not in ("", None) and k != "step":
                        fresh.setdefault(s, {})[k] = int(float(v)) if k == "epoch" else float(v)
        if fresh:
            for s in [s for s in by_step if s >= min(fresh)]:
                del by_step[s]
            by_step.update(fresh)
    return [{"step": s, **by_step[s]} for s in sorted(by_step)]
