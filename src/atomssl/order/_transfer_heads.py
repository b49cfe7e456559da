"""Experiment (b)'s building blocks: transfer splits' reference clouds, head training, accuracy.

A head (and, but for the frozen core, the backbone under it) trains on the training engine
(:func:`atomssl.train._engine.make_trainer`) as a small :class:`HeadModule`: Adam on
cross-entropy, full batch or random minibatches, seeded so that a seed gives the same weights;
:class:`AccuracyCurve` records the test accuracy along training.

Given a run folder, a head writes ``checkpoints/last.pt`` (an atomssl checkpoint: the backbone,
the head as task ``head``, and the trainer state) when it finishes and every
``trainer.checkpoint_every_n_steps`` steps; ``resume`` continues from it. Every step's draws are
fixed by (seed, step, rank) alone, so a resumed head ends with the weights of an uninterrupted one.
Under DDP (``trainer.devices=2 trainer.strategy=ddp``) each process trains on its share of the
labelled environments (every ``world_size``-th one) and the gradients are averaged.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from ..errors import AtomsslError
from ..train._checkpoint import load_checkpoint, plain
from ..train._engine import TRAINER_DEFAULTS, check_finite, make_trainer
from ..train._runkit import run_checkpoints, schedule, seed_of
from ._clouds import cloud_batch, embed_clouds
from ._reference import (
    HELD_OUT_PROTOTYPES,
    ReferenceClouds,
    one_component_prototypes,
    reference_clouds,
)

log = logging.getLogger(__name__)

# None: the pretraining prototypes; "wide": every one-component AFLOW prototype not used in
# pretraining
# (a function: the prototype table is read only when that split is asked for)
TRANSFER_SPLITS = {
    "training": None,
    "held_out": HELD_OUT_PROTOTYPES,
    "wide": one_component_prototypes,
}


class _Steps:
    """The training "loader": the step numbers ``0..steps-1``; the module draws each step's batch
    itself from the global step (a plain iterable: no sampler, no worker, no draw from the global
    RNG). Nothing to restore on resume (``state_dict`` is empty): Lightning counts the steps."""

    def __init__(self, steps: int):
        self.steps = int(steps)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return iter(range(self.steps))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits, target)


class HeadModule(L.LightningModule):
    """A classification ``head`` on a ``backbone`` (trained too when ``train_backbone``), Adam on
    cross-entropy at ``lr``. Full batch when ``batch_size`` is None or at least the number of
    environments a process trains on, else a fresh random minibatch per step, drawn by (``seed``,
    step, rank); the global torch RNG is seeded by (``seed``, step, rank) at every step. Under DDP
    process ``r`` of ``R`` trains on environments ``r, r + R, ...``. A frozen backbone embeds
    the clouds once, on the training device; only the head trains then. ``run``: the run's
    settings, stored in its checkpoints (what a resumed run checks)."""

    def __init__(self, backbone, head, clouds, y, *, train_backbone: bool, lr: float, seed: int,
                 batch_size: int | None = None, run: dict | None = None):  # fmt: skip
        super().__init__()
        self.backbone, self.head = backbone, head
        self.train_backbone, self.lr, self.seed = bool(train_backbone), float(lr), int(seed)
        for p in backbone.parameters():
            p.requires_grad_(self.train_backbone)
        self.clouds = np.asarray(clouds)
        self.batch_size = batch_size
        self.run = dict(run or {})
        # every process holds all targets (DDP broadcasts buffers from rank 0) and picks its own
        self.register_buffer("target", torch.as_tensor(y, dtype=torch.long), persistent=False)
        self.share = np.arange(len(self.clouds))  # this process's environments (on_fit_start)
        self.full = True
        self.feats: torch.Tensor | None = None
        self.full_batch = None
        self.last_loss = torch.tensor(float("nan"))

    def on_fit_start(self) -> None:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        self.share = np.arange(rank, len(self.clouds), world)
        if not len(self.share):
            raise AtomsslError(
                f"{len(self.clouds)} labelled environment(s) for {world} processes: each needs "
                "at least one (label more, or use fewer processes)"
            )
        self.full = self.batch_size is None or self.batch_size >= len(self.share)
        mine = self.clouds[self.share]
        if not self.train_backbone:  # the frozen core is evaluated once; only the head trains
            emb = embed_clouds(self.backbone, mine, device=self.device)
            self.feats = torch.as_tensor(emb, device=self.device)
        elif self.full:
            self.full_batch = cloud_batch(mine).to(self.device)

    def train_dataloader(self):
        return _Steps(self.trainer.max_steps)

    def training_step(self, step, batch_idx):
        step, rank = int(self.global_step), int(self.global_rank)
        torch.manual_seed(seed_of(self.seed, 3, step, rank))  # dropout
        pick = None  # positions in this process's share
        if not self.full:
            rng = np.random.default_rng(seed_of(self.seed, 1, step, rank))
            pick = rng.choice(len(self.share), self.batch_size, replace=False)
        mine = self.share if pick is None else self.share[pick]
        if self.train_backbone:
            self.backbone.train()
            batch = (
                self.full_batch if pick is None else cloud_batch(self.clouds[mine]).to(self.device)
            )
            x = self.backbone(batch).node
        else:
            assert self.feats is not None  # on_fit_start embedded the clouds
            x = (
                self.feats
                if pick is None
                else self.feats[torch.as_tensor(pick, device=self.device)]
            )
        target = self.target[torch.as_tensor(mine, device=self.device)]
        loss = _loss(self.head(x), target)
        check_finite(loss, self.current_epoch, step)
        self.last_loss = loss.detach()
        if step + 1 == self.trainer.max_steps and self.trainer.world_size > 1:
            # the run's last training loss: the mean over the processes (the same on each)
            self.last_loss = self.trainer.strategy.reduce(self.last_loss, reduce_op="mean")
        if (step + 1) % self.trainer.log_every_n_steps == 0:  # the rows written:
            # logging costs as much as a head's step, and the other steps' values are dropped
            self.log("train/loss", self.last_loss, on_step=True, on_epoch=False, prog_bar=True,
                     batch_size=len(target))  # fmt: skip
        return loss

    def on_train_end(self) -> None:
        if self.trainer.world_size > 1:
            # DDP keeps the parameters equal, but each process's last forward pass updated the
            # backbone's running statistics from its own environments: all take rank 0's (those
            # last.pt holds), so every process evaluates the same model
            mine = {k: b.detach().cpu() for k, b in self.named_buffers()}
            for k, b in self.trainer.strategy.broadcast(mine, src=0).items():
                self.get_buffer(k).copy_(b)

    def configure_optimizers(self):
        params = list(self.head.parameters())
        if self.train_backbone:
            params += list(self.backbone.parameters())
        return torch.optim.Adam(params, lr=self.lr)

    # ----------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["atomssl"] = {
            "config": plain({RUN_KEY: self.run}),
            "backbone_config": plain(self.backbone.config),
            "backbone": self.backbone.state_dict(),
            "tasks": {"head": self.head.state_dict()},
            "task_configs": {"head": {}},
            "metrics": {"train_loss": float(self.last_loss)},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        metrics = (checkpoint.pop("atomssl", None) or {}).get("metrics") or {}
        if "train_loss" in metrics:  # a head resumed after its last step reports its last loss
            self.last_loss = torch.tensor(float(metrics["train_loss"]))


class AccuracyCurve(Callback):
    """``evaluate(device)`` (the backbone in eval mode) after each step of ``curve_at``; the points
    so far are kept in checkpoints (a resumed head has the whole curve)."""

    def __init__(self, curve_at: tuple, evaluate: Callable[[torch.device], float]):
        self.curve_at, self.evaluate = set(curve_at), evaluate
        self.curve: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        if step in self.curve_at:
            pl_module.backbone.eval()
            self.curve.append((step, float(self.evaluate(pl_module.device))))

    def state_dict(self) -> dict[str, Any]:
        return {"curve": [[int(s), float(a)] for s, a in self.curve]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.curve = [(int(s), float(a)) for s, a in state_dict.get("curve", [])]


#: the key of a head's run settings in its checkpoints' ``config``
RUN_KEY = "order_transfer"

#: the engine's options of a head's training (``transfer(trainer=...)`` overrides them); the
#: schedule (``max_steps``) is set by the mode's steps
HEAD_TRAINER: dict = {
    **{k: v for k, v in TRAINER_DEFAULTS.items() if k != "max_epochs"},
    "gradient_clip_val": None,  # plain Adam, as the experiment's settings are tuned for
    "log_every_n_steps": 10,
    # last.pt when a head ends (its final weights), and every N steps (mid-head resume points)
    "checkpoint_every_n_steps": None,
}


def trainer_options(trainer: dict | None, steps: int) -> dict:
    """The engine's options of a head trained for ``steps`` steps (:data:`HEAD_TRAINER` where not
    given)."""
    fixed = {"max_steps": int(steps), "max_epochs": -1}
    return schedule(trainer, HEAD_TRAINER, fixed, f"the transfer's steps (steps={steps})")


def _ddp_setup_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or "distributed" in str(record.msg)


@contextmanager
def _quiet_banners():
    """No Trainer banner ("GPU available...") per head: the experiment trains many. Lightning's
    lines on setting up DDP stay (they come once, with the first head)."""
    quiet = logging.getLogger("lightning.pytorch")
    # every rank_zero_info line, Fabric's too, goes through this logger
    zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    levels = quiet.level, zero.level
    quiet.setLevel(logging.WARNING)
    zero.setLevel(logging.INFO)
    zero.addFilter(_ddp_setup_only)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="lightning")
            yield
    finally:
        zero.removeFilter(_ddp_setup_only)
        quiet.setLevel(levels[0])
        zero.setLevel(levels[1])


def _train_head(
    backbone,
    head,
    clouds,
    y,
    *,
    train_backbone: bool,
    steps: int,
    lr: float,
    seed: int,
    batch_size: int | None = None,
    evaluate: Callable[[torch.device], float] | None = None,
    curve_at: tuple = (),
    trainer: dict | None = None,
    run_dir: str | os.PathLike | None = None,
    progress: bool = False,
    run: dict | None = None,
    ckpt_path: str | None = None,
) -> tuple[float, list[tuple[int, float]]]:
    """Train ``head`` (and the backbone when ``train_backbone``) through the engine
    (:func:`~atomssl.train._engine.make_trainer`, :class:`HeadModule`) for ``steps`` steps.

    ``trainer``: the engine's options (:data:`HEAD_TRAINER` where not given); ``run_dir``
    receives ``logs/version_N/metrics.csv`` and ``checkpoints/last.pt`` (None: a temporary
    folder, no checkpoint). ``run``: the run's settings, stored in ``last.pt``; ``ckpt_path``: the
    ``last.pt`` to continue from (:func:`resume_head` finds one of the same ``run``).
    Returns the last training loss and ``[(step, evaluate(device))]`` at the steps in
    ``curve_at``; the backbone and head stay on the training device, the backbone in eval mode.
    A non-finite loss raises :class:`~atomssl.errors.TrainingError`.
    """
    tcfg = trainer_options(trainer, steps)
    module = HeadModule(backbone, head, clouds, y, train_backbone=train_backbone, lr=lr,
                        seed=seed, batch_size=batch_size, run=run)  # fmt: skip
    curve = AccuracyCurve(tuple(curve_at), evaluate) if evaluate is not None else None
    callbacks: list = [curve] if curve else []
    with ExitStack() as stack:
        if run_dir is None:
            run_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="atomssl-head-"))
            tcfg["enable_checkpointing"] = False
        elif tcfg.get("enable_checkpointing", True):
            folder = Path(run_dir) / "checkpoints"
            callbacks += run_checkpoints(folder, None, tcfg.get("checkpoint_every_n_steps"))
        stack.enter_context(_quiet_banners())
        # the backbone's output node features leave some of its parameters unused under DDP
        fit = make_trainer(tcfg, run_dir, callbacks, progress, has_val=False,
                           find_unused_parameters=train_backbone)  # fmt: skip
        device = fit.strategy.root_device
        try:
            fit.fit(module, ckpt_path=ckpt_path, weights_only=True)
        finally:
            module.to(device)  # Lightning's teardown moves the model to the CPU
            backbone.eval()
    return float(module.last_loss), curve.curve if curve else []


def resume_head(run_dir: str | os.PathLike, run: dict | None) -> str | None:
    """``run_dir/checkpoints/last.pt`` if it holds a head of the run settings ``run`` (what
    :func:`_train_head` resumes from), else None (a checkpoint of other settings is not used)."""
    last = Path(run_dir) / "checkpoints" / "last.pt"
    if not last.is_file():
        return None
    try:
        config = load_checkpoint(last).get("config") or {}
    except AtomsslError as exc:  # e.g. truncated by a crash of another kind than a kill
        log.info("%s: not resumed (%s)", last, exc)
        return None
    if config.get(RUN_KEY) != plain(run or {}):
        log.info("%s: written with other settings: the head starts again", last)
        return None
    log.info("resuming from %s", last)
    return str(last)


def _accuracy(backbone, head, clouds, y, chunk: int = 2048, device="cpu") -> float:
    emb = torch.as_tensor(embed_clouds(backbone, clouds, chunk, device=device), device=device)
    with torch.no_grad():
        pred = head(emb).argmax(-1).cpu().numpy()
    return float((pred == y).mean())


def _check_split(split: str) -> None:
    if split not in TRANSFER_SPLITS:
        raise AtomsslError(
            f"unknown transfer split {split!r}; choose from {sorted(TRANSFER_SPLITS)}"
        )


def split_reference_clouds(split: str, n_min: int = 4096) -> ReferenceClouds:
    """The reference clouds of a transfer split (:data:`TRANSFER_SPLITS`), as :func:`transfer`
    draws from."""
    _check_split(split)
    names = TRANSFER_SPLITS[split]
    if callable(names):
        names = names()
    return (
        reference_clouds(n_min=n_min, seed=123)
        if names is None
        else reference_clouds(names, n_min=n_min, seed=123)
    )
