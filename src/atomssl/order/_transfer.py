"""Experiment (b), transfer at 0.1 % labels (``atomssl order transfer``), with a run folder::

    OUT/config.yaml                           the settings (``--resume OUT`` reads them back)
    OUT/runs/<stem>/<mode>-seed<S>/result.json  one run (split, mode, seed): its row, accuracy
                                              curve and the settings it ran with, written
                                              atomically when it finishes
    OUT/runs/<stem>/<mode>-seed<S>/logs/version_N/metrics.csv   its training loss per step
    OUT/runs/<stem>/<mode>-seed<S>/checkpoints/last.pt   its final weights (backbone, head as
                                              task ``head``, trainer state); also every
                                              ``trainer.checkpoint_every_n_steps`` steps
    OUT/<stem>.{csv,md}                       the table: per mode and seed, mean, std
    OUT/<stem>_curve.{csv,md}                 the test accuracy along training (``curve_at``)
    OUT/summary.json                          per split: mean and std accuracy per mode

``<stem>`` is ``transfer`` (``split="training"``) or ``transfer_<split>``. With ``resume=True``
a run already recorded with the same settings (and the same backbone weights and reference
clouds) is read back instead of trained again, and a run stopped mid-way continues from its
``last.pt``: an interrupted experiment, resumed, ends with the table and the weights of an
uninterrupted one. Every head trains on the engine (:mod:`._transfer_heads`), also under DDP
(``trainer.devices=2 trainer.strategy=ddp``: every process runs every head, on its share of the
labelled environments; only rank 0 writes the run folder).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..train._engine import is_worker
from ..utils import atomic_write, dump_config, write_csv, write_json
from ._reference import ReferenceClouds
from ._transfer_heads import (
    _accuracy,
    _check_split,
    _train_head,
    resume_head,
    split_reference_clouds,
)

log = logging.getLogger(__name__)

#: the model trained from scratch with many labels: an estimate of the accuracy attainable from
#: single environments at all, which bounds what any model can gain at 0.1 %
MANY_LABELS = "scratch_many_labels"


def _write_table(path: Path, rows: list[dict]) -> None:
    """``path.csv`` and ``path.md``, both written atomically."""
    write_csv(path.with_suffix(".csv"), rows)
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = (f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values())
        lines.append("| " + " | ".join(cells) + " |")
    with atomic_write(path.with_suffix(".md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _backbone_digest(backbone) -> str:
    state = backbone.state_dict()
    return _digest(*(state[k].detach().cpu().numpy() for k in sorted(state)))


def _device_trainer(device: str | None, trainer: dict | None) -> dict:
    """The engine's options: ``trainer`` over those of ``device`` (``cuda:1`` -> gpu, [1]; None:
    none, the trainer's accelerator, ``auto`` by default)."""
    if device is None:
        return dict(trainer or {})
    dev = torch.device(device)
    base: dict = {"accelerator": "cpu"}
    if dev.type == "cuda":
        base = {"accelerator": "gpu", "devices": [dev.index or 0]}
    elif dev.type != "cpu":
        base = {"accelerator": dev.type}
    return {**base, **(trainer or {})}


def _read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _evaluator(bb, head, clouds, y) -> Callable[[torch.device], float]:
    return lambda device: _accuracy(bb, head, clouds, y, device=device)


