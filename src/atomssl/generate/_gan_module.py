"""The LightningModule of adversarial refinement, run by the training engine
(:func:`atomssl.train._engine.make_trainer`) with manual optimisation: two optimisers at their own
rates, one generator update every step and ``optim.d_steps`` critic updates every
``optim.d_every`` steps (see :mod:`._gan` for the losses).

A run is ``train.steps`` steps (one generator update each), counted by the module itself: with
manual optimisation Lightning's ``global_step`` counts every optimiser step, critic ones included.
Batches come from :func:`atomssl.train._data.make_loader` (each epoch a permutation of the
structures fixed by (seed, epoch), split exactly between DDP ranks, its position saved in
checkpoints); corruptions, Gumbel noise and the critic's jitter are drawn from RNGs seeded by
(seed, step, rank). A run resumed from ``last.pt`` (written at every epoch end, every N steps
with ``trainer.checkpoint_every_n_steps: N`` and after the last step) therefore ends with the
weights, and the ``metrics.csv`` rows, of an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from ..errors import ConfigError
from ..graph import collate
from ..train._engine import TRAINER_DEFAULTS, check_finite
from ._discriminator import Discriminator, critic_view, real_batch
from ._gan_losses import discriminator_loss, generator_adversarial_loss, reconstruction_losses
from ._reconstruct import TASK_KEY, Generator, corrupt_batch, generate

#: the GAN's own options in place of these ``trainer`` ones
_NOT_TRAINER = {
    "max_epochs": "train.steps",
    "max_steps": "train.steps",
    "gradient_clip_val": "optim.grad_clip",
    "log_every_n_steps": "train.log_every",
}
#: the GAN's ``trainer`` section (engine options; + ``checkpoint_every_n_steps: N``)
GAN_TRAINER_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in TRAINER_DEFAULTS.items() if k not in _NOT_TRAINER},
    "checkpoint_every_n_steps": None,
}


def gan_trainer_options(config: dict) -> dict[str, Any]:
    """The ``make_trainer`` options of a GAN run (its ``trainer`` section, checked)."""
    tcfg = dict(config.get("trainer") or {})
    for key, instead in _NOT_TRAINER.items():
        if tcfg.get(key) is not None:
            raise ConfigError(f"gan: trainer.{key} does not apply; set {instead}")
    every = tcfg.get("checkpoint_every_n_steps")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ConfigError(
            "trainer.checkpoint_every_n_steps must be a positive number of steps (or null), "
            f"got {every!r}"
        )
    # last.pt is written by LastCheckpoint, not by Lightning's default ModelCheckpoint
    tcfg.update(
        max_epochs=-1,
        log_every_n_steps=int(config["train"]["log_every"]),
        enable_checkpointing=False,
    )
    return tcfg


class GanModule(L.LightningModule):
    """Generator + critic, trained adversarially on ``graphs`` (see the module docstring)."""

    def __init__(self, gen: Generator, disc: Discriminator, graphs: list, config: dict):
        super().__init__()
        self.automatic_optimization = False
        self.gen, self.disc = gen.train(), disc.train()  # the classifier leaves gen in eval mode
        self.graphs = graphs
        self.config = config
        self.seed = int(config["seed"])
        self.steps = int(config["train"]["steps"])
        self.log_every = max(int(config["train"]["log_every"]), 1)
        self.steps_done = 0  # generator updates made (the run's step)
        self.rows: list[dict[str, float]] = []  # one per log_every steps: metrics.csv
        self._acc: dict[str, list[float]] = {}  # the current window's values

    # ---------------------------------------------------------------------------- data
    def train_dataloader(self):
        from ..train._data import make_loader

        trainer = self.trainer
        return make_loader(self.graphs, int(self.config["data"]["batch_size"]),
                           trainer.world_size, trainer.global_rank, shuffle=True, seed=self.seed,
                           pin_memory=self.device.type == "cuda", collate_fn=collate)  # fmt: skip

    def configure_optimizers(self):
        o = self.config["optim"]
        opt_g = torch.optim.Adam(
            self.gen.parameters(), lr=float(o["lr_g"]), betas=tuple(o["betas_g"])
        )
        opt_d = torch.optim.Adam(
            self.disc.parameters(), lr=float(o["lr_d"]), betas=tuple(o["betas_d"])
        )
        return [opt_g, opt_d]

    # --------------------------------------------------------------------------- steps
    def on_train_batch_start(self, batch, batch_idx):
        if self.steps_done >= self.steps:  # resuming a finished run
            self.trainer.should_stop = True
            return -1
        return None

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.steps_done >= self.steps:  # train.steps reached: end here, mid-epoch or not
            self.trainer.should_stop = True

    def _step_rng(self) -> torch.Generator:
        """Reseed the global RNG (Gumbel noise, dropout) and return the step's own generator
        (corruption, critic jitter, penalty mix), both from (seed, step, rank)."""
        seq = np.random.SeedSequence([self.seed, 5, self.steps_done, int(self.global_rank)])
        a, b = (int(x >> 1) for x in seq.generate_state(2, dtype=np.uint64))
        torch.manual_seed(a)
        return torch.Generator().manual_seed(b)

    def _update(self, opt, loss: torch.Tensor) -> None:
        check_finite(loss, self.current_epoch, self.steps_done)  # before NaN reaches the weights
        opt.zero_grad()
        self.manual_backward(loss)
        clip = self.config["optim"].get("grad_clip")
        if clip:
            self.clip_gradients(opt, gradient_clip_val=float(clip), gradient_clip_algorithm="norm")
        opt.step()

    def training_step(self, batch, batch_idx):
        lc, o, c_cfg = self.config["loss"], self.config["optim"], self.config["corruption"]
        g = self._step_rng()
        opt_g, opt_d = self.optimizers()
        c = corrupt_batch(batch, c_cfg["mask"], float(c_cfg["sigma"]), float(c_cfg["fraction"]), g)
        unit = self.gen.train_sigma * c.d_min
        fake, logits, pred = generate(
            self.gen, batch, c, float(lc["tau"]), bool(lc["hard"]), bool(lc["gumbel"])
        )
        rec = reconstruction_losses(batch, c, logits, pred, unit)
        shown = critic_view(fake, batch, lc["critic_positions"])
        self.disc.requires_grad_(False)  # the critic's gradient reaches the generator, not itself
        adv = generator_adversarial_loss(self.disc, shown, lc["kind"])
        self.disc.requires_grad_(True)
        loss_g = (
            float(lc["adversarial_weight"]) * adv
            + float(lc["species_weight"]) * rec["species"]
            + float(lc["noise_weight"]) * rec["noise"]
        )
        self._update(opt_g, loss_g)
        m = c.mask
        vals = {
            "loss_g": float(loss_g.detach()),
            "adversarial": float(adv.detach()),
            "species_ce": float(rec["species"].detach()),
            "noise_mse": float(rec["noise"].detach()),
            "species_acc": float((logits[m].argmax(-1) == batch.z[m] - 1).float().mean()),
        }
        if self.steps_done % int(o["d_every"]) == 0:
            for _ in range(int(o["d_steps"])):
                real = real_batch(batch, float(lc["real_jitter"]), g)
                d = discriminator_loss(
                    self.disc, real, shown, lc["kind"], float(lc["gp_weight"]), g
                )
                self._update(opt_d, d["loss"])
            vals.update({f"d_{k}": float(v.detach()) for k, v in d.items()})
        n = int(batch.num_graphs)
        self.log("loss_g", vals["loss_g"], prog_bar=True, logger=False, batch_size=n)
        self.log("acc", vals["species_acc"], prog_bar=True, logger=False, batch_size=n)
        self._record(vals, n)
        self.steps_done += 1
        return {"loss": loss_g.detach()}  # the engine's NonFiniteGuard reads it

    def _record(self, vals: dict[str, float], n: int) -> None:
        """Average each value over ``train.log_every`` steps (and over DDP ranks): one row."""
        for k, v in vals.items():
            self._acc.setdefault(k, []).append(v)
        done = self.steps_done + 1
        if done % self.log_every and done != self.steps:
            return
        keys = list(self._acc)
        means = torch.tensor([float(np.mean(self._acc[k])) for k in keys], dtype=torch.float64)
        if self.trainer.world_size > 1:
            means = self.trainer.strategy.reduce(means.to(self.device), reduce_op="mean").cpu()
        row = dict(zip(keys, means.tolist()))
        self.rows.append({"step": done, **row})
        self._acc = {}
        self.log_dict(
            {f"train/{k}": v for k, v in row.items()}, on_step=True, on_epoch=False, batch_size=n
        )

    # ----------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from ..train._checkpoint import plain

        # the atomssl part is the generator's checkpoint (Generator.from_checkpoint reads it);
        # the critic, optimisers and loop state are in the trainer state
        checkpoint["atomssl"] = {
            "config": plain(self.config),
            "backbone_config": plain(self.gen.backbone.config),
            "backbone": self.gen.backbone.state_dict(),
            "tasks": {TASK_KEY: self.gen.task.state_dict()},
            "task_configs": plain({TASK_KEY: getattr(self.gen.task, "config", {})}),
            "metrics": plain(self.rows[-1] if self.rows else {}),
        }
        checkpoint["gan"] = plain(
            {"steps_done": self.steps_done, "rows": self.rows, "window": self._acc}
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint.pop("atomssl", None)
        state = checkpoint.get("gan") or {}
        self.steps_done = int(state.get("steps_done", 0))
        self.rows = list(state.get("rows", []))
        self._acc = {k: list(v) for k, v in (state.get("window") or {}).items()}


class LastCheckpoint(Callback):
    """Write ``path`` (``last.pt``) at every epoch end, every ``every`` GAN steps (mid-epoch resume
    points) and after the run's last step (so that a run given more ``train.steps`` resumes where
    it stopped, mid-epoch); never twice for the same step."""

    def __init__(self, path: Path, every: int | None = None) -> None:
        self.path, self.every = Path(path), int(every or 0)
        self._saved_at: int | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._saved_at = pl_module.steps_done  # a resumed run's state is on disk already

    def _save(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # with optimiser and loop states
        self._saved_at = pl_module.steps_done

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = pl_module.steps_done
        if n != self._saved_at and (n >= pl_module.steps or (self.every and n % self.every == 0)):
            self._save(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if pl_module.steps_done != self._saved_at:
            self._save(trainer, pl_module)
