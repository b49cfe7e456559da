"""Fine-tuning on labelled structures: full, frozen backbone (head only) or linear probe.

``finetune(config)`` loads structures and labels, splits them (train / validation / test),
trains and writes a run folder::

    RUN/config.yaml                the config used
    RUN/checkpoints/best.pt        best validation metric (atomssl format; ``load_backbone`` reads it)
    RUN/checkpoints/last.pt        end of the last epoch            (not for linear probes)
    RUN/probe.json                 linear probe: scaler, coefficients, chosen alpha / C
    RUN/metrics.csv                one row per epoch (train/val loss and metrics)
    RUN/predictions.csv            id, split, target, prediction (+ class probabilities)
    RUN/parity.png                 predicted vs true (regression) / confusion matrices (classification)
    RUN/predictions.npz, spectra.png   spectrum targets instead: per split ids, target and predicted
                                   spectra; predicted vs true spectra of a few test structures
    RUN/summary.json, summary.md   test and validation metrics, trivial baselines, sizes, timings

Lower-level pieces are shared with ``atomssl evaluate`` and the learning curves:
:class:`LabelledGraphs` (graphs + targets + ids) and :func:`train_and_predict` (fit on a train
set, choose epochs / regularisation on a validation set only, predict any number of sets).

Modes
- ``full``: backbone and head train together (``optim.backbone_lr_ratio`` scales the backbone's rate);
- ``frozen``: backbone weights fixed (no grad, eval mode); the head (with its own Set2Set
  readouts for MEGNet) trains;
- ``linear_probe``: structure embeddings of the frozen backbone -> standardised -> ridge
  regression / logistic regression (scikit-learn), ``alpha`` / ``C`` chosen on validation;
  ridge predictions are clipped to the range of the training targets.

Early stopping: training stops when the validation metric (``val/mae`` for regression,
``val/loss`` for classification) has not improved for ``trainer.patience`` epochs; the best
epoch's weights are the ones used for predictions.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data._labels import _source_names, labels_table, read_labels_file, resolve_labels  # noqa: F401 (read_labels_file: re-exported)
from ..errors import CheckpointError, ConfigError
from ..graph import collate
from ..utils import atomic_write, dump_config, make_run_dir, save_figure, write_csv, write_json

log = logging.getLogger(__name__)

MODES = ("full", "frozen", "linear_probe")
KINDS = ("regression", "classification", "spectrum")

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "imports": [],
    "mode": "full",
    "data": {
        "sources": ["matbench_dielectric"],
        "limit": None,
        "label": None,  # label name: a built-in dataset's label, an ASE db key, or a column of `labels` (None: the only one there is)
        "labels": None,  # CSV/JSON file with (file or id, label) rows; relative paths also tried next to the first source
        "val_fraction": 0.1,
        "test_fraction": 0.1,
        "batch_size": 32,
        "skip_bad": True,
        "skip_unlabelled": False,
        "in_memory": True,  # False (and always for a corpus folder): read structures lazily, build graphs in workers
        "num_workers": 0,
        "train_where": None,  # e.g. "crystal_sys==cubic": train and validate on those structures only (test: all)
        "group_by": None,  # e.g. "crystal_sys": test scores per value of that label
    },
    "backbone": {"name": "megnet", "checkpoint": None, "pretrained": True},
    "task": {
        "name": "regression",
        "loss": "l1",
        "transform": "none",
        "readout": "auto",
        "hidden": [64, 32],
        "dropout": 0.0,
    },
    "probe": {
        "alphas": [1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0],
        "Cs": [1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0],
    },
    "optim": {
        "lr": 1e-3,
        "weight_decay": 0.0,
        "backbone_lr_ratio": 1.0,
        "scheduler": "cosine",
        "warmup_steps": 0,
        "min_lr_ratio": 0.01,
    },
    "trainer": {
        "max_epochs": 100,
        "patience": 20,
        "accelerator": "auto",
        "devices": 1,
        "precision": "32-true",
        "gradient_clip_val": 1.0,
        "log_every_n_steps": 10,
        "max_time": None,
    },
    "run": {"root": "runs", "name": "finetune"},
}


def prepare_config(config: dict) -> dict:
    """Defaults filled section by section; checks mode, task kind and numbers."""
    from ..utils._config import _merge

    out = _merge(copy.deepcopy(DEFAULTS), copy.deepcopy(config))
    if out["mode"] not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {out['mode']!r}")
    for section in ("data", "backbone", "task", "probe", "optim", "trainer", "run"):
        if not isinstance(out.get(section), dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
    if out["task"].get("name") not in KINDS:
        raise ConfigError(f"task.name must be one of {KINDS}, got {out['task'].get('name')!r}")
    return out


# ------------------------------------------------------------------------------ data
@dataclass
class LabelledGraphs:
    """Graphs with one target each (float for regression, class index for classification, a vector
    of ``n_bins`` values for a spectrum: ``y`` is then (n, n_bins))."""

    graphs: list
    y: np.ndarray
    ids: list[str] = field(default_factory=list)
    #: per-row structure labels used to select or group rows (``data.train_where`` / ``group_by``)
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.y = np.asarray(self.y)
        if not self.ids:
            self.ids = [str(i) for i in range(len(self.graphs))]
        if not (len(self.graphs) == len(self.y) == len(self.ids)):
            raise ConfigError(
                f"{len(self.graphs)} graphs, {len(self.y)} targets and {len(self.ids)} ids differ"
            )

    def __len__(self) -> int:
        return len(self.graphs)

    def subset(self, idx) -> LabelledGraphs:
        idx = np.asarray(idx, dtype=np.int64)

        def pick(seq):  # streamed graphs and ids stay lazy views
            return seq.subset(idx) if hasattr(seq, "subset") else [seq[i] for i in idx]

        return LabelledGraphs(
            pick(self.graphs),
            self.y[idx],
            pick(self.ids),
            {k: v[idx] for k, v in self.meta.items()},
        )


class _TargetDataset(Dataset):
    """Shallow copies of the graphs with ``target`` attached (cached graphs stay untouched);
    streamed graphs are built, and their target attached, on access."""

    def __init__(self, data: LabelledGraphs, kind: str):
        self.dtype = torch.long if kind == "classification" else torch.float32
        self.data = data
        self.items = None
        if isinstance(data.graphs, list):
            self.items = []
            for g, y in zip(data.graphs, data.y):
                g = copy.copy(g)
                g.target = torch.as_tensor(np.asarray([y]), dtype=self.dtype)  # (1,) or (1, n_bins)
                self.items.append(g)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        if self.items is not None:
            return self.items[i]
        g = self.data.graphs[i]
        g.target = torch.as_tensor(np.asarray([self.data.y[i]]), dtype=self.dtype)
        return g


def _loader(
    data: LabelledGraphs, kind: str, batch_size: int, shuffle: bool, seed: int
) -> DataLoader:
    from ._data import StreamedGraphs, make_loader

    if isinstance(
        data.graphs, StreamedGraphs
    ):  # streamed: order fixed by (seed, epoch), graphs built in workers
        return make_loader(_TargetDataset(data, kind), int(batch_size), shuffle=shuffle, seed=int(seed),
                           num_workers=data.graphs.num_workers, resumable=False, collate_fn=collate)  # fmt: skip
    gen = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return DataLoader(
        _TargetDataset(data, kind),
        batch_size=int(batch_size),
        shuffle=shuffle,
        generator=gen,
        collate_fn=collate,
    )


def split_three(
    n: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random train / validation / test indices (sorted), fixed by ``seed``."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"need 0 <= val_fraction, test_fraction and their sum < 1 (got {val_fraction}, {test_fraction})"
        )
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    n_val = max(int(round(val_fraction * n)), 1 if val_fraction > 0 else 0)
    if n - n_val - n_test < 1:
        raise ConfigError(f"only {n} labelled structure(s): nothing left to train on")
    return (
        np.sort(perm[n_val + n_test :]),
        np.sort(perm[:n_val]),
        np.sort(perm[n_val : n_val + n_test]),
    )


# -------------------------------------------------------------------------- backbone
def build_finetune_backbone(cfg: dict):
    """The backbone of ``backbone`` config: from ``checkpoint`` (its architecture; its weights
    when ``pretrained``), else built from scratch by name and options."""
    from ..representation import build_backbone
    from ._checkpoint import load_checkpoint

    cfg = dict(cfg)
    path = cfg.pop("checkpoint", None)
    pretrained = bool(cfg.pop("pretrained", True))
    if not path:
        return build_backbone(cfg)
    ck = load_checkpoint(path)
    arch = {**ck["backbone_config"], **{k: v for k, v in cfg.items() if k not in ("name",)}}
    backbone = build_backbone(arch)
    if pretrained:
        try:
            backbone.load_state_dict(ck["backbone"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"{path}: weights do not fit backbone {arch.get('name')!r}: {exc}"
            ) from None
    return backbone


# ---------------------------------------------------------------------------- module
class FinetuneModule(L.LightningModule):
    """Backbone + downstream task (regression / classification) for ``full`` or ``frozen`` mode."""

    def __init__(self, config: dict, task_options: dict | None = None, backbone=None):
        super().__init__()
        from ..task import build_task

        self.config = config
        self.mode = config["mode"]
        self.backbone = (
            backbone if backbone is not None else build_finetune_backbone(config["backbone"])
        )
        self.task = build_task({**config["task"], **(task_options or {})}, self.backbone)
        self.kind = config["task"]["name"]
        if self.mode == "frozen":
            self.backbone.requires_grad_(False)
        self.monitor = "val/loss" if self.kind == "classification" else "val/mae"

    def train(self, mode: bool = True):
        super().train(mode)
        if self.mode == "frozen":
            self.backbone.eval()  # frozen: no dropout, statistics or other train-time behaviour
        return self

    def _step(self, batch, stage: str):
        res = self.task.step(batch, self.backbone)
        n = int(batch.num_graphs)
        for k, v in res.items():
            self.log(
                f"{stage}/{k}",
                v.detach(),
                batch_size=n,
                on_step=False,
                on_epoch=True,
                prog_bar=k in ("loss", "mae"),
            )
        return res["loss"]

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        c = {**DEFAULTS["optim"], **(self.config.get("optim") or {})}
        lr = float(c["lr"])
        groups = [{"params": [p for p in self.task.parameters() if p.requires_grad], "lr": lr}]
        bb = [p for p in self.backbone.parameters() if p.requires_grad]
        if bb:
            groups.append({"params": bb, "lr": lr * float(c["backbone_lr_ratio"])})
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=float(c["weight_decay"]))
        if c["scheduler"] == "constant":
            return opt
        if c["scheduler"] != "cosine":
            raise ConfigError(
                f"optim.scheduler must be 'cosine' or 'constant', got {c['scheduler']!r}"
            )
        from ._module import warmup_cosine

        total = max(int(self.trainer.estimated_stepping_batches), 1)
        return warmup_cosine(opt, total, int(c["warmup_steps"]), float(c["min_lr_ratio"]))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from ._checkpoint import plain

        metrics = {}
        if self._trainer is not None:
            metrics = {
                k: float(v)
                for k, v in self.trainer.callback_metrics.items()
                if isinstance(v, torch.Tensor) and v.numel() == 1
            }
        checkpoint["atomssl"] = {
            "config": plain(self.config),
            "backbone_config": plain(self.backbone.config),
            "backbone": self.backbone.state_dict(),
            "tasks": {"head": self.task.state_dict()},
            "task_configs": plain({"head": self.task.config}),
            "metrics": metrics,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint.pop("atomssl", None)

    def load_weights(self, path: str | os.PathLike) -> None:
        """Backbone and head weights from an atomssl checkpoint written by this module."""
        from ._checkpoint import load_checkpoint

        ck = load_checkpoint(path)
        self.backbone.load_state_dict(ck["backbone"])
        self.task.load_state_dict(ck["tasks"]["head"])


@torch.no_grad()
def predict_graphs(
    module: FinetuneModule, graphs: Sequence, batch_size: int = 64, totals=None
) -> dict[str, np.ndarray]:
    """Predictions (``prediction``; plus ``proba`` for classification) for ``graphs``, in order.
    ``totals``: each structure's known total, for a spectrum head with ``total="label"``."""
    was_training = module.training
    module.eval()
    if module.kind == "spectrum":
        from ._spectrum import predict_spectra

        try:
            return {"prediction": predict_spectra(module, graphs, totals, batch_size)}
        finally:
            module.train(was_training)
    device = next(module.parameters()).device
    preds, probas = [], []
    from ._data import graph_batches

    for batch in graph_batches(graphs, batch_size):
        batch = batch.to(device)
        if module.kind == "classification":
            p = module.task.predict_proba(batch, module.backbone)
            probas.append(p.double().cpu().numpy())
            preds.append(p.argmax(-1).cpu().numpy())
        else:
            preds.append(module.task.predict(batch, module.backbone).double().cpu().numpy())
    module.train(was_training)
    out = {"prediction": np.concatenate(preds) if preds else np.zeros(0)}
    if probas:
        out["proba"] = np.concatenate(probas)
    return out


