"""``atomssl motif train``: a Gram VAE trained on the engine (:mod:`atomssl.motif._vae_train`).

Run folder::

    RUN/config.yaml                 the config used (``--resume RUN`` reads it back)
    RUN/checkpoints/model.pt        the trained VAE (:func:`save_vae`), read by ``atomssl motif
                                    sample | interpolate | inpaint | evaluate --checkpoint``
    RUN/checkpoints/last.pt         the engine's: end of the latest epoch (+ trainer state for
                                    ``--resume``), and every ``trainer.checkpoint_every_n_steps``
    RUN/checkpoints/best.pt         the engine's: lowest held-out reconstruction
    RUN/logs/version_N/metrics.csv  one version per (re)start
    RUN/metrics.csv                 per epoch, merged over restarts (train/..., val/..., lr, beta)
    RUN/history.csv                 the same with the columns epoch, lr, beta, loss, recon, kl,
                                    val_recon, val_kl (epochs from 1)
    RUN/loss_curve.png, metrics.json, reconstruction_rmsd.png   held-out reconstruction
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..train._engine import is_worker
from ..train._report import merged_metrics
from ..train._runkit import start_run
from ..utils import save_figure, write_csv, write_json
from . import _analysis as A
from ._benchmark import reconstruction_metrics
from ._vae import save_vae
from ._vae_train import train_vae, trainer_options
from ._workflow import _model_config, _train_config, split_environments

log = logging.getLogger(__name__)


def run_train(cfg: dict, out=None, progress: bool = True, resume: bool = False) -> Path:
    """Train the VAE of ``cfg`` into the run folder ``out`` (a dated one under ``runs/`` when
    None); ``resume`` continues the run in ``out`` from its ``checkpoints/last.pt``."""
    model_config, train_config = _model_config(cfg), _train_config(cfg)
    trainer_options(cfg.get("trainer"), train_config.epochs)  # bad options fail first
    train, held, _ = split_environments(cfg)  # bad cells fail before a run folder exists
    run = start_run(cfg, out, "motif-train")
    log.info("training on %d environments, %d held out", len(train), len(held))
    t0 = time.time()
    model, history = train_vae(train.grams(), held.grams(), model_config, train_config, run,
                               trainer=cfg.get("trainer"), resume=resume, progress=progress,
                               run_config=cfg)  # fmt: skip
    if is_worker():
        return run
    seconds = time.time() - t0
    save_vae(
        model, run / "checkpoints" / "model.pt", extra={"config": cfg, "train_seconds": seconds}
    )
    write_csv(run / "metrics.csv", merged_metrics(run))
    write_csv(run / "history.csv", history)
    _plot_history(history, run / "loss_curve.png")
    metrics, r = reconstruction_metrics(model, held)
    metrics["train_seconds"] = seconds
    metrics["n_train"] = len(train)
    write_json(run / "metrics.json", {"reconstruction_heldout": metrics})
    A.plot_errors(
        {"held-out RMSD (ordered)": r},
        run / "reconstruction_rmsd.png",
        threshold=0.1,
        xlabel="RMSD (A)",
    )
    log.info(
        "held-out reconstruction RMSD: mean %.3f A, median %.3f A",
        metrics["rmsd_mean"],
        metrics["rmsd_median"],
    )
    return run


def _plot_history(history, path):
    plt = A._plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    e = [h["epoch"] for h in history]
    ax.plot(e, [h["recon"] for h in history], label="train recon")
    if "val_recon" in history[0]:
        ax.plot(e, [h["val_recon"] for h in history], label="held-out recon")
    ax.plot(e, [h["kl"] for h in history], label="KL")
    ax.set(xlabel="epoch", yscale="log")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
