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
import yaml
from lightning.pytorch.callbacks import Callback

from ..errors import ConfigError
from ..utils import atomic_write, dump_config, make_run_dir, write_json
from ._checkpoint import AtomicCheckpointIO, epoch_checkpoints
from ._data import DATA_DEFAULTS, PretrainDataModule, record_read_warnings
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
    "trainer": {
        "max_epochs": 20,
        "accelerator": "auto",
        "devices": 1,
        "strategy": "auto",
        "num_nodes": 1,
        "precision": "32-true",
        "gradient_clip_val": 1.0,
        "log_every_n_steps": 10,
        "deterministic": False,
        # "checkpoint_every_n_steps": N (optional, not a Lightning option): also write last.pt every N steps
    },
    "run": {"root": "runs", "name": "pretrain"},
}
_RUN_DIR_ENV = (
    "ATOMSSL_RUN_DIR"  # tells DDP worker processes (re-launched scripts) where rank 0 writes
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


def _is_worker() -> bool:
    """Not the global rank 0: a DDP process re-launched by Lightning, another node, or a rank
    started by torchrun or SLURM."""
    return any(
        int(os.environ.get(k) or "0") > 0
        for k in ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "RANK", "SLURM_PROCID")
    )


def _resolve_run_dir(config: dict, run_dir: str | os.PathLike | None) -> Path:
    if _is_worker() and os.environ.get(_RUN_DIR_ENV):
        return Path(os.environ[_RUN_DIR_ENV])
    if _is_worker() and run_dir is None:
        # started by torchrun / srun / on another node: rank 0's dated folder is unknown here, and
        # only rank 0 writes; make no folder of our own (give --out to name one for all ranks)
        run = config.get("run") or {}
        log.warning(
            "a rank other than 0 without --out: only rank 0 writes its run folder (give --out on every node)"
        )
        return Path(run.get("root", "runs")) / f"{run.get('name', 'pretrain')}-not-rank-0"
    if run_dir is not None:
        path = make_run_dir(run_dir, exist_ok=True)
    else:
        run = config.get("run") or {}
        path = make_run_dir(run.get("root", "runs"), run.get("name", "pretrain"))
    os.environ[_RUN_DIR_ENV] = str(path)
    return path


def _clean_partial_files(folder: Path) -> list[Path]:
    """Remove temporary files left by a write interrupted by a crash (atomic writes use ``.NAME.*.tmp``)."""
    removed = []
    if folder.is_dir():
        for p in folder.glob(".*.tmp"):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _no_tips(record: logging.LogRecord) -> bool:
    """Lightning's advertisement tips (e.g. for its cloud logger) are not run output."""
    return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB} Tip")


def _quiet_duplicate_logs() -> None:
    """Each Lightning message once, without advertisements. Lightning's packages attach their own
    handlers (``lightning``: ``INFO: ...``) and also propagate to the root logger, which the CLI
    configures: with a root handler, theirs are removed; without one, theirs stay and stop propagating."""
    root = bool(logging.getLogger().handlers)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lg = logging.getLogger(name)
        if lg.handlers:
            if root:  # Lightning turns propagation off where it adds a handler: turn it back on
                lg.handlers.clear()
                lg.propagate = True
            else:
                lg.propagate = False
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        lg = logging.getLogger(name)
        if _no_tips not in lg.filters:
            lg.addFilter(_no_tips)


def _import_plugins(config: dict) -> None:
    import importlib

    for name in config.get("imports") or []:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"imports: cannot import {name!r}: {exc}") from None


def _make_trainer(config: dict, run_dir: Path, callbacks: list, progress: bool) -> L.Trainer:
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.strategies import DDPStrategy

    tcfg = dict(config["trainer"])
    tcfg.pop("checkpoint_every_n_steps", None)
    if (
        tcfg.get("strategy") == "ddp"
    ):  # pretext heads ignore some backbone outputs (e.g. the readout)
        tcfg["strategy"] = DDPStrategy(find_unused_parameters=True)
    loggers: list = [CSVLogger(run_dir, name="logs")]
    try:
        from lightning.fabric.loggers.tensorboard import (
            _TENSORBOARD_AVAILABLE,
            _TENSORBOARDX_AVAILABLE,
        )

        if _TENSORBOARD_AVAILABLE or _TENSORBOARDX_AVAILABLE:
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(run_dir, name="tensorboard"))
    except ImportError:  # pragma: no cover - depends on the Lightning build
        pass
    try:
        return L.Trainer(
            default_root_dir=run_dir,
            logger=loggers,
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=progress,
            enable_model_summary=progress,
            use_distributed_sampler=False,  # PretrainDataModule shards (exactly) and shuffles by (seed, epoch) itself
            num_sanity_val_steps=0,
            **tcfg,
        )
    except TypeError as exc:
        raise ConfigError(f"trainer: bad option: {exc}") from None


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
    _quiet_duplicate_logs()
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
    zero = not _is_worker()
    n_warned = None
    if zero:
        for p in _clean_partial_files(ckpt_dir) + _clean_partial_files(run_dir):
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
    from lightning.pytorch.callbacks import ModelCheckpoint

    steps = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, every_n_train_steps=int(n), save_top_k=1,
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
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no config.yaml: not a pretraining run folder")
    return yaml.safe_load(path.read_text())
