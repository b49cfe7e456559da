"""Fine-tuning's configuration and training: full, frozen backbone (head only) or linear probe.

This module holds the defaults and schema (``DEFAULTS``, ``SCHEMA``, :func:`prepare_config`) and
:func:`fit_module`, which trains a backbone + head on the shared engine. The workflow around it,
``atomssl.evaluate.finetune(config)``, loads structures and labels, splits them (train /
validation / test), trains (or fits a linear probe), predicts and writes a run folder::

    RUN/config.yaml                the config used
    RUN/checkpoints/best.pt        best validation metric (atomssl format; ``load_backbone`` reads it)
    RUN/checkpoints/last.pt        end of the last epoch (+ every ``trainer.checkpoint_every_n_steps``
                                   steps; trainer state for ``--resume``; not for linear probes)
    RUN/probe.json                 linear probe: scaler, coefficients, chosen alpha / C
    RUN/metrics.csv                one row per epoch (train/val loss and metrics)
    RUN/predictions.csv            id, split, target, prediction (+ class probabilities)
    RUN/parity.png                 predicted vs true (regression) / confusion matrices (classification)
    RUN/predictions.npz, spectra.png   spectrum targets instead: per split ids, target and predicted
                                   spectra; predicted vs true spectra of a few test structures
    RUN/summary.json, summary.md   test and validation metrics, trivial baselines, sizes, timings

Modes
- ``full``: backbone and head train together (``optim.backbone_lr_ratio`` scales the backbone's rate);
- ``frozen``: backbone weights fixed (no grad, eval mode); the head (with its own Set2Set
  readouts for MEGNet) trains;
- ``linear_probe``: structure embeddings of the frozen backbone -> standardised -> ridge
  regression / logistic regression (scikit-learn), ``alpha`` / ``C`` chosen on validation;
  ridge predictions are clipped to the range of the training targets.

Early stopping: training stops when the validation metric (``val/mae`` for regression,
``val/loss`` for classification) has not improved for ``trainer.patience`` epochs; the best
epoch's weights are the ones used for predictions.

Resuming (``finetune(..., resume=True)``, ``atomssl finetune --resume RUN``) continues from
``RUN/checkpoints/last.pt`` and ends with the weights an uninterrupted run ends with: the
training order depends only on (seed, epoch), the loader's position within the epoch is saved in
each checkpoint, dropout is reseeded at every step from (seed, epoch, step, rank), and early
stopping's count and the best checkpoint are restored with the trainer state. A linear probe has
nothing to resume (it is fitted again).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping

from ..data._label_files import read_labels_file  # noqa: F401 (re-exported)
from ..errors import ConfigError
from ..utils import write_csv
from ..utils._schema import Schema
from ._finetune_module import (  # noqa: F401 (re-exported)
    FinetuneData,
    FinetuneModule,
    LabelledGraphs,
    _loader,
    build_finetune_backbone,
    predict_graphs,
    split_three,
)

log = logging.getLogger(__name__)

MODES = ("full", "frozen", "linear_probe")
KINDS = ("regression", "classification", "spectrum")

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "imports": [],
    "mode": "full",
    "data": {
        "sources": ["matbench_dielectric"],
        "limit": None,
        "label": None,  # label name: a built-in dataset's label, an ASE db key, or a column of `labels` (None: the only one there is)
        "labels": None,  # CSV/JSON file with (file or id, label) rows; relative paths also tried next to the first source
        "val_fraction": 0.1,
        "test_fraction": 0.1,
        "batch_size": 32,
        "skip_bad": True,
        "skip_unlabelled": False,
        "in_memory": True,  # False (and always for a corpus folder): read structures lazily, build graphs in workers
        "num_workers": "auto",
        "train_where": None,  # e.g. "crystal_sys==cubic": train and validate on those structures only (test: all)
        "group_by": None,  # e.g. "crystal_sys": test scores per value of that label
    },
    "backbone": {"name": "megnet", "checkpoint": None, "pretrained": True},
    "task": {
        "name": "regression",
        "loss": "l1",
        "transform": "none",
        "readout": "auto",
        "hidden": [64, 32],
        "dropout": 0.0,
    },
    "probe": {
        "alphas": [1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0],
        "Cs": [1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0],
    },
    "optim": {
        "lr": 1e-3,
        "weight_decay": 0.0,
        "backbone_lr_ratio": 1.0,
        "scheduler": "cosine",
        "warmup_steps": 0,
        "min_lr_ratio": 0.01,
    },
    "trainer": {
        "max_epochs": 100,
        "patience": 20,
        "accelerator": "auto",
        "devices": 1,
        "precision": "32-true",
        "gradient_clip_val": 1.0,
        "log_every_n_steps": 10,
        "max_time": None,
        "checkpoint_every_n_steps": None,  # N: also write last.pt every N steps (for --resume)
    },
    "run": {"root": "runs", "name": "finetune"},
}
#: validated on load (atomssl.utils._schema). Loosely, on purpose: ``backbone`` and ``task`` take
#: the options of the chosen backbone and task kind, ``trainer`` Lightning Trainer options
SCHEMA = Schema(
    "finetune",
    DEFAULTS,
    choices={
        "mode": MODES,
        "task.name": KINDS,
        "task.loss": ("l1", "mse", "huber"),
        "task.transform": ("none", "log"),
        "task.readout": ("auto", "set2set", "graph", "mean"),
        "optim.scheduler": ("cosine", "constant"),
    },
    types={
        "data.sources": (list, str, dict),
        "data.limit": (int, None),
        "data.num_workers": (int, str),
        "data.label": (str, None),
        "data.labels": (str, None),
        "data.train_where": (str, None),
        "data.group_by": (str, None),
        "backbone.checkpoint": (str, None),
        "trainer.checkpoint_every_n_steps": (int, None),
    },
    open=("backbone", "task"),
)


def prepare_config(config: dict) -> dict:
    """Defaults filled section by section; checks mode, task kind and numbers."""
    from ..utils._config import _merge

    out = _merge(copy.deepcopy(DEFAULTS), copy.deepcopy(config))
    if out["mode"] not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {out['mode']!r}")
    for section in ("data", "backbone", "task", "probe", "optim", "trainer", "run"):
        if not isinstance(out.get(section), dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
    if out["task"].get("name") not in KINDS:
        raise ConfigError(f"task.name must be one of {KINDS}, got {out['task'].get('name')!r}")
    return out


# --------------------------------------------------------------------------- training
def _make_trainer(
    config: dict, run_dir: Path, callbacks: list, progress: bool, has_val: bool
) -> L.Trainer:
    from ._engine import make_trainer

    # FinetuneData shards and orders by (seed, epoch) itself; a head with its own readout leaves
    # the backbone's unused
    return make_trainer(config["trainer"], run_dir, callbacks, progress, has_val=has_val,
                        find_unused_parameters=True, use_distributed_sampler=False)  # fmt: skip


class _EarlyStopping(EarlyStopping):
    """Lightning's early stopping (its count and best score are saved in each checkpoint), and a
    run resumed from the checkpoint of the epoch that stopped it does not train on."""

    def on_train_start(self, trainer, pl_module) -> None:
        if self.patience > 0 and self.wait_count >= self.patience:
            trainer.should_stop = True


def _task_options(config: dict, train: LabelledGraphs) -> dict[str, Any]:
    """Statistics of the training targets that the head needs (normalisation / class prior)."""
    kind = config["task"]["name"]
    if kind == "spectrum":
        from ._spectrum import spectrum_task_options

        return spectrum_task_options(train.y)
    if kind == "regression":
        from ..task.downstream import RegressionTask

        mean, std = RegressionTask.fit_normalisation(
            train.y, config["task"].get("transform", "none")
        )
        return {"mean": mean, "std": std}
    n_classes = int(config["task"].get("n_classes") or (int(np.max(train.y)) + 1))
    counts = np.bincount(train.y.astype(np.int64), minlength=n_classes).astype(float)
    return {"n_classes": n_classes, "prior": (counts / counts.sum()).tolist()}


def fit_module(
    config: dict,
    train: LabelledGraphs,
    val: LabelledGraphs,
    run_dir: Path,
    progress: bool = False,
    backbone=None,
    callbacks: Sequence = (),
    resume: bool = False,
) -> tuple[FinetuneModule, dict[str, Any]]:
    """Train a :class:`FinetuneModule` (mode ``full`` or ``frozen``) on ``train``, early-stopped
    on ``val``; return it with the best epoch's weights loaded, and what was chosen
    (``epoch``, ``epochs_run``, ``monitor``, ``best``). Writes ``RUN/checkpoints`` and
    ``RUN/metrics.csv``. ``resume``: continue from ``RUN/checkpoints/last.pt`` if there is one.
    A DDP process other than rank 0 returns its module and no choice (``{}``)."""
    from ._pretrain import StepSeed
    from ._runkit import resume_point, run_checkpoints

    kind, mode = config["task"]["name"], config["mode"]
    module = FinetuneModule(config, _task_options(config, train), backbone=backbone)
    has_val = len(val) > 0
    monitor = module.monitor if has_val else "train/loss"
    ckpt_dir = run_dir / "checkpoints"
    every = config["trainer"].get("checkpoint_every_n_steps")
    saving = run_checkpoints(ckpt_dir, monitor, every)
    ckpt = next(cb for cb in saving if getattr(cb, "filename", None) == "best")
    callbacks = [*saving, StepSeed(int(config["seed"])), *callbacks]
    if has_val and int(config["trainer"].get("patience") or 0) > 0:
        patience = int(config["trainer"]["patience"])
        callbacks.append(_EarlyStopping(monitor=monitor, mode="min", patience=patience))
    bs, seed = int(config["data"]["batch_size"]), int(config["seed"])
    trainer = _make_trainer(config, run_dir, callbacks, progress, has_val)
    frozen_before = (
        {k: v.detach().clone() for k, v in module.backbone.state_dict().items()}
        if mode == "frozen"
        else None
    )
    data = FinetuneData(train, val, kind, bs, seed)
    trainer.fit(module, datamodule=data, ckpt_path=resume_point(run_dir, resume), weights_only=True)
    best = ckpt.best_model_path
    if best and Path(best).is_file():
        module.load_weights(best)
    module.cpu()
    if frozen_before is not None:  # a frozen backbone must come out exactly as it went in
        after = module.backbone.state_dict()
        if not all(torch.equal(frozen_before[k], after[k].cpu()) for k in frozen_before):
            raise RuntimeError("frozen backbone changed during training")
    if not trainer.is_global_zero:
        return module, {}
    rows = _epoch_rows(run_dir)
    _write_rows(rows, run_dir / "metrics.csv")
    best_row = min((r for r in rows if monitor in r), key=lambda r: r[monitor], default=None)
    chosen = {"epoch": int(best_row["epoch"]) if best_row else None, "epochs_run": len(rows),
              "monitor": monitor, "best": best_row.get(monitor) if best_row else None}  # fmt: skip
    return module, chosen


def _epoch_rows(run_dir: Path) -> list[dict[str, float]]:
    from ._pretrain import merged_metrics

    return merged_metrics(run_dir)


def _write_rows(rows: list[dict[str, float]], path: Path) -> None:
    write_csv(path, rows)
