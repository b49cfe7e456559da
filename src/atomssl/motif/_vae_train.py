"""Training of the Gram VAE on the engine (:mod:`atomssl.train._engine`): ``atomssl motif train``.

Per epoch ``e`` (``train.epochs`` of them, Adam): the learning rate decays along a cosine from
``lr`` to ``lr_final``; ``beta`` warms up linearly over ``beta_warmup`` epochs; with
``permutation_copies > 0`` the training set is the environments plus that many random neighbour
relabellings of each, drawn afresh from (seed, e). Batches deal that set once per epoch in an
order fixed by (seed, e) (exact per-rank shares under DDP); the latent noise of a step is seeded
by (seed, step, rank). So a run killed and resumed from ``checkpoints/last.pt`` ends with the
weights of an uninterrupted one. Validation: reconstruction and KL of the held-out environments
(posterior means) every epoch. Normalisation statistics are fitted on the training environments.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from ..errors import ConfigError
from ..train._checkpoint import plain
from ..train._engine import TRAINER_DEFAULTS, check_finite, make_trainer, scalar_metrics
from ..train._report import merged_metrics
from ..train._runkit import index_loader, resume_point, run_checkpoints, schedule, seed_of
from ._environments import GramNormalizer, augment_permutations
from ._vae import GramVAE, TrainConfig, VAEConfig, shell_groups

#: ``backbone_config.name`` of the VAE in the engine's checkpoints (``checkpoints/last.pt``)
ENGINE_NAME = "motif_vae"

#: the ``trainer`` options of ``atomssl motif train`` (``max_epochs`` is ``train.epochs``)
TRAINER: dict[str, Any] = {
    **{k: v for k, v in TRAINER_DEFAULTS.items() if k != "max_epochs"},  # accelerator: auto
    "gradient_clip_val": None,
    "log_every_n_steps": 1,
    "checkpoint_every_n_steps": None,  # also write last.pt every N steps (mid-epoch resume)
}


class VAEModule(L.LightningModule):
    """A :class:`GramVAE` fitted to training Gram matrices, validated on held-out ones."""

    def __init__(self, train_grams, val_grams, model_config: VAEConfig, config: TrainConfig,
                 run_config: dict | None = None):  # fmt: skip
        super().__init__()
        self.cfg, self.run_config = config, run_config
        k = model_config.k
        self.iu = np.triu_indices(k)
        torch.manual_seed(config.seed)
        self.model = GramVAE(model_config)
        self.normalizer = GramNormalizer.fit(train_grams[:, self.iu[0], self.iu[1]], k)
        self.model.set_normalizer(self.normalizer)
        self.train_grams = np.asarray(train_grams)
        self.within = None if config.permutation_within == "all" else shell_groups(k)
        has_val = val_grams is not None and len(val_grams)
        self.x_val = self._features(val_grams) if has_val else None
        # the training features of the current epoch
        self._x: torch.Tensor | None = None
        self._x_epoch: int | None = None
        self._sums = torch.zeros(4, dtype=torch.float64)  # epoch sums: loss, recon, kl, samples
        self._pending: dict | None = None  # the sums of a checkpoint, for the epoch it was in

    def _features(self, grams) -> torch.Tensor:
        x = self.normalizer.transform(np.asarray(grams)[:, self.iu[0], self.iu[1]])
        return torch.as_tensor(x, dtype=torch.float32)

    def lr_at(self, epoch: int) -> float:
        c = self.cfg
        return c.lr_final + 0.5 * (c.lr - c.lr_final) * (1 + math.cos(math.pi * epoch / c.epochs))

    def beta_at(self, epoch: int) -> float:
        return self.cfg.beta * min(1.0, (epoch + 1) / max(1, self.cfg.beta_warmup))

    # ---------------------------------------------------------------------------- data
    def train_dataloader(self):
        n = len(self.train_grams) * (1 + self.cfg.permutation_copies)
        return index_loader(n, self.cfg.batch_size, self.trainer, seed=self.cfg.seed)

    def val_dataloader(self):
        if self.x_val is None:
            return []
        n = len(self.x_val)  # every rank scores the whole held-out set in one batch
        return index_loader(n, n, None, shuffle=False, resumable=False)

    def _start_epoch(self, e: int) -> None:
        """The epoch's training features, and its metric sums (restored on a resume mid-epoch;
        Lightning does not call ``on_train_epoch_start`` then)."""
        c = self.cfg
        grams = self.train_grams
        if c.permutation_copies:
            rng = np.random.default_rng([c.seed, e])
            grams = augment_permutations(grams, c.permutation_copies, rng, self.within)
        self._x, self._x_epoch = self._features(grams).to(self.device), e
        self._sums.zero_()
        if self._pending is not None and self._pending["epoch"] == e:  # resumed mid-epoch
            self._sums += torch.tensor(self._pending["sums"], dtype=torch.float64)
        self._pending = None

    # ---------------------------------------------------------------------------- steps
    def training_step(self, idx, batch_idx):
        step, epoch = int(self.global_step), int(self.current_epoch)
        if self._x_epoch != epoch:
            self._start_epoch(epoch)
        assert self._x is not None  # set by _start_epoch
        torch.manual_seed(seed_of(self.cfg.seed, 3, step, self.global_rank))  # latent noise
        x = self._x[idx]
        recon, mu, logvar = self.model(x)
        beta = self.beta_at(epoch)
        loss, rec, kl = self.model.loss(x, recon, mu, logvar, beta)
        check_finite(loss, epoch, step)
        # epoch means are logged once an epoch (Lightning's per-call logging costs more than a
        # step of this model); the sums travel in checkpoints for a resume mid-epoch
        parts = torch.stack([loss.detach(), rec.detach(), kl.detach(), loss.new_ones(())])
        self._sums += parts.double().cpu() * len(x)
        return loss

    def on_train_epoch_end(self) -> None:
        loss, recon, kl = (self._sums[:3] / max(float(self._sums[3]), 1.0)).tolist()
        epoch = int(self.current_epoch)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        self.log("train/recon", recon, sync_dist=True)
        self.log("train/kl", kl, sync_dist=True)
        self.log("lr", self.lr_at(epoch), sync_dist=True)
        self.log("beta", self.beta_at(epoch), sync_dist=True)

    def validation_step(self, idx, batch_idx):
        x = self.x_val.to(self.device)[idx]
        recon, mu, logvar = self.model(x)
        _, rec, kl = self.model.loss(x, recon, mu, logvar, self.beta_at(int(self.current_epoch)))
        opts = dict(batch_size=len(x), on_step=False, on_epoch=True, sync_dist=True)
        self.log("val/recon", rec, prog_bar=True, **opts)
        self.log("val/kl", kl, **opts)

    def configure_optimizers(self):
        c = self.cfg
        opt = torch.optim.Adam(self.model.parameters(), lr=c.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e: self.lr_at(e) / c.lr if c.lr else 0.0
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # ----------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        metrics = scalar_metrics(self)
        model_config = asdict(self.model.config)
        checkpoint["atomssl"] = {
            "config": plain(self.run_config or {"train": asdict(self.cfg)}),
            "backbone_config": plain({"name": ENGINE_NAME, **model_config}),
            "backbone": self.model.state_dict(),
            "metrics": metrics,
        }
        checkpoint["motif_vae_epoch_sums"] = {
            "epoch": int(self.current_epoch),
            "sums": self._sums.tolist(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint.pop("atomssl", None)
        self._pending = checkpoint.get("motif_vae_epoch_sums")


def train_vae(
    train_grams: np.ndarray,
    val_grams: np.ndarray | None = None,
    model_config: VAEConfig | None = None,
    config: TrainConfig | None = None,
    run_dir: str | os.PathLike | None = None,
    *,
    trainer: dict | None = None,
    resume: bool = False,
    progress: bool = False,
    run_config: dict | None = None,
) -> tuple[GramVAE, list[dict]]:
    """Fit a :class:`GramVAE` on Gram matrices (n, k, k) in A^2; returns the model (eval mode) and
    the per-epoch history (epoch, lr, beta, loss, recon, kl, val_recon, val_kl).

    ``run_dir`` receives ``logs/`` and ``checkpoints/last.pt`` (end of every epoch, and every
    ``trainer.checkpoint_every_n_steps``); with None, only logs, in a temporary folder.
    ``resume``: continue from its ``last.pt``. ``trainer``: the engine's options (:data:`TRAINER`
    where not given). ``run_config`` is stored in the checkpoints.
    """
    config = config or TrainConfig()
    k = train_grams.shape[-1]
    model_config = model_config or VAEConfig(k=k)
    if model_config.k != k:
        raise ValueError(f"model k={model_config.k} but Gram matrices are {k}x{k}")
    tcfg = trainer_options(trainer, config.epochs)
    if run_dir is None:
        with tempfile.TemporaryDirectory(prefix="atomssl-motif-train-") as tmp:
            args = (train_grams, val_grams, model_config, config, tcfg, Path(tmp))
            return _fit(*args, progress=progress, run_config=run_config, checkpoints=False)
    args = (train_grams, val_grams, model_config, config, tcfg, Path(run_dir))
    return _fit(*args, resume=resume, progress=progress, run_config=run_config)


def trainer_options(trainer: dict | None, epochs: int) -> dict:
    """The engine's options of a training of ``epochs`` epochs (:data:`TRAINER` where not set)."""
    if epochs < 1:
        raise ConfigError(f"train.epochs must be >= 1, got {epochs}")
    return schedule(trainer, TRAINER, {"max_epochs": int(epochs)}, "train.epochs")