@torch.no_grad()
def embed_graphs(backbone, graphs: Sequence, batch_size: int = 64) -> np.ndarray:
    """Structure embeddings (``BackboneOutput.graph``, eval mode) of prebuilt graphs, float64."""
    was = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    from ._data import graph_batches

    rows = [
        backbone(batch.to(device)).graph.double().cpu().numpy()
        for batch in graph_batches(graphs, batch_size)
    ]
    backbone.train(was)
    return np.concatenate(rows)


# ---------------------------------------------------------------------------- metrics
def regression_scores(y_true, y_pred) -> dict[str, float]:
    """matbench's regression scores: mae, rmse, mape, max_error (scikit-learn)."""
    from sklearn import metrics

    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    return {
        "mae": float(metrics.mean_absolute_error(y_true, y_pred)),
        "rmse": float(math.sqrt(metrics.mean_squared_error(y_true, y_pred))),
        "mape": float(metrics.mean_absolute_percentage_error(y_true, y_pred)),
        "max_error": float(metrics.max_error(y_true, y_pred)),
    }


def classification_scores(y_true, y_pred, proba=None) -> dict[str, float]:
    from sklearn import metrics

    out = {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(metrics.balanced_accuracy_score(y_true, y_pred)),
        "f1_macro": float(metrics.f1_score(y_true, y_pred, average="macro")),
    }
    if proba is not None:
        out["log_loss"] = float(
            metrics.log_loss(y_true, np.clip(proba, 1e-12, 1), labels=list(range(proba.shape[1])))
        )
    return out


