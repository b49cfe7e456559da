"""Fine-tuning's model and data: labelled graphs, their loaders, the backbone + head module,
and predictions / embeddings of a trained module."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data._label_files import read_labels_file  # noqa: F401 (re-exported)
from ..errors import ConfigError
from ..graph import collate

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ data
@dataclass
class LabelledGraphs:
    """Graphs with one target each (float for regression, class index for classification, a vector
    of ``n_bins`` values for a spectrum: ``y`` is then (n, n_bins))."""

    graphs: Sequence  # a list, or StreamedGraphs (built on access)
    y: np.ndarray
    ids: Sequence[str] = field(default_factory=list)  # a list, or StreamedIds
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
    data: LabelledGraphs, kind: str, batch_size: int, shuffle: bool, seed: int, trainer=None
) -> DataLoader:
    """Batches of ``data`` with targets attached: this process's share (``trainer``'s world size
    and rank), in an order fixed by (seed, epoch) alone; the training loader (``shuffle``) saves
    its position in checkpoints (a run resumed mid-epoch continues with the next batch).
    Streamed graphs are built in ``data.num_workers`` worker processes."""
    from ._data import StreamedGraphs, make_loader, resolve_num_workers

    world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    workers = (
        resolve_num_workers(data.graphs.num_workers, True, world)
        if isinstance(data.graphs, StreamedGraphs)
        else 0
    )
    return make_loader(_TargetDataset(data, kind), int(batch_size), world, rank, shuffle, int(seed),
                       workers, resumable=shuffle, collate_fn=collate)  # fmt: skip


class FinetuneData(L.LightningDataModule):
    """The training and validation loaders of a fine-tuning fit (see :func:`_loader`), built when
    the trainer knows its processes."""

    def __init__(
        self, train: LabelledGraphs, val: LabelledGraphs, kind: str, batch_size: int, seed: int
    ):
        super().__init__()
        self.train_set, self.val_set, self.kind = train, val, kind
        self.batch_size, self.seed = int(batch_size), int(seed)

    def train_dataloader(self) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        return _loader(self.train_set, self.kind, self.batch_size, True, self.seed, trainer)

    def val_dataloader(self) -> DataLoader | list:
        if not len(self.val_set):
            return []
        trainer = getattr(self, "trainer", None)
        return _loader(self.val_set, self.kind, self.batch_size, False, self.seed, trainer)


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
        from ._checkpoint import load_backbone_weights

        load_backbone_weights(backbone, ck["backbone"], path, arch.get("name"))
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
                sync_dist=stage == "val",  # every DDP process early-stops on the same number
            )
        return res["loss"]

    def training_step(self, batch, batch_idx):
        from ._engine import check_finite

        loss = self._step(batch, "train")
        check_finite(loss, self.current_epoch, self.global_step)  # before NaN reaches the weights
        return loss

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        from ._finetune import DEFAULTS

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
    from ..task.downstream import ClassificationTask, DownstreamTask
    from ._data import graph_batches

    task = module.task
    assert isinstance(task, DownstreamTask)  # fine-tuning builds a downstream head
    for batch in graph_batches(graphs, batch_size):
        batch = batch.to(device)
        if module.kind == "classification":
            assert isinstance(task, ClassificationTask)
            p = task.predict_proba(batch, module.backbone)
            probas.append(p.double().cpu().numpy())
            preds.append(p.argmax(-1).cpu().numpy())
        else:
            preds.append(task.predict(batch, module.backbone).double().cpu().numpy())
    module.train(was_training)
    out = {"prediction": np.concatenate(preds) if preds else np.zeros(0)}
    if probas:
        out["proba"] = np.concatenate(probas)
    return out
