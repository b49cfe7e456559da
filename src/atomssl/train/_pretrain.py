"""One pretraining run: config -> run folder with checkpoints, metrics, loss curve and summary.

Run folder::

    RUN/config.yaml                 the config used (resuming reads it back)
    RUN/checkpoints/best.pt         lowest validation loss   (atomssl format, weights_only-safe)
    RUN/checkpoints/last.pt         end of the latest epoch  (+ trainer state for --resume)
    RUN/logs/version_N/metrics.csv  one version per (re)start; merged for plots and summary
    RUN/loss_curve.png              train/validation loss and baselines per task
    RUN/summary.json, summary.md    task / backbone / baseline / reached, throughput

``last.pt`` is written at every epoch end, and also every N optimizer steps with
``trainer.checkpoint_every_n_steps: N``. A run killed mid-epoch resumes from the latest of them;
data order and corruptions depend only on (seed, epoch, step), and the training loader's position
is saved in the checkpoint, so a resumed run continues the epoch without repeating or skipping a
sample and ends with the weights an uninterrupted run has. With step checkpoints the global RNG
(dropout) is also reseeded at every step from (seed, epoch, step, rank) for that reason.

Several processes (``trainer.strategy: ddp``, ``devices``, ``num_nodes``; launched by Lightning,
torchrun or SLURM): rank 0 writes the run folder. With ``ATOMSSL_FINAL_WEIGHTS_DIR=DIR`` every
process also writes its final module weights to ``DIR/rank<R>.pt`` (used by tests to check that
all ranks end with the same weights).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from ..errors import ConfigError
from ..utils import atomic_write, dump_config, write_json
from ..utils._schema import Schema
from ._checkpoint import epoch_checkpoints
from ._data import DATA_DEFAULTS, PretrainDataModule, record_read_warnings
from ._engine import (
    TRAINER_DEFAULTS,
    clean_partial_files,
    is_worker,
    make_trainer,
    quiet_lightning,
    resolve_run_dir,
)
from ._module import OPTIM_DEFAULTS, PretrainModule
from ._report import (  # noqa: F401  (re-exported)
    _fmt,
    format_table,
    merged_metrics,
    plot_loss_curves,
    summarize,
)
from ._sampler import LoaderPosition

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "imports": [],  # modules to import first (they may register extra backbones/tasks)
    "data": dict(DATA_DEFAULTS),
    "backbone": {"name": "megnet"},
    "tasks": [{"name": "edge_denoise", "weight": 1.0}],
    "optim": dict(OPTIM_DEFAULTS),
    # + "checkpoint_every_n_steps": N (optional, not a Lightning option): also write last.pt
    # every N steps
    "trainer": dict(TRAINER_DEFAULTS),
    "run": {"root": "runs", "name": "pretrain"},
}
#: validated on load (atomssl.utils._schema). Loosely, on purpose: ``backbone`` takes the options
#: of the chosen backbone, ``tasks`` is a list of task mappings (their options: the task's), and
#: ``trainer`` takes Lightning Trainer options
SCHEMA = Schema(
    "pretrain",
    DEFAULTS,
    choices={"optim.scheduler": ("cosine", "constant")},
    types={
        "data.sources": (list, str, dict),
        "data.limit": (int, None),
        "data.num_workers": (int, str),
        "backbone.checkpoint": (str, None),
        "trainer.checkpoint_every_n_steps": (int, None),
    },
    open=("backbone",),
)
_FINAL_WEIGHTS_ENV = (
    "ATOMSSL_FINAL_WEIGHTS_DIR"  # every rank writes its final weights there (tests)
)


class Throughput(Callback):
    """Training structures per second, per epoch (timed from first to last batch)."""

    def __init__(self) -> None:
        self.per_epoch: list[float] = []
        self._t0: float | None = None
        self._n = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0, self._n = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._n += int(batch.num_graphs) * trainer.world_size

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._t0 is not None and self._n:
            rate = self._n / max(time.perf_counter() - self._t0, 1e-9)
            self.per_epoch.append(rate)
            pl_module.log("train/structures_per_s", rate, rank_zero_only=True)


class StepSeed(Callback):
    """Reseed the global RNG (dropout) before every training step from (seed, epoch, step, rank),
    so that a run resumed from a mid-epoch checkpoint draws what the uninterrupted one did."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        seq = np.random.SeedSequence(
            [
                self.seed,
                3,
                int(trainer.current_epoch),
                int(trainer.global_step),
                int(trainer.global_rank),
            ]
        )
        torch.manual_seed(int(seq.generate_state(1, dtype=np.uint64)[0] >> 1))


def _resolve_run_dir(config: dict, run_dir: str | os.PathLike | None) -> Path:
    return resolve_run_dir(config.get("run"), run_dir, "pretrain")


def _import_plugins(config: dict) -> None:
    import importlib

    for name in config.get("imports") or []:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"imports: cannot import {name!r}: {exc}") from None