def score(kind: str, y_true, pred: dict[str, np.ndarray]) -> dict[str, float]:
    if kind == "spectrum":
        from ._spectrum import spectrum_scores

        return spectrum_scores(y_true, pred["prediction"])
    if kind == "regression":
        return regression_scores(y_true, pred["prediction"])
    return classification_scores(y_true, pred["prediction"], pred.get("proba"))


def baseline_scores(kind: str, y_train, y_true) -> dict[str, float]:
    """Scores of the trivial predictor fitted on training targets (mean / majority class)."""
    y_train = np.asarray(y_train)
    if kind == "spectrum":
        from ._spectrum import spectrum_baseline_scores

        return spectrum_baseline_scores(y_train, y_true)
    if kind == "regression":
        return regression_scores(y_true, np.full(len(y_true), float(np.mean(y_train))))
    majority = int(np.bincount(y_train.astype(np.int64)).argmax())
    return classification_scores(y_true, np.full(len(y_true), majority))


# ----------------------------------------------------------------------- linear probe
class LinearProbe:
    """Standardised embeddings -> ridge (regression, on the transformed target) or logistic
    regression; the regularisation strength chosen on the validation set."""

    def __init__(self, kind: str, transform: str = "none", n_classes: int | None = None):
        if kind not in KINDS:
            raise ConfigError(f"LinearProbe kind must be one of {KINDS}, got {kind!r}")
        if kind == "spectrum" and transform != "none":
            raise ConfigError("a spectrum linear probe takes no target transform")
        self.kind, self.transform = kind, transform
        #: classification: number of classes (labels 0..n-1); default from the labels seen in fit()
        self.n_classes = n_classes
        self.model = None
        self.param: float | None = None
        self.val_curve: dict[float, float] = {}
        self.t_range: tuple[float, float] | None = None

    def _f(self, y):
        return np.log(y) if self.transform == "log" else np.asarray(y, float)

    def _finv(self, t):
        # linear extrapolation far outside the data can overflow exp(): keep predictions within
        # the range of the (transformed) training targets
        t = np.clip(t, *self.t_range) if self.t_range is not None else t
        return np.exp(t) if self.transform == "log" else t

    def _make(self, value: float):
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if self.kind in ("regression", "spectrum"):  # spectrum: one ridge per bin, clipped at 0
            return make_pipeline(StandardScaler(), Ridge(alpha=value))
        return make_pipeline(StandardScaler(), LogisticRegression(C=value, max_iter=2000))

    def fit(self, x_train, y_train, x_val, y_val, grid: Sequence[float]) -> LinearProbe:
        if (
            self.kind == "regression"
            and self.transform == "log"
            and (np.asarray(y_train) <= 0).any()
        ):
            raise ConfigError("regression transform 'log' needs positive targets")
        if self.kind == "regression":
            t = self._f(y_train)
            self.t_range = (float(np.min(t)), float(np.max(t)))
        else:
            seen = int(max(np.max(y) for y in (y_train, y_val) if len(y))) + 1
            if self.n_classes is not None and seen > self.n_classes:
                raise ConfigError(
                    f"LinearProbe: label {seen - 1} outside 0..{self.n_classes - 1} (n_classes={self.n_classes})"
                )
            self.n_classes = self.n_classes or seen
        best = None
        for value in grid:
            model = self._make(float(value))
            model.fit(x_train, self._f(y_train) if self.kind == "regression" else y_train)
            if len(x_val):
                if self.kind == "spectrum":
                    err = float(np.abs(np.clip(model.predict(x_val), 0, None) - y_val).mean())
                elif self.kind == "regression":
                    err = float(np.abs(self._finv(model.predict(x_val)) - y_val).mean())
                else:
                    err = classification_scores(
                        y_val, model.predict(x_val), self._proba(model, x_val)
                    )["log_loss"]
            else:
                err = 0.0  # nothing to choose on: the first value of the grid
            self.val_curve[float(value)] = err
            if best is None or err < best[0]:
                best = (err, float(value), model)
        _, self.param, self.model = best
        return self

    def _proba(self, model, x):
        p = np.zeros((len(x), self.n_classes))
        p[:, model.classes_.astype(int)] = model.predict_proba(x)
        return p

    def predict(self, x) -> dict[str, np.ndarray]:
        if self.kind == "spectrum":
            return {"prediction": np.clip(self.model.predict(x), 0, None)}
        if self.kind == "regression":
            return {"prediction": self._finv(self.model.predict(x))}
        proba = self._proba(self.model, x)
        return {"prediction": proba.argmax(1), "proba": proba}

    def to_dict(self) -> dict[str, Any]:
        scaler, est = self.model[0], self.model[-1]
        return {
            "kind": self.kind,
            "transform": self.transform,
            "estimator": type(est).__name__,
            "C" if self.kind == "classification" else "alpha": self.param,
            "validation_curve": {str(k): v for k, v in self.val_curve.items()},
            "scaler_mean": scaler.mean_.tolist(),
            "scaler_scale": scaler.scale_.tolist(),
            "coef": np.asarray(est.coef_).tolist(),
            "intercept": np.atleast_1d(est.intercept_).tolist(),
            "classes": getattr(est, "classes_", np.zeros(0)).tolist(),
        }


