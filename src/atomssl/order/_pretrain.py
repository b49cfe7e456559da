"""Self-supervised pretraining of the per-particle backbone on subsampled neighbour clouds
(``atomssl order pretrain``), on the training engine (:mod:`atomssl.train._engine`).

Pretraining on whole-structure graphs would embed every particle of every crystal per step; here
each step takes a batch of environments (from idealized crystals and/or trajectory frames) and
applies one of the cloud pretext tasks of :mod:`atomssl.task.cloud` in turn, which keeps a step
cheap on a CPU (the module: :mod:`atomssl.order._cloud_module`). Run folder::

    RUN/config.yaml                 the config used (``--resume RUN`` reads it back)
    RUN/backbone.ckpt               the pretrained backbone + task heads (``atomssl order
                                    --checkpoint``, ``load_order_backbone``, ``load_backbone``)
    RUN/checkpoints/last.pt         end of the latest epoch, and every
                                    ``trainer.checkpoint_every_n_steps`` steps (+ trainer state)
    RUN/logs/version_N/metrics.csv  one version per (re)start
    RUN/metrics.csv                 per step: task, loss, baseline (merged over restarts)
    RUN/summary.json                last losses and baselines per task, environments, time

``steps`` is the run's length (``max_steps``; an epoch deals every environment once); ``trainer``
holds the engine's options (accelerator, devices, strategy, num_nodes...). The same config and
seed give the same weights, also across a kill and ``--resume``.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np

from ..train._engine import TRAINER_DEFAULTS, is_worker, make_trainer
from ..train._runkit import resume_point, run_checkpoints, schedule, start_run, step_rows
from ..utils import write_csv, write_json
from ..utils._schema import Schema
from ._cloud_module import CloudPretrainModule, settings_dict

#: the file of the pretrained backbone in the run folder
CHECKPOINT_NAME = "backbone.ckpt"

DEFAULT_BACKBONE = {
    "name": "gaa",
    "k": 12,
    "width": 16,
    "n_blocks": 1,
    "rank": 2,
    "hidden_factor": 1.0,
    "species_dim": 8,
    "dropout": 0.0,
    "normalize": None,
}
DEFAULT_TASKS = ("noisy_bond", "nearest_bond", "cloud_denoise", "shift")

#: ``atomssl order pretrain`` config defaults (PretrainSettings + the environments to train on)
DEFAULTS: dict = {
    "backbone": dict(DEFAULT_BACKBONE),
    "tasks": list(DEFAULT_TASKS),
    "steps": 300,
    "batch": 128,
    "lr": 2e-3,
    "seed": 0,
    "per_crystal": 2000,  # environments per training prototype
    "trajectories": [],  # extxyz trajectories whose frames are added to the pool
    "frames_per_trajectory": 5,
    # the engine's options; the schedule (max_steps) is set by ``steps``
    "trainer": {
        **{k: v for k, v in TRAINER_DEFAULTS.items() if k != "max_epochs"},  # accelerator: auto
        "gradient_clip_val": 5.0,
        "log_every_n_steps": 1,
        "checkpoint_every_n_steps": 50,  # last.pt every N steps (a resume point mid-epoch)
    },
    "run": {"root": "runs", "name": "order-pretrain"},  # the folder made without --out
}
#: validated on load (atomssl.utils._schema). Loosely, on purpose: ``backbone`` takes the options
#: of the chosen backbone, ``tasks`` is a list of cloud task names
SCHEMA = Schema(
    "order",
    DEFAULTS,
    open=("backbone",),
    types={"trainer.checkpoint_every_n_steps": (int, None)},
)


@dataclass
class PretrainSettings:
    """Settings of :func:`pretrain_clouds`: the ``backbone`` config, the pretext ``tasks`` (one per
    step, in rotation), the number of ``steps``, clouds per ``batch``, the Adam learning rate
    ``lr`` (cosine-decayed over the steps) and the ``seed``."""

    backbone: dict = field(default_factory=lambda: dict(DEFAULT_BACKBONE))
    tasks: tuple = DEFAULT_TASKS
    steps: int = 300
    batch: int = 128
    lr: float = 2e-3
    seed: int = 0


def pretrain_clouds(
    clouds: np.ndarray,
    settings: PretrainSettings | None = None,
    run_dir: str | os.PathLike | None = None,
    *,
    trainer: dict | None = None,
    resume: bool = False,
    progress: bool = False,
):
    """Train a backbone on ``clouds`` (n, K, 3) with the pretext tasks in rotation.

    ``run_dir`` receives ``logs/`` and ``checkpoints/last.pt`` (with None, only logs, in a
    temporary folder); with ``resume`` the run continues from its ``checkpoints/last.pt``.
    ``trainer``: the engine's options (``DEFAULTS["trainer"]`` where not given). Returns
    ``(backbone, tasks, history)``: the backbone in eval mode, the task heads, and per step the
    task, its loss and baseline.
    """
    s = settings or PretrainSettings()
    tcfg = trainer_options(trainer, s.steps)
    if run_dir is None:  # logs only
        with tempfile.TemporaryDirectory(prefix="atomssl-order-pretrain-") as tmp:
            tcfg = {**tcfg, "enable_checkpointing": False}
            return _fit(clouds, s, tcfg, Path(tmp), [], False, progress)
    run_dir = Path(run_dir)
    every = tcfg.get("checkpoint_every_n_steps")
    callbacks = run_checkpoints(run_dir / "checkpoints", None, every)
    return _fit(clouds, s, tcfg, run_dir, callbacks, resume, progress)


def trainer_options(trainer: dict | None, steps: int) -> dict:
    """The engine's options of a run of ``steps`` steps (``DEFAULTS["trainer"]`` where not set)."""
    fixed = {"max_steps": int(steps), "max_epochs": -1}
    return schedule(trainer, DEFAULTS["trainer"], fixed, f"steps (steps={steps})")


