"""Adversarial refinement of the generator (``atomssl gan --config FILE.yaml``), run by the
training engine (:mod:`atomssl.train._engine`) as a LightningModule with manual optimisation
(:class:`~._gan_module.GanModule`; losses in :mod:`._gan_losses`). Per step:

1. corrupt a batch of real crystals (mask + ``sigma x d_min`` noise) and repair it
   *differentiably* (:func:`generate`: Gumbel-softmax / straight-through species into
   ``z_soft``, positions minus predicted noise);
2. generator loss = ``adversarial_weight x adv + species_weight x CE(masked) + noise_weight x MSE``,
   with ``adv = softplus(-D(fake))`` (non-saturating) or ``-D(fake)`` (Wasserstein); the
   discriminator's parameters are frozen during this step, but its gradient flows through
   ``fake`` into the generator;
3. every ``d_every`` steps, ``d_steps`` discriminator updates (own, lower learning rate) on real
   crystals (uniform ``+-real_jitter x d_min`` noise, one-hot species) vs detached fakes:
   ``softplus(-D(real)) + softplus(D(fake))``, or ``D(fake) - D(real) + gp_weight x GP`` with the
   gradient penalty on interpolated species and positions (real and fake share atoms and edges).

With ``loss.critic_positions: real`` the critic sees the generated species on the real positions
(:func:`~._discriminator.critic_view`), so it judges chemistry alone.

Before the adversarial steps the discriminator, initialised from a pretrained backbone, is
fine-tuned as a real-vs-reconstructed classifier for ``discriminator.classifier_steps`` steps (not
again when a run resumes). The ``trainer`` section holds the engine's options (accelerator,
devices, strategy, num_nodes, precision, ``checkpoint_every_n_steps``); the run's length, logging
and gradient clipping are ``train.steps``, ``train.log_every`` and ``optim.grad_clip``.

Run folder: ``config.yaml``, ``classifier.csv``, ``metrics.csv`` (one row per ``log_every``
steps), ``checkpoints/last.pt`` (resume point; also loads with :meth:`Generator.from_checkpoint`),
``checkpoints/generator.pt`` (loads with :meth:`Generator.from_checkpoint`),
``checkpoints/discriminator.pt``, ``logs/version_N/metrics.csv``, ``loss_curve.png``,
``summary.json``. ``gan(..., resume=True)`` (``atomssl gan --resume RUN``) continues from
``last.pt`` and ends with the weights an uninterrupted run has.
"""

from __future__ import annotations

import copy
import csv
import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from ..errors import ConfigError
from ..graph import to_graph
from ..train._engine import clean_partial_files, is_worker, make_trainer, resolve_run_dir
from ..train._sampler import LoaderPosition
from ..utils import dump_config, save_figure, write_csv, write_json
from ..utils._schema import Schema
from ._discriminator import CRITIC_POSITIONS, Discriminator, train_classifier
from ._gan_losses import LOSS_KINDS
from ._gan_module import GAN_TRAINER_DEFAULTS, GanModule, LastCheckpoint, gan_trainer_options
from ._reconstruct import Generator

log = logging.getLogger(__name__)

GAN_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": {"sources": ["synthetic"], "limit": None, "batch_size": 8, "max_atoms": None},
    "generator": {"checkpoint": None, "backbone": {"name": "equiformer", "size": "tiny"}},
    "discriminator": {
        "checkpoint": None,
        "hidden": 64,
        "composition": False,
        "chemistry": False,
        "classifier_steps": 50,
        "classifier_lr": 3.0e-4,
    },
    "corruption": {"mask": "mixed", "sigma": 0.2, "fraction": 0.15},
    "loss": {
        "kind": "nonsaturating",  # nonsaturating | wgan-gp
        "adversarial_weight": 0.1,
        "species_weight": 1.0,
        "noise_weight": 1.0,
        "gp_weight": 10.0,
        "tau": 1.0,
        "hard": True,
        "gumbel": True,
        "real_jitter": 1.0e-3,
        "critic_positions": "generated",  # generated | real (the critic judges species alone)
    },
    "optim": {
        "lr_g": 1.0e-4,
        "betas_g": [0.9, 0.999],
        "lr_d": 1.0e-5,
        "betas_d": [0.5, 0.999],
        "d_every": 10,
        "d_steps": 1,
        "grad_clip": 1.0,
    },
    "train": {"steps": 200, "log_every": 10},
    "run": {"root": "runs", "name": "gan"},
    "trainer": dict(GAN_TRAINER_DEFAULTS),
}
#: validated on load (atomssl.utils._schema). Loosely, on purpose: ``generator.backbone`` (a
#: backbone name, or the options of the chosen backbone)
SCHEMA = Schema(
    "gan",
    GAN_DEFAULTS,
    choices={
        "loss.kind": LOSS_KINDS,
        "loss.critic_positions": CRITIC_POSITIONS,
        "corruption.mask": ("species", "random", "mixed"),
    },
    types={
        "data.sources": (list, str, dict),
        "data.limit": (int, None),
        "data.max_atoms": (int, None),
        "generator.checkpoint": (str, None),
        "generator.backbone": (dict, str),
        "discriminator.checkpoint": (str, None),
        "optim.grad_clip": (float, None),
    },
    open=("generator.backbone",),
)