# --------------------------------------------------------------------------- training
def _make_trainer(
    config: dict, run_dir: Path, callbacks: list, progress: bool, has_val: bool
) -> L.Trainer:
    from lightning.pytorch.loggers import CSVLogger

    from ._checkpoint import AtomicCheckpointIO
    from ._pretrain import _quiet_duplicate_logs

    _quiet_duplicate_logs()
    tcfg = {k: v for k, v in config["trainer"].items() if k != "patience"}
    if tcfg.get("max_time") is None:
        tcfg.pop("max_time", None)
    try:
        return L.Trainer(
            default_root_dir=run_dir,
            logger=[CSVLogger(run_dir, name="logs")],
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=1.0 if has_val else 0,
            **tcfg,
        )
    except TypeError as exc:
        raise ConfigError(f"trainer: bad option: {exc}") from None


def _task_options(config: dict, train: LabelledGraphs) -> dict[str, Any]:
    """Statistics of the training targets that the head needs (normalisation / class prior)."""
    kind = config["task"]["name"]
    if kind == "spectrum":
        from ._spectrum import spectrum_task_options

        return spectrum_task_options(train.y)
    if kind == "regression":
        from ..task.downstream import RegressionTask

        mean, std = RegressionTask.fit_normalisation(
            train.y, config["task"].get("transform", "none")
        )
        return {"mean": mean, "std": std}
    n_classes = int(config["task"].get("n_classes") or (int(np.max(train.y)) + 1))
    counts = np.bincount(train.y.astype(np.int64), minlength=n_classes).astype(float)
    return {"n_classes": n_classes, "prior": (counts / counts.sum()).tolist()}