def _fit(train_grams, val_grams, model_config, config, tcfg: dict, run_dir: Path, *,
         resume=False, progress=False, run_config=None, checkpoints=True):  # fmt: skip
    L.seed_everything(int(config.seed), workers=True, verbose=False)
    module = VAEModule(train_grams, val_grams, model_config, config, run_config)
    has_val = module.x_val is not None
    every = tcfg.get("checkpoint_every_n_steps")
    callbacks = run_checkpoints(run_dir / "checkpoints", None, every) if checkpoints else []
    if not checkpoints:
        tcfg = {**tcfg, "enable_checkpointing": False}
    fit = make_trainer(tcfg, run_dir, callbacks, progress, has_val=has_val,
                       use_distributed_sampler=False)  # fmt: skip
    fit.fit(module, ckpt_path=resume_point(run_dir, resume), weights_only=True)
    model = module.model.cpu().eval()
    return model, history_rows(merged_metrics(run_dir))


#: history column <- logged metric
_HISTORY = {"lr": "lr", "beta": "beta", "loss": "train/loss", "recon": "train/recon",
            "kl": "train/kl", "val_recon": "val/recon", "val_kl": "val/kl"}  # fmt: skip


def history_rows(rows: list[dict]) -> list[dict]:
    """Per-epoch metrics as the history (epochs counted from 1)."""
    return [{"epoch": int(r["epoch"]) + 1, **{h: r[m] for h, m in _HISTORY.items() if m in r}}
            for r in rows if "train/loss" in r]  # fmt: skip