def transfer(
    backbone,
    out_dir,
    *,
    fraction: float = 0.001,
    seeds: tuple = (0, 1, 2),
    n_test: int = 3000,
    head_steps: int = 3000,
    full_steps: int = 1000,
    lr_head: float = 3e-3,
    lr_full: float = 2e-3,
    n_min: int = 4096,
    split: str = "training",
    device: str | None = None,
    many_labels: float | None = None,
    many_steps: int = 3000,
    batch_size: int = 1024,
    curve_at: tuple = (),
    refs: ReferenceClouds | None = None,
    progress: Callable[[str], None] | None = None,
    trainer: dict | None = None,
    resume: bool = False,
    progress_bar: bool = False,
    config: dict | None = None,
) -> list[dict]:
    """Experiment (b); writes the run folder of the module docstring in ``out_dir`` and returns
    the table's rows (accuracy per mode and seed, plus mean and std rows).

    ``split="training"``: the {prototype, sigma} classes of the pretraining prototypes (in
    distribution); ``split="held_out"``: the same with :data:`HELD_OUT_PROTOTYPES`, never seen in
    pretraining; ``split="wide"``: all 49 one-component AFLOW prototypes not seen in pretraining
    (147 classes).

    Every mode trains on the same labelled environments, full batch: the head on the frozen core
    for ``head_steps`` at ``lr_head``; the same model from scratch, and all weights from the
    pretrained ones, for ``full_steps`` at ``lr_full``. The defaults run each to a training loss
    near zero (scratch with fewer steps is undertrained, which inflates the frozen core's gain;
    see docs/order.md). ``many_labels`` (e.g. 0.05) adds the mode ``scratch_many_labels``: the
    same model from scratch trained on that fraction of environments (minibatches of
    ``batch_size``, ``many_steps`` steps), disjoint from the test set. ``curve_at`` (steps) writes
    the test accuracy along training to ``<stem>_curve.csv``. ``refs`` replaces the split's
    reference clouds (e.g. precomputed on another machine).

    ``device`` embeds and trains there (``"cuda"``; None: where ``trainer.accelerator`` says,
    ``auto`` by default); ``trainer``: the engine's options over those (``accelerator``,
    ``devices``, ``strategy``, ``checkpoint_every_n_steps``...). ``resume``: keep the runs already
    recorded in ``out_dir`` with these settings, continue a stopped one from its ``last.pt``.
    ``progress_bar``: a bar per head (off: many heads train). ``config``: more entries for
    ``config.yaml`` (the CLI's checkpoint and splits). Under DDP every process returns the rows;
    only rank 0 writes and reports ``progress``.
    """
    _check_split(split)
    out = Path(out_dir)
    zero = not is_worker()  # rank 0 (or the only process) writes; DDP workers only train
    if not zero:
        progress = None
    out.mkdir(parents=True, exist_ok=True)
    tcfg = _device_trainer(device, trainer)
    settings = {"fraction": float(fraction), "seeds": [int(s) for s in seeds],
                "n_test": int(n_test), "head_steps": int(head_steps),
                "full_steps": int(full_steps), "lr_head": float(lr_head),
                "lr_full": float(lr_full), "n_min": int(n_min),
                "many_labels": float(many_labels) if many_labels else None,
                "many_steps": int(many_steps), "batch_size": int(batch_size),
                "curve_at": [int(s) for s in curve_at],
                "device": None if device is None else str(device)}  # fmt: skip
    extra = dict(config or {})
    extra["splits"] = list(extra.get("splits", [split]))
    extra.update(transfer=settings, trainer=dict(trainer or {}))
    if zero:
        dump_config(extra, out / "config.yaml")
    if refs is None:
        refs = split_reference_clouds(split, n_min)
    y_all = refs.structure_noise
    n_classes = int(y_all.max()) + 1
    pretrained = copy.deepcopy(backbone).eval()
    modes = ("frozen_pretrained", "scratch", "finetune_all") + (
        (MANY_LABELS,) if many_labels else ()
    )
    stem = "transfer" if split == "training" else f"transfer_{split}"
    same = {"split": split, "backbone": _backbone_digest(pretrained),
            "refs": _digest(refs.clouds, y_all), **settings}  # fmt: skip
    for k in ("seeds", "device"):  # neither changes a run's result
        del same[k]
    rows, curves = [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(y_all))
        n_lab = max(1, int(round(fraction * len(y_all))))
        lab, test = perm[:n_lab], perm[n_lab : n_lab + n_test]
        for mode in modes:
            run_dir = out / "runs" / stem / f"{mode}-seed{seed}"
            record = _read_record(run_dir / "result.json") if resume else None
            key = json.loads(json.dumps({**same, "mode": mode, "seed": int(seed)}))
            if record is not None and record.get("settings") == key:
                row, curve = record["row"], record["curve"]
                if progress:
                    progress(f"{split} seed {seed} {mode}: accuracy {row['accuracy']:.3f} "
                             "(recorded in an earlier run)")  # fmt: skip
            else:
                if record is not None:
                    log.info("%s: recorded with other settings: trained again", run_dir)
                row, curve = _one_run(
                    pretrained, refs, y_all, n_classes, lab, test, perm, n_lab, mode, seed, split,
                    settings, tcfg, run_dir, progress_bar, resume=resume, key=key, zero=zero,
                )  # fmt: skip
                if zero:
                    write_json(
                        run_dir / "result.json", {"settings": key, "row": row, "curve": curve}
                    )
                if progress:
                    progress(f"{split} seed {seed} {mode}: accuracy {row['accuracy']:.3f} "
                             f"(train loss {row['train_loss']:.3f})")  # fmt: skip
            rows.append(row)
            curves += curve
    rows += _stat_rows(rows, modes, split, n_classes)
    if not zero:
        return rows
    _write_table(out / stem, rows)
    if curves:
        _write_table(out / f"{stem}_curve", curves)
    summary = _read_record(out / "summary.json") or {}
    summary.setdefault("splits", {})[split] = {
        "table": f"{stem}.csv",
        "seconds": float(sum(r["seconds"] for r in rows if isinstance(r["seed"], int))),
        "accuracy": {r["mode"]: {"mean": r["accuracy"]} for r in rows if r["seed"] == "mean"},
    }
    for r in rows:
        if r["seed"] == "std":
            summary["splits"][split]["accuracy"][r["mode"]]["std"] = r["accuracy"]
    write_json(out / "summary.json", summary)
    return rows