def train_and_predict(
    config: dict,
    train: LabelledGraphs,
    val: LabelledGraphs,
    predict_sets: dict[str, LabelledGraphs],
    run_dir: str | os.PathLike,
    progress: bool = False,
    backbone=None,
) -> dict[str, Any]:
    """Fit on ``train`` (epochs / alpha chosen on ``val`` only) and predict every set.

    Returns ``{"predictions": {name: {...}}, "scores": {name: {...}}, "chosen": {...},
    "seconds": float, "module"|"probe": fitted object}``. Writes checkpoints (or ``probe.json``)
    and ``metrics.csv`` under ``run_dir``.
    """
    config = prepare_config(config)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    kind, mode = config["task"]["name"], config["mode"]
    L.seed_everything(int(config["seed"]), workers=True, verbose=False)
    t0 = time.perf_counter()
    sets = {"val": val, **predict_sets}
    out: dict[str, Any] = {"predictions": {}, "scores": {}, "chosen": {}}
    if mode == "linear_probe":
        bb = backbone if backbone is not None else build_finetune_backbone(config["backbone"])
        n_classes = config["task"].get("n_classes") if kind == "classification" else None
        probe = LinearProbe(
            kind,
            config["task"].get("transform", "none"),
            n_classes=int(n_classes) if n_classes else None,
        )
        grid = config["probe"]["Cs"] if kind == "classification" else config["probe"]["alphas"]
        x_train = embed_graphs(bb, train.graphs)
        x_val = embed_graphs(bb, val.graphs) if len(val) else np.zeros((0, x_train.shape[1]))
        probe.fit(x_train, train.y, x_val, val.y, grid)
        write_json(run_dir / "probe.json", probe.to_dict())
        out["chosen"] = {("C" if kind == "classification" else "alpha"): probe.param}
        out["probe"] = probe
        for name, s in sets.items():
            if len(s):
                x = x_val if name == "val" else embed_graphs(bb, s.graphs)
                out["predictions"][name] = probe.predict(x)
    else:
        from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

        module = FinetuneModule(config, _task_options(config, train), backbone=backbone)
        has_val = len(val) > 0
        monitor = module.monitor if has_val else "train/loss"
        ckpt_dir = run_dir / "checkpoints"
        ckpt = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode="min", save_top_k=1,
                               save_last=True, auto_insert_metric_name=False, enable_version_counter=False)  # fmt: skip
        ckpt.FILE_EXTENSION = ".pt"
        callbacks: list = [ckpt]
        if has_val and int(config["trainer"].get("patience") or 0) > 0:
            callbacks.append(
                EarlyStopping(
                    monitor=monitor, mode="min", patience=int(config["trainer"]["patience"])
                )
            )
        bs, seed = int(config["data"]["batch_size"]), int(config["seed"])
        trainer = _make_trainer(config, run_dir, callbacks, progress, has_val)
        train_loader = _loader(train, kind, bs, True, seed)
        val_loader = _loader(val, kind, bs, False, seed) if has_val else None
        frozen_before = (
            {k: v.detach().clone() for k, v in module.backbone.state_dict().items()}
            if mode == "frozen"
            else None
        )
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
        best = ckpt.best_model_path
        if best and Path(best).is_file():
            module.load_weights(best)
        module.cpu()
        if frozen_before is not None:  # a frozen backbone must come out exactly as it went in
            after = module.backbone.state_dict()
            if not all(torch.equal(frozen_before[k], after[k].cpu()) for k in frozen_before):
                raise RuntimeError("frozen backbone changed during training")
        rows = _epoch_rows(run_dir)
        _write_rows(rows, run_dir / "metrics.csv")
        best_row = min((r for r in rows if monitor in r), key=lambda r: r[monitor], default=None)
        out["chosen"] = {"epoch": int(best_row["epoch"]) if best_row else None, "epochs_run": len(rows),
                         "monitor": monitor, "best": best_row.get(monitor) if best_row else None}  # fmt: skip
        out["module"] = module
        label_totals = kind == "spectrum" and config["task"].get("total") == "label"
        for name, s in sets.items():
            if len(s):
                totals = (
                    s.y.sum(1) if label_totals else None
                )  # a known total: the spectrum's integral
                out["predictions"][name] = predict_graphs(module, s.graphs, totals=totals)
    for name, s in sets.items():
        if name in out["predictions"]:
            out["scores"][name] = score(kind, s.y, out["predictions"][name])
            out["scores"][name + "_baseline"] = baseline_scores(kind, train.y, s.y)
    out["seconds"] = time.perf_counter() - t0
    return out


