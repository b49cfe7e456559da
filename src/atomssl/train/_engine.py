"""The one training engine: every workflow's Lightning ``Trainer`` is built here.

A workflow (pretraining, fine-tuning, order cloud pretraining, the motif VAE, the GAN) writes a
``LightningModule`` and calls :func:`make_trainer` with its ``trainer`` config section. It then
gets, the same for all:

* the ``trainer.accelerator / devices / strategy / num_nodes / precision`` options, passed to
  Lightning as they are (``strategy: ddp`` tolerates parameters a step leaves unused);
* checkpoints written atomically (:class:`AtomicCheckpointIO`), ``RUN/logs/version_N/metrics.csv``;
* a progress bar, or none with ``progress=False``; each Lightning message once, without tips;
* a stop on the first non-finite training loss (:class:`NonFiniteGuard`), before the optimiser
  step spreads NaN into the weights;
* one-line :class:`ConfigError` for an option Lightning does not know.

Run folders: :func:`resolve_run_dir` (rank 0 makes it; other ranks find it) and
:func:`clean_partial_files` (temporary files left by a crash).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from ..errors import ConfigError, TrainingError
from ..utils import make_run_dir
from ._checkpoint import AtomicCheckpointIO

log = logging.getLogger(__name__)

#: Trainer options every workflow accepts (its ``trainer`` section), with their defaults.
TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 20,
    "accelerator": "auto",
    "devices": 1,
    "strategy": "auto",
    "num_nodes": 1,
    "precision": "32-true",
    "gradient_clip_val": 1.0,
    "log_every_n_steps": 10,
    "deterministic": False,
}

#: ``trainer`` keys that are atomssl options, not Lightning ones (read by the workflows).
ENGINE_KEYS = ("checkpoint_every_n_steps", "patience")

RUN_DIR_ENV = (
    "ATOMSSL_RUN_DIR"  # tells DDP worker processes (re-launched scripts) where rank 0 writes
)


def is_worker() -> bool:
    """Not the global rank 0: a DDP process re-launched by Lightning, another node, or a rank
    started by torchrun or SLURM."""
    return any(
        int(os.environ.get(k) or "0") > 0
        for k in ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "RANK", "SLURM_PROCID")
    )


def resolve_run_dir(
    run_cfg: dict | None, run_dir: str | os.PathLike | None, default_name: str
) -> Path:
    """The run folder: ``run_dir`` if given, else a new dated ``run.root/run.name-...`` folder.

    Rank 0 makes it and tells the processes Lightning re-launches through ``ATOMSSL_RUN_DIR``.
    """
    run = run_cfg or {}
    if is_worker() and os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    if is_worker() and run_dir is None:
        # started by torchrun / srun / on another node: rank 0's dated folder is unknown here, and
        # only rank 0 writes; make no folder of our own (give --out to name one for all ranks)
        log.warning(
            "a rank other than 0 without --out: only rank 0 writes its run folder "
            "(give --out on every node)"
        )
        return Path(run.get("root", "runs")) / f"{run.get('name', default_name)}-not-rank-0"
    if run_dir is not None:
        path = make_run_dir(run_dir, exist_ok=True)
    else:
        path = make_run_dir(run.get("root", "runs"), run.get("name", default_name))
    os.environ[RUN_DIR_ENV] = str(path)
    return path


def clean_partial_files(folder: Path) -> list[Path]:
    """Remove temporary files left by a write interrupted by a crash (atomic writes use
    ``.NAME.*.tmp``)."""
    removed = []
    if folder.is_dir():
        for p in folder.glob(".*.tmp"):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _no_tips(record: logging.LogRecord) -> bool:
    """Lightning's advertisement tips (e.g. for its cloud logger) are not run output."""
    return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB} Tip")


def quiet_lightning() -> None:
    """Each Lightning message once, without advertisements. Lightning's packages attach their own
    handlers (``lightning``: ``INFO: ...``) and also propagate to the root logger, which the CLI
    configures: with a root handler, theirs are removed; without one, theirs stay and stop
    propagating."""
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
    # Lightning's own pytree helper still uses a class torch 2.13 deprecates; not our call, and
    # not actionable by a user: printed at every run otherwise
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )


def _loss_of(outputs: Any) -> torch.Tensor | None:
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict):
        loss = outputs.get("loss")
        return loss if isinstance(loss, torch.Tensor) else None
    return None


class NonFiniteGuard(Callback):
    """Stop training at the first non-finite loss a training step returns.

    With automatic optimisation Lightning steps the optimiser before ``on_train_batch_end``, so
    modules also check in ``training_step`` (see :func:`check_finite`); this callback is the
    net under every workflow, manual optimisation included (its steps return their losses).
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = _loss_of(outputs)
        if loss is not None:
            check_finite(loss, trainer.current_epoch, trainer.global_step)


def scalar_metrics(module: L.LightningModule) -> dict[str, float]:
    """The module's current one-number metrics (``trainer.callback_metrics``), for a checkpoint."""
    if module._trainer is None:
        return {}
    return {
        k: float(v)
        for k, v in module.trainer.callback_metrics.items()
        if isinstance(v, torch.Tensor) and v.numel() == 1
    }


def check_finite(loss: torch.Tensor, epoch: int, step: int) -> None:
    """Raise :class:`TrainingError` (one line) if ``loss`` holds NaN or inf."""
    if not torch.isfinite(loss.detach()).all():
        raise TrainingError(
            f"non-finite training loss ({float(loss.detach().float().sum())}) at epoch {epoch}, "
            f"step {step}: training stopped; the checkpoints written so far keep the last good "
            "state (lower optim.lr, or check the data)"
        )


def make_trainer(
    trainer_cfg: dict,
    run_dir: str | os.PathLike,
    callbacks: list | None = None,
    progress: bool = True,
    *,
    has_val: bool = True,
    find_unused_parameters: bool = False,
    use_distributed_sampler: bool = True,
    model_summary: bool = False,
    tensorboard: bool = False,
) -> L.Trainer:
    """Build the Lightning ``Trainer`` of a workflow from its ``trainer`` config section.

    ``trainer_cfg`` holds Lightning ``Trainer`` options (atomssl's own keys, see
    ``ENGINE_KEYS``, are dropped here). ``use_distributed_sampler=False`` where the data module
    shards and shuffles by (seed, epoch) itself. A :class:`NonFiniteGuard` is always added.
    """
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.strategies import DDPStrategy

    quiet_lightning()
    run_dir = Path(run_dir)
    tcfg = {k: v for k, v in dict(trainer_cfg).items() if k not in ENGINE_KEYS}
    if tcfg.get("max_time") is None:
        tcfg.pop("max_time", None)
    if tcfg.get("strategy") == "ddp" and find_unused_parameters:
        tcfg["strategy"] = DDPStrategy(find_unused_parameters=True)
    loggers: list = [CSVLogger(run_dir, name="logs")]
    if tensorboard:
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
    extra: dict[str, Any] = {}
    if not has_val and "limit_val_batches" not in tcfg:
        extra["limit_val_batches"] = 0
    try:
        return L.Trainer(
            default_root_dir=run_dir,
            logger=loggers,
            callbacks=[*(callbacks or []), NonFiniteGuard()],
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=progress,
            enable_model_summary=model_summary,
            use_distributed_sampler=use_distributed_sampler,
            num_sanity_val_steps=0,
            **extra,
            **tcfg,
        )
    except TypeError as exc:
        raise ConfigError(f"trainer: bad option: {exc}") from None