# ------------------------------------------------------------------------------------ config
def prepare_gan_config(config: dict) -> dict:
    """``config`` merged over :data:`GAN_DEFAULTS` (copies; the input is left as is) and checked:
    :class:`ConfigError` for an unknown ``loss.kind`` or ``loss.critic_positions``, or
    ``optim.d_every`` / ``optim.d_steps`` below 1."""
    from ..utils._config import _merge

    out = _merge(copy.deepcopy(GAN_DEFAULTS), copy.deepcopy(config or {}))
    if out["loss"]["kind"] not in LOSS_KINDS:
        raise ConfigError(f"loss.kind must be one of {LOSS_KINDS}, got {out['loss']['kind']!r}")
    if out["loss"]["critic_positions"] not in CRITIC_POSITIONS:
        raise ConfigError(
            f"loss.critic_positions must be one of {CRITIC_POSITIONS}, got {out['loss']['critic_positions']!r}"
        )
    for key in ("d_every", "d_steps"):
        if int(out["optim"][key]) < 1:
            raise ConfigError(f"optim.{key} must be >= 1")
    return out


def load_graphs(data_cfg: dict, cutoff: float, dtype=torch.float32) -> list:
    """Graphs of the configured sources (``max_atoms`` drops larger structures, ``limit`` caps the count)."""
    from ..train._data import load_source

    graphs = []
    for entry in data_cfg.get("sources") or []:
        for s in load_source(entry):
            if data_cfg.get("max_atoms") and s.n_atoms > int(data_cfg["max_atoms"]):
                continue
            graphs.append(to_graph(s, cutoff=cutoff, dtype=dtype))
    if data_cfg.get("limit") is not None:
        graphs = graphs[: int(data_cfg["limit"])]
    if not graphs:
        raise ConfigError("gan: no training structures (data.sources)")
    return graphs


def build_models(config: dict) -> tuple[Generator, Discriminator]:
    gcfg, dcfg = config["generator"], config["discriminator"]
    if gcfg.get("checkpoint"):
        gen = Generator.from_checkpoint(gcfg["checkpoint"])
    else:
        log.warning("gan: no generator.checkpoint: starting from an untrained generator")
        gen = Generator.build(gcfg.get("backbone") or "equiformer")
    init = dcfg.get("checkpoint") or gcfg.get("checkpoint")
    comp, chem = bool(dcfg.get("composition", False)), bool(dcfg.get("chemistry", False))
    if init:
        disc = Discriminator.from_checkpoint(
            init, hidden=int(dcfg.get("hidden", 64)), composition=comp, chemistry=chem
        )
    else:
        disc = Discriminator(copy.deepcopy(gen.backbone), int(dcfg.get("hidden", 64)), comp, chem)
    return gen, disc