def _epoch_rows(run_dir: Path) -> list[dict[str, float]]:
    from ._pretrain import merged_metrics

    return merged_metrics(run_dir)


def _write_rows(rows: list[dict[str, float]], path: Path) -> None:
    write_csv(path, rows)


# -------------------------------------------------------------------------- run folder
def load_labelled(config: dict) -> tuple[LabelledGraphs, list[str] | None, Any]:
    """Structures + labels of the ``data`` section as graphs for the configured backbone."""
    from ._data import StreamedGraphs, StreamedIds, build_graphs, load_structures, streams

    config = prepare_config(config)
    dcfg = config["data"]
    table = labels_table(
        dcfg, config["task"]["name"]
    )  # a wrong label column fails before loading structures
    structures = load_structures({**dcfg, "sources": dcfg["sources"]})
    values, kept, classes = resolve_labels(structures, dcfg, config["task"]["name"], table)
    spec = _graph_spec(config["backbone"])
    from ._groups import label_columns, wanted_labels

    keys, what = wanted_labels(dcfg), ", ".join(_source_names(dcfg))
    if streams(dcfg, structures):  # graphs built when batched (corpora are validated at import)
        graphs = StreamedGraphs(structures, kept, spec, int(dcfg.get("num_workers") or 0))
        meta = label_columns([structures[int(i)].labels for i in kept], keys, what) if keys else {}
        return (
            LabelledGraphs(graphs, np.asarray(values), StreamedIds(structures, kept), meta),
            classes,
            structures,
        )
    key = json.dumps(
        {k: dcfg.get(k) for k in ("sources", "limit", "skip_bad")}, sort_keys=True, default=str
    )
    graphs, ok = build_graphs(structures, spec, bool(dcfg.get("skip_bad", True)), cache_key=key)
    pos = {int(i): j for j, i in enumerate(ok)}
    rows = [(pos[int(i)], v, structures[int(i)]) for i, v in zip(kept, values) if int(i) in pos]
    ids = [
        s.id or (f"{s.source}@{s.index}" if s.source else str(k))
        for k, (_, _, s) in enumerate(rows)
    ]
    meta = label_columns([r[2].labels for r in rows], keys, what) if keys else {}
    data = LabelledGraphs([graphs[r[0]] for r in rows], np.array([r[1] for r in rows]), ids, meta)
    return data, classes, structures