def _make_trainer(config: dict, run_dir: Path, callbacks: list, progress: bool) -> L.Trainer:
    # pretext heads ignore some backbone outputs (e.g. the readout): DDP must allow unused ones;
    # PretrainDataModule shards (exactly) and shuffles by (seed, epoch) itself
    return make_trainer(
        config["trainer"],
        run_dir,
        callbacks,
        progress,
        find_unused_parameters=True,
        use_distributed_sampler=False,
        model_summary=progress,
        tensorboard=True,
    )


def prepare_config(config: dict) -> dict:
    """Fill defaults section by section (``tasks`` and ``data.sources`` are replaced, not merged)."""
    import copy

    from ..utils._config import _merge

    out = _merge(copy.deepcopy(DEFAULTS), copy.deepcopy(config))
    if "tasks" in config:
        out["tasks"] = copy.deepcopy(config["tasks"])
    for section in ("data", "optim", "trainer", "backbone"):
        if not isinstance(out.get(section), dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
    if not isinstance(out["tasks"], list):
        raise ConfigError("config 'tasks' must be a list of task mappings")
    every = out["trainer"].get("checkpoint_every_n_steps")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ConfigError(
            f"trainer.checkpoint_every_n_steps must be a positive number of steps (or null), got {every!r}"
        )
    return out


def pretrain(
    config: dict,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume, with ``resume=True`` and the same ``run_dir``) a pretraining run.

    Returns the summary (also written to ``RUN/summary.json``): per task the validation
    baseline and loss reached, throughput, checkpoint paths.
    """
    config = prepare_config(config)
    quiet_lightning()
    _import_plugins(config)
    L.seed_everything(int(config["seed"]), workers=True, verbose=False)
    module = PretrainModule(config)
    datamodule = PretrainDataModule(
        config["data"], module.backbone.graph_spec, seed=int(config["seed"])
    )
    # the data first: a bad source fails with its one-line error before a run folder or a
    # Trainer (and its banner) exists; Lightning's own call of setup() then finds it done
    datamodule.setup("fit")
    run_dir = _resolve_run_dir(config, run_dir)
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.pt"
    zero = not is_worker()
    n_warned = None
    if zero:
        for p in clean_partial_files(ckpt_dir) + clean_partial_files(run_dir):
            log.info("removed partial file %s left by an interrupted run", p)
        dump_config(config, run_dir / "config.yaml")
        log.info("run folder: %s", run_dir)
        n_warned = record_read_warnings(datamodule.structures, run_dir)
    ckpt_path = None
    if resume:
        if last.is_file():
            ckpt_path = str(last)
            log.info("resuming from %s", last)
        else:
            log.info("no checkpoint in %s yet: starting from scratch", ckpt_dir)

    has_val = float(config["data"].get("val_fraction", 0.0)) > 0
    monitor = "val/loss" if has_val else "train/loss_epoch"
    throughput = Throughput()
    callbacks = [
        *epoch_checkpoints(ckpt_dir, monitor),
        throughput,
        LoaderPosition(),
        *step_checkpoints(config, ckpt_dir),
    ]
    trainer = _make_trainer(config, run_dir, callbacks, progress)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    _dump_final_weights(module, trainer.global_rank)

    if not trainer.is_global_zero:
        return {}
    rows = merged_metrics(run_dir)
    summary = summarize(rows, module, config, throughput.per_epoch, ckpt_dir)
    summary["structures_read_with_warnings"] = n_warned
    write_json(run_dir / "summary.json", summary)
    table = format_table(summary)
    with atomic_write(run_dir / "summary.md", "w") as fh:
        fh.write(table + "\n")
    plot_loss_curves(rows, module.keys, run_dir / "loss_curve.png")
    print(table)  # the run's summary, with or without progress bars
    return summary


def step_checkpoints(config: dict, ckpt_dir: Path) -> list:
    """With ``trainer.checkpoint_every_n_steps: N``: a callback refreshing ``last.pt`` every N
    steps (mid-epoch resume point) and :class:`StepSeed`; nothing otherwise."""
    n = config["trainer"].get("checkpoint_every_n_steps")
    if not n:
        return []
    from ._runkit import StepCheckpoint

    steps = StepCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, every_n_train_steps=int(n), save_top_k=1,
                            auto_insert_metric_name=False, enable_version_counter=False)  # fmt: skip
    steps.FILE_EXTENSION = ".pt"
    return [steps, StepSeed(int(config["seed"]))]


def _dump_final_weights(module, rank: int) -> None:
    folder = os.environ.get(_FINAL_WEIGHTS_ENV)
    if folder:
        from ..utils import atomic_torch_save

        state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        atomic_torch_save(state, Path(folder) / f"rank{int(rank)}.pt")


# -------------------------------------------------------------------------------- metrics


def load_run_config(run_dir: str | os.PathLike) -> dict:
    """The ``config.yaml`` of a pretraining run folder (what ``--resume`` continues with);
    :class:`ConfigError` when the folder has none."""
    from ._runkit import load_run_config as _load

    return _load(run_dir, "pretraining")