# --------------------------------------------------------------------------------------- run
def gan(
    config: dict,
    run_dir: str | os.PathLike | None = None,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """Run adversarial refinement (or, with ``resume=True`` and the same ``run_dir``, continue it
    from ``checkpoints/last.pt``); returns (and writes) the summary. Under DDP only rank 0 writes
    the run folder and returns the summary (the other ranks return ``{}``)."""
    config = prepare_gan_config(config)
    trainer_cfg = gan_trainer_options(config)
    seed = int(config["seed"])
    L.seed_everything(seed, workers=True, verbose=False)
    gen, disc = build_models(config)
    cutoff = float(gen.graph_spec["cutoff"])
    d_cutoff = float(disc.backbone.graph_spec.get("cutoff", cutoff))
    if d_cutoff > cutoff:
        raise ConfigError(
            f"gan: the discriminator's cutoff ({d_cutoff} A) exceeds the "
            f"generator's ({cutoff} A); graphs are built at the generator's"
        )
    if d_cutoff < cutoff:
        disc.edge_cutoff = d_cutoff
    graphs = load_graphs(config["data"], cutoff)
    run_dir = resolve_run_dir(config["run"], run_dir, "gan")
    ckpt = run_dir / "checkpoints"
    last = ckpt / "last.pt"
    zero = not is_worker()
    if zero:
        for p in clean_partial_files(ckpt) + clean_partial_files(run_dir):
            log.info("removed partial file %s left by an interrupted run", p)
        dump_config(config, run_dir / "config.yaml")
        log.info("run folder: %s", run_dir)
    t0 = time.perf_counter()
    ckpt_path = str(last) if resume and last.is_file() else None
    if resume and ckpt_path is None:
        log.info("no checkpoint in %s yet: starting from scratch", ckpt)
    if ckpt_path is not None:  # the critic's state is in last.pt
        log.info("resuming from %s", last)
        cls_rows = _read_csv(run_dir / "classifier.csv")
    else:
        cls_rows = _pretrain_critic(config, gen, disc, graphs)
        if zero:
            write_csv(run_dir / "classifier.csv", cls_rows)

    module = GanModule(gen, disc, graphs, config)
    every = trainer_cfg.get("checkpoint_every_n_steps")
    callbacks = [LastCheckpoint(last, every), LoaderPosition()]
    # under DDP the critic is unused in the generator's backward pass and vice versa
    trainer = make_trainer(trainer_cfg, run_dir, callbacks, progress, has_val=False,
                           find_unused_parameters=True, use_distributed_sampler=False)  # fmt: skip
    trainer.fit(module, ckpt_path=ckpt_path, weights_only=True)
    if not trainer.is_global_zero:
        return {}

    rows = module.rows
    write_csv(run_dir / "metrics.csv", rows)
    final = rows[-1] if rows else {}
    gen.save(ckpt / "generator.pt", config=config, metrics=final)
    disc.save(ckpt / "discriminator.pt", config=config, metrics=final)
    _plot(rows, cls_rows, run_dir / "loss_curve.png")
    summary = {
        "steps": module.steps_done,
        "structures": len(graphs),
        "processes": trainer.world_size,
        "seconds": time.perf_counter() - t0,
        "classifier_final_accuracy": float(np.mean([r["accuracy"] for r in cls_rows[-10:]]))
        if cls_rows
        else None,
        "final": final,
        "generator_checkpoint": str(ckpt / "generator.pt"),
        "discriminator_checkpoint": str(ckpt / "discriminator.pt"),
        "last_checkpoint": str(last),
    }
    write_json(run_dir / "summary.json", summary)
    return summary


def _pretrain_critic(config: dict, gen: Generator, disc: Discriminator, graphs: list) -> list:
    """The critic's real-vs-reconstructed classifier pre-training; one row per step."""
    dcfg, lc, c = config["discriminator"], config["loss"], config["corruption"]
    return train_classifier(
        disc,
        gen,
        graphs,
        steps=int(dcfg["classifier_steps"]),
        batch_size=int(config["data"]["batch_size"]),
        lr=float(dcfg["classifier_lr"]),
        mask=c["mask"],
        sigma=float(c["sigma"]),
        jitter=float(lc["real_jitter"]),
        seed=int(config["seed"]) + 1,
        critic_positions=lc["critic_positions"],
    )


def load_gan_run_config(run_dir: str | os.PathLike) -> dict:
    """The ``config.yaml`` of a GAN run folder (what ``--resume`` continues)."""
    from ..train._runkit import load_run_config

    return load_run_config(run_dir, "gan")


def _read_csv(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [
            {k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(fh)
        ]


def _plot(rows: list[dict], cls_rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
    if cls_rows:
        axes[0].plot([r["step"] for r in cls_rows], [r["accuracy"] for r in cls_rows])
    axes[0].set_title("classifier pre-training accuracy")
    for key in ("species_ce", "noise_mse", "adversarial"):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            axes[1].plot(*zip(*pts), label=key)
    axes[1].set_title("generator losses")
    axes[1].legend(fontsize=8)
    for key in ("d_score_real", "d_score_fake"):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            axes[2].plot(*zip(*pts), label=key)
    axes[2].set_title("critic scores")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
