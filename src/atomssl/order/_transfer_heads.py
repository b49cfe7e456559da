"""Experiment (b)'s building blocks: transfer splits' reference clouds, head training, accuracy.

A head (and, but for the frozen core, the backbone under it) trains on the training engine
(:func:`atomssl.train._engine.make_trainer`) as a small :class:`HeadModule`: Adam on
cross-entropy, full batch or random minibatches, seeded so that a seed gives the same weights;
:class:`AccuracyCurve` records the test accuracy along training.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from contextlib import ExitStack, contextmanager

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from ..errors import AtomsslError, ConfigError
from ..train._engine import TRAINER_DEFAULTS, check_finite, make_trainer
from ..train._runkit import schedule
from ._clouds import cloud_batch, embed_clouds
from ._reference import (
    HELD_OUT_PROTOTYPES,
    ReferenceClouds,
    one_component_prototypes,
    reference_clouds,
)

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
    itself (a plain iterable: no sampler, no worker, no draw from the global RNG)."""

    def __init__(self, steps: int):
        self.steps = int(steps)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return iter(range(self.steps))


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits, target)


class HeadModule(L.LightningModule):
    """A classification ``head`` on a ``backbone`` (trained too when ``train_backbone``), Adam on
    cross-entropy at ``lr``. Full batch when ``batch_size`` is None or at least ``len(clouds)``,
    else a fresh random minibatch per step, drawn from ``numpy.random.default_rng(seed)``; the
    global torch RNG is seeded with ``seed`` when training starts. A frozen backbone embeds the
    clouds once, on the training device; only the head trains then."""

    def __init__(self, backbone, head, clouds, y, *, train_backbone: bool, lr: float, seed: int,
                 batch_size: int | None = None):  # fmt: skip
        super().__init__()
        self.backbone, self.head = backbone, head
        self.train_backbone, self.lr, self.seed = bool(train_backbone), float(lr), int(seed)
        for p in backbone.parameters():
            p.requires_grad_(self.train_backbone)
        self.clouds = np.asarray(clouds)
        self.batch_size = batch_size
        self.full = batch_size is None or batch_size >= len(self.clouds)
        self.register_buffer("target", torch.as_tensor(y, dtype=torch.long), persistent=False)
        self.feats: torch.Tensor | None = None
        self.full_batch = None
        self.rng = np.random.default_rng(self.seed)
        self.last_loss = torch.tensor(float("nan"))

    def on_fit_start(self) -> None:
        if not self.train_backbone:  # the frozen core is evaluated once; only the head trains
            emb = embed_clouds(self.backbone, self.clouds, device=self.device)
            self.feats = torch.as_tensor(emb, device=self.device)
        elif self.full:
            self.full_batch = cloud_batch(self.clouds).to(self.device)

    def on_train_start(self) -> None:
        torch.manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)

    def train_dataloader(self):
        return _Steps(self.trainer.max_steps)

    def training_step(self, step, batch_idx):
        ids = (
            None if self.full else self.rng.choice(len(self.clouds), self.batch_size, replace=False)
        )
        idx = slice(None) if ids is None else torch.as_tensor(ids, device=self.device)
        if self.train_backbone:
            self.backbone.train()
            batch = (
                self.full_batch if ids is None else cloud_batch(self.clouds[ids]).to(self.device)
            )
            x = self.backbone(batch).node
        else:
            assert self.feats is not None  # on_fit_start embedded the clouds
            x = self.feats[idx]
        target = self.target[idx]
        loss = _loss(self.head(x), target)
        check_finite(loss, self.current_epoch, self.global_step)
        self.last_loss = loss.detach()
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:  # the rows written:
            # logging costs as much as a head's step, and the other steps' values are dropped
            self.log("train/loss", self.last_loss, on_step=True, on_epoch=False, prog_bar=True,
                     batch_size=len(target))  # fmt: skip
        return loss

    def configure_optimizers(self):
        params = list(self.head.parameters())
        if self.train_backbone:
            params += list(self.backbone.parameters())
        return torch.optim.Adam(params, lr=self.lr)


class AccuracyCurve(Callback):
    """``evaluate(device)`` (the backbone in eval mode) after each step of ``curve_at``."""

    def __init__(self, curve_at: tuple, evaluate: Callable[[torch.device], float]):
        self.curve_at, self.evaluate = set(curve_at), evaluate
        self.curve: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        if step in self.curve_at:
            pl_module.backbone.eval()
            self.curve.append((step, float(self.evaluate(pl_module.device))))


#: the engine's options of a head's training (``transfer(trainer=...)`` overrides them); the
#: schedule (``max_steps``) is set by the mode's steps
HEAD_TRAINER: dict = {
    **{k: v for k, v in TRAINER_DEFAULTS.items() if k != "max_epochs"},
    "accelerator": "cpu",
    "gradient_clip_val": None,  # plain Adam, as the experiment's settings are tuned for
    "log_every_n_steps": 10,
    "enable_checkpointing": False,  # a head trains in seconds: a run is the unit of --resume
}


def trainer_options(trainer: dict | None, steps: int) -> dict:
    """The engine's options of a head trained for ``steps`` steps (:data:`HEAD_TRAINER` where not
    given)."""
    fixed = {"max_steps": int(steps), "max_epochs": -1}
    return schedule(trainer, HEAD_TRAINER, fixed, f"the transfer's steps (steps={steps})")


@contextmanager
def _quiet_banners():
    """No Trainer banner ("GPU available...") per head: the experiment trains many."""
    names = ("lightning.pytorch", "lightning.fabric")
    levels = [logging.getLogger(n).level for n in names]
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="lightning")
            yield
    finally:
        for n, level in zip(names, levels):
            logging.getLogger(n).setLevel(level)


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
) -> tuple[float, list[tuple[int, float]]]:
    """Train ``head`` (and the backbone when ``train_backbone``) through the engine
    (:func:`~atomssl.train._engine.make_trainer`, :class:`HeadModule`) for ``steps`` steps.

    ``trainer``: the engine's options (:data:`HEAD_TRAINER` where not given; one device);
    ``run_dir`` receives ``logs/version_N/metrics.csv`` (None: a temporary folder). Returns the
    last training loss and ``[(step, evaluate(device))]`` at the steps in ``curve_at``; the
    backbone and head stay on the training device, the backbone in eval mode. A non-finite loss
    raises :class:`~atomssl.errors.TrainingError`.
    """
    tcfg = trainer_options(trainer, steps)
    module = HeadModule(backbone, head, clouds, y, train_backbone=train_backbone, lr=lr,
                        seed=seed, batch_size=batch_size)  # fmt: skip
    curve = AccuracyCurve(tuple(curve_at), evaluate) if evaluate is not None else None
    with ExitStack() as stack:
        if run_dir is None:
            run_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="atomssl-head-"))
        stack.enter_context(_quiet_banners())
        fit = make_trainer(tcfg, run_dir, [curve] if curve else [], progress, has_val=False)
        if fit.world_size > 1:
            raise ConfigError(
                f"trainer: a transfer head trains on one device, got world size {fit.world_size} "
                "(set trainer.devices=1)"
            )
        device = fit.strategy.root_device
        try:
            fit.fit(module)
        finally:
            module.to(device)  # Lightning's teardown moves the model to the CPU
            backbone.eval()
    return float(module.last_loss), curve.curve if curve else []


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