def _graph_spec(bcfg: dict) -> dict:
    """How graphs are built for the configured backbone (without building it twice)."""
    return build_finetune_backbone({**bcfg, "pretrained": False}).graph_spec


def finetune(
    config: dict, run_dir: str | os.PathLike | None = None, progress: bool = True
) -> dict[str, Any]:
    """One fine-tuning run (see module docstring); returns the summary written to ``summary.json``."""
    import importlib

    config = prepare_config(config)
    for name in config.get("imports") or []:
        importlib.import_module(name)
    # data and labels first: a bad source or label column fails before a run folder exists
    data, classes, structures = load_labelled(config)
    if run_dir is None:
        run_dir = make_run_dir(
            config["run"].get("root", "runs"), config["run"].get("name", "finetune")
        )
    else:
        run_dir = make_run_dir(run_dir, exist_ok=True)
    run_dir = Path(run_dir)
    dump_config(config, run_dir / "config.yaml")
    log.info("run folder: %s", run_dir)
    from ._data import record_read_warnings

    n_warned = record_read_warnings(structures, run_dir)
    d = config["data"]
    tr, va, te = split_three(
        len(data), float(d["val_fraction"]), float(d["test_fraction"]), int(config["seed"])
    )
    if d.get(
        "train_where"
    ):  # train and validate on the chosen groups only; the test rows stay whole
        from ._groups import where_mask

        keep = where_mask(data.meta, d["train_where"], len(data))
        tr, va = tr[keep[tr]], va[keep[va]]
        if not len(tr):
            raise ConfigError(
                f"data.train_where={d['train_where']!r} leaves no training structures"
            )
    if classes is not None:
        config["task"].setdefault("n_classes", len(classes))
    sets = {"train": data.subset(tr), "val": data.subset(va), "test": data.subset(te)}
    res = train_and_predict(
        config,
        sets["train"],
        sets["val"],
        {"train": sets["train"], "test": sets["test"]},
        run_dir,
        progress,
    )
    if config["task"]["name"] == "spectrum":
        from ._spectrum import plot_spectra, write_spectra

        write_spectra(run_dir / "predictions.npz", sets, res["predictions"])
        plot_spectra(
            run_dir / "spectra.png",
            sets,
            res["predictions"],
            baseline=sets["train"].y.mean(0),
            seed=int(config["seed"]),
        )
    else:
        write_predictions(run_dir / "predictions.csv", sets, res["predictions"], classes)
        plot_parity(
            run_dir / "parity.png", config["task"]["name"], sets, res["predictions"], classes
        )
    summary = {
        "mode": config["mode"],
        "task": config["task"]["name"],
        "backbone": config["backbone"].get("checkpoint") or config["backbone"].get("name"),
        "pretrained": bool(config["backbone"].get("checkpoint"))
        and bool(config["backbone"].get("pretrained", True)),
        "sizes": {k: len(v) for k, v in sets.items()},
        "classes": classes,
        "chosen": res["chosen"],
        "scores": res["scores"],
        "seconds": res["seconds"],
        "run_dir": str(run_dir),
        "structures_read_with_warnings": n_warned,
    }
    if d.get("train_where"):
        summary["train_where"] = d["train_where"]
    if d.get("group_by") and "test" in res["predictions"]:
        from ._groups import group_scores

        summary["group_by"] = d["group_by"]
        summary["group_scores"] = group_scores(config["task"]["name"], sets["test"].y, res["predictions"]["test"],
                                               sets["test"].meta[d["group_by"]], sets["train"].y)  # fmt: skip
    write_json(run_dir / "summary.json", summary)
    table = format_summary(summary)
    with atomic_write(run_dir / "summary.md", "w") as fh:
        fh.write(table + "\n")
    print(table)  # the run's summary, with or without progress bars
    return summary