def _fit(clouds, s: PretrainSettings, tcfg: dict, run_dir: Path, callbacks, resume, progress):
    L.seed_everything(int(s.seed), workers=True, verbose=False)
    module = CloudPretrainModule(s, clouds)
    # a step trains one task's head: the others are unused parameters under DDP; the module's
    # loader deals each rank its exact share itself
    fit = make_trainer(tcfg, run_dir, callbacks, progress, has_val=False,
                       find_unused_parameters=True, use_distributed_sampler=False)  # fmt: skip
    fit.fit(module, ckpt_path=resume_point(run_dir, resume), weights_only=True)
    backbone = module.backbone.cpu().eval()
    tasks = {k: t.cpu() for k, t in module.tasks.items()}
    return backbone, tasks, _history(step_rows(run_dir), module.names)


def _history(rows: list[dict], names: list[str]) -> list[dict]:
    out = []
    for r in rows:  # a row also repeats the last values of the other tasks: take step's own
        name = names[int(r["step"]) % len(names)]
        if f"train/{name}/loss" in r:
            loss, base = r[f"train/{name}/loss"], r.get(f"train/{name}/baseline", float("nan"))
            out.append({"step": int(r["step"]), "task": name, "loss": loss, "baseline": base})
    return out


def last_losses(history: list[dict], n_tasks: int) -> dict[str, dict[str, float]]:
    """Per task, the mean loss and baseline over the last ``4 * n_tasks`` steps."""
    last: dict[str, list] = {}
    for rec in history[-4 * max(1, n_tasks) :]:
        last.setdefault(rec["task"], []).append((rec["loss"], rec["baseline"]))
    return {
        k: {
            "loss": float(np.mean([a for a, _ in v])),
            "baseline": float(np.mean([b for _, b in v])),
        }
        for k, v in last.items()
    }


def save_pretrained(path: str | Path, backbone, tasks, history, settings: PretrainSettings) -> Path:
    """Write an atomssl checkpoint (loadable with :func:`atomssl.train.load_backbone`)."""
    from ..train._checkpoint import save_checkpoint

    last = last_losses(history, len(tasks))
    metrics = {f"{k}/loss": v["loss"] for k, v in last.items()}
    return save_checkpoint(
        path,
        backbone,
        config={"order_pretrain": settings_dict(settings), "time": time.time()},
        tasks=tasks,
        metrics=metrics,
    )


def training_clouds(cfg: dict) -> np.ndarray:
    """The environments of a run: ``per_crystal`` of each training prototype (seeded by ``seed``)
    and those of ``frames_per_trajectory`` evenly spaced frames of each of ``trajectories``."""
    from ..data import iter_structures
    from ..errors import ConfigError
    from ._clouds import frame_clouds, pad_clouds
    from ._reference import reference_clouds

    clouds = []
    if int(cfg["per_crystal"]) > 0:
        clouds.append(
            reference_clouds(per_crystal=int(cfg["per_crystal"]), seed=int(cfg["seed"])).clouds
        )
    for t in cfg["trajectories"]:
        frames = list(iter_structures(t))
        for i in (
            np.linspace(0, len(frames) - 1, int(cfg["frames_per_trajectory"])).round().astype(int)
        ):
            clouds.append(frame_clouds(frames[i]))
    if not clouds:
        raise ConfigError("no environments to pretrain on: per_crystal is 0 and no trajectories")
    return pad_clouds(clouds)


def pretrain_order(
    config: dict,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """``atomssl order pretrain``: a run folder (see the module docstring) from a config filled
    from :data:`DEFAULTS`; ``resume`` continues the run in ``run_dir``. Returns the summary
    (also ``RUN/summary.json``; empty on ranks other than 0)."""
    t0 = time.perf_counter()
    settings = PretrainSettings(backbone=dict(config["backbone"]), tasks=tuple(config["tasks"]),
                                steps=int(config["steps"]), batch=int(config["batch"]),
                                lr=float(config["lr"]), seed=int(config["seed"]))  # fmt: skip
    trainer_options(config.get("trainer"), settings.steps)  # bad options fail first, too
    clouds = training_clouds(config)  # a bad trajectory fails before a run folder exists
    run = start_run(config, run_dir, "order-pretrain", config.get("run"))
    backbone, tasks, history = pretrain_clouds(clouds, settings, run, trainer=config.get("trainer"),
                                               resume=resume, progress=progress)  # fmt: skip
    if is_worker():
        return {}
    path = save_pretrained(run / CHECKPOINT_NAME, backbone, tasks, history, settings)
    write_csv(run / "metrics.csv", history)
    summary = {
        "checkpoint": str(path),
        "run_dir": str(run),
        "environments": int(len(clouds)),
        "steps": settings.steps,
        "seconds": time.perf_counter() - t0,
        "tasks": last_losses(history, len(tasks)),
    }
    write_json(run / "summary.json", summary)
    return summary