def _one_run(pretrained, refs, y_all, n_classes, lab, test, perm, n_lab, mode, seed, split,
             s: dict, tcfg: dict, run_dir: Path, progress_bar: bool, *, resume: bool = False,
             key: dict | None = None, zero: bool = True):  # fmt: skip
    """Train and test one (mode, seed): (its table row, its accuracy curve's rows). ``key``: the
    run's settings (in its checkpoints); ``resume``: continue from its ``last.pt`` of the same
    ``key``, if any; ``zero``: this process writes (rank 0)."""
    t = time.perf_counter()
    ckpt_path = resume_head(run_dir, key) if resume else None
    if zero and ckpt_path is None:
        for folder in ("logs", "checkpoints"):  # those of an unfinished try (or other settings)
            shutil.rmtree(run_dir / folder, ignore_errors=True)
    torch.manual_seed(1000 + seed)
    if mode in ("scratch", MANY_LABELS):
        from ..representation import build_backbone

        bb = build_backbone(dict(pretrained.config))
    else:
        bb = copy.deepcopy(pretrained)
    head = torch.nn.Sequential(
        torch.nn.Linear(bb.node_dim, 64), torch.nn.ReLU(), torch.nn.Linear(64, n_classes)
    )
    train = lab
    if mode == MANY_LABELS:  # every environment outside the test set may be labelled here
        rest = perm[n_lab + s["n_test"] :]
        extra = max(0, int(round(s["many_labels"] * len(y_all))) - n_lab)
        train = np.concatenate([lab, rest[:extra]])
    frozen = mode == "frozen_pretrained"
    steps = (
        s["head_steps"] if frozen else s["many_steps"] if mode == MANY_LABELS else s["full_steps"]
    )
    test_clouds, test_y = refs.clouds[test], y_all[test]
    loss, curve = _train_head(
        bb,
        head,
        refs.clouds[train],
        y_all[train],
        train_backbone=not frozen,
        steps=steps,
        lr=s["lr_head"] if frozen else s["lr_full"],
        seed=seed,
        batch_size=s["batch_size"] if mode == MANY_LABELS else None,
        evaluate=_evaluator(bb, head, test_clouds, test_y),
        curve_at=tuple(s["curve_at"]),
        trainer=tcfg,
        run_dir=run_dir,
        progress=progress_bar,
        run=key,
        ckpt_path=ckpt_path,
    )
    acc = _accuracy(bb, head, test_clouds, test_y, device=next(head.parameters()).device)
    row = {
        "split": split,
        "mode": mode,
        "seed": int(seed),
        "labelled": int(len(train)),
        "classes_seen": int(len(np.unique(y_all[train]))),
        "n_classes": n_classes,
        "test": int(len(test)),
        "steps": int(steps),
        "train_loss": loss,
        "accuracy": acc,
        "seconds": time.perf_counter() - t,
    }
    points = [{"split": split, "mode": mode, "seed": int(seed), "step": st, "accuracy": a}
              for st, a in curve]  # fmt: skip
    return row, points


def _stat_rows(rows: list[dict], modes: tuple, split: str, n_classes: int) -> list[dict]:
    """The mean and std rows over the seeds, per mode."""
    out = []
    for stat, fun in (("mean", np.mean), ("std", np.std)):
        for mode in modes:
            done = [r for r in rows if r["mode"] == mode and isinstance(r["seed"], int)]
            out.append(
                {
                    "split": split,
                    "mode": mode,
                    "seed": stat,
                    "labelled": done[0]["labelled"],
                    "classes_seen": "",
                    "n_classes": n_classes,
                    "test": done[0]["test"],
                    "steps": done[0]["steps"],
                    "train_loss": float("nan"),
                    "accuracy": float(fun([r["accuracy"] for r in done])),
                    "seconds": float("nan"),
                }
            )
    return out