def write_predictions(
    path: Path, sets: dict[str, LabelledGraphs], preds: dict[str, dict], classes=None
) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    n_cls = len(classes) if classes else 0
    w.writerow(["id", "split", "target", "prediction"] + [f"p_{c}" for c in (classes or [])])
    for name, s in sets.items():
        p = preds.get(name)
        if p is None:
            continue
        for i in range(len(s)):
            if classes:
                row = [s.ids[i], name, classes[int(s.y[i])], classes[int(p["prediction"][i])]]
                row += [f"{v:.6g}" for v in p["proba"][i][:n_cls]] if "proba" in p else []
            else:
                row = [s.ids[i], name, f"{float(s.y[i]):.8g}", f"{float(p['prediction'][i]):.8g}"]
            w.writerow(row)
    with atomic_write(path, "w") as fh:
        fh.write(buf.getvalue())


def plot_parity(
    path: Path,
    kind: str,
    sets: dict[str, LabelledGraphs],
    preds: dict[str, dict],
    classes=None,
    title: str = "",
) -> None:
    """Regression: predicted vs true per split (MAE in the legend); classification: confusion matrices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("train", "val", "test") if n in preds and n in sets and len(sets[n])]
    if kind == "regression":
        fig, ax = plt.subplots(figsize=(4.6, 4.4))
        lo, hi = math.inf, -math.inf
        for n in names:
            y, p = sets[n].y.astype(float), preds[n]["prediction"]
            mae = float(np.abs(y - p).mean())
            ax.scatter(y, p, s=6, alpha=0.5, label=f"{n} (n={len(y)}, MAE {mae:.3g})")
            lo, hi = min(lo, y.min(), p.min()), max(hi, y.max(), p.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
        ax.legend(fontsize=7)
        ax.set_title(title or "parity")
    else:
        from sklearn.metrics import confusion_matrix

        k = len(classes or []) or int(max(int(sets[n].y.max()) for n in names)) + 1
        fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
        for ax, n in zip(axes[0], names):
            cm = confusion_matrix(sets[n].y, preds[n]["prediction"], labels=list(range(k)))
            ax.imshow(cm, cmap="Blues")
            for (i, j), v in np.ndenumerate(cm):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
            ax.set_title(n)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def format_summary(summary: dict[str, Any]) -> str:
    scores = summary["scores"]
    names = [n for n in ("train", "val", "test") if n in scores]
    metrics = list(scores[names[0]]) if names else []
    lines = ["| split | " + " | ".join(metrics) + " | trivial " + (metrics[0] if metrics else "") + " |",
             "|---" * (len(metrics) + 2) + "|"]  # fmt: skip
    for n in names:
        base = scores.get(n + "_baseline", {}).get(metrics[0])
        lines.append(
            f"| {n} | " + " | ".join(f"{scores[n][m]:.4g}" for m in metrics) + f" | {base:.4g} |"
        )
    lines.append("")
    lines.append(f"mode: {summary['mode']}; backbone: {summary['backbone']}; sizes: {summary['sizes']}; "
                 f"chosen on validation: {summary['chosen']}; {summary['seconds']:.1f} s")  # fmt: skip
    if summary.get("group_scores"):
        from ._groups import format_group_table

        where = f", trained on {summary['train_where']}" if summary.get("train_where") else ""
        lines += [
            "",
            f"test rows by {summary['group_by']}{where}:",
            "",
            format_group_table(summary["group_scores"], metrics[0]),
        ]
    return "\n".join(lines)
