"""Downstream heads: per-structure regression and classification on top of any backbone.

The target of structure ``i`` travels on its graph as ``batch.target`` (one value per graph:
a float for regression, a class index for classification). The readout turns backbone outputs
into one vector per structure:

- ``"set2set"`` (default when the backbone has per-bond features, e.g. MEGNet): the head's own
  Set2Set readouts over the atom and the bond features, concatenated with the backbone's
  structure embedding (for MEGNet it ends with the global state vector). As in the crystal
  denoising SSL work, the readouts belong to the head, so they train also when the backbone
  is frozen.
- ``"graph"``: the backbone's structure embedding alone (its own pooling); the default for
  backbones without bond features.
- ``"mean"``: the mean of the atom features.

Regression works on a transformed, standardised target ``t = (f(y) - mu) / sd`` with
``f`` = identity or ``log`` (for positive, long-tailed targets such as the refractive index);
``predict`` maps back to ``y``. Losses: ``l1`` (robust; the MAE metric), ``mse``, ``huber``.
Every ``step`` also reports the loss of the trivial predictor (``t = 0``: the training mean) as
``baseline``, and ``mae`` in the target's own units.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn.aggr import Set2Set

from ..errors import ConfigError
from ._base import Task, register_task
from .denoise import graph_index as _graph_index
from .denoise import num_graphs as _num_graphs

READOUTS = ("auto", "set2set", "graph", "mean")
TRANSFORMS = ("none", "log")
LOSSES = ("l1", "mse", "huber")


class Readout(nn.Module):
    """Backbone outputs -> one feature vector per structure (see module docstring)."""

    def __init__(self, backbone, kind: str = "auto", set2set_iterations: int = 2):
        super().__init__()
        if kind not in READOUTS:
            raise ConfigError(f"readout must be one of {READOUTS}, got {kind!r}")
        has_edges = bool(getattr(backbone, "provides_edges", False))
        if kind == "auto":
            kind = "set2set" if has_edges else "graph"
        self.kind = kind
        self.use_edges = has_edges
        if kind == "set2set":
            self.node_s2s = Set2Set(backbone.node_dim, processing_steps=set2set_iterations)
            dim = 2 * backbone.node_dim + backbone.embedding_dim
            if has_edges:
                self.edge_s2s = Set2Set(backbone.edge_dim, processing_steps=set2set_iterations)
                dim += 2 * backbone.edge_dim
            self.dim = dim
        elif kind == "graph":
            self.dim = backbone.embedding_dim
        else:
            self.dim = backbone.node_dim

    def forward(self, out, batch) -> torch.Tensor:
        if self.kind == "graph":
            return out.graph
        gidx, n = _graph_index(batch), _num_graphs(batch)
        if self.kind == "mean":
            total = out.node.new_zeros(n, out.node.shape[1]).index_add_(0, gidx, out.node)
            count = torch.bincount(gidx, minlength=n).clamp(min=1).to(out.node.dtype)
            return total / count[:, None]
        parts = [self.node_s2s(out.node, gidx, dim_size=n)]
        if self.use_edges:
            parts.append(
                self.edge_s2s(out.edge, gidx.index_select(0, batch.edge_index[0]), dim_size=n)
            )
        parts.append(out.graph)
        return torch.cat(parts, dim=-1)


def _mlp(n_in: int, hidden: Sequence[int], n_out: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, int(h)), nn.SiLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        n_in = int(h)
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class DownstreamTask(Task):
    """Shared parts of the downstream heads: a readout and an MLP on its output."""

    def __init__(self, backbone, n_out: int, readout: str = "auto", hidden: Sequence[int] = (64, 32),
                 dropout: float = 0.0, **config: Any):  # fmt: skip
        super().__init__(
            backbone,
            readout=readout,
            hidden=[int(h) for h in hidden],
            dropout=float(dropout),
            **config,
        )
        self.readout = Readout(backbone, readout)
        self.mlp = _mlp(self.readout.dim, hidden, n_out, float(dropout))

    def raw(self, batch, backbone) -> torch.Tensor:
        """Head output (before any inverse transform) for every structure of ``batch``."""
        return self.mlp(self.readout(backbone(batch), batch))

    def predict(self, batch, backbone) -> torch.Tensor:
        """Predictions in the target's units for every structure of ``batch``."""
        raise NotImplementedError


@register_task("regression")
class RegressionTask(DownstreamTask):
    """Per-structure scalar regression (see module docstring for transform and losses)."""

    def __init__(self, backbone, loss: str = "l1", transform: str = "none", mean: float = 0.0, std: float = 1.0,
                 **config: Any):  # fmt: skip
        if loss not in LOSSES:
            raise ConfigError(f"regression loss must be one of {LOSSES}, got {loss!r}")
        if transform not in TRANSFORMS:
            raise ConfigError(
                f"regression transform must be one of {TRANSFORMS}, got {transform!r}"
            )
        if not std > 0:
            raise ConfigError(f"regression std must be > 0, got {std}")
        super().__init__(
            backbone, 1, loss=loss, transform=transform, mean=float(mean), std=float(std), **config
        )
        self.loss_name, self.transform = loss, transform
        self.mean, self.std = float(mean), float(std)

    # ------------------------------------------------------------------ target transforms
    def forward_transform(self, y: torch.Tensor) -> torch.Tensor:
        if self.transform == "log":
            if bool((y <= 0).any()):
                raise ConfigError("regression transform 'log' needs positive targets")
            y = torch.log(y)
        return (y - self.mean) / self.std

    def inverse_transform(self, t: torch.Tensor) -> torch.Tensor:
        y = t * self.std + self.mean
        return torch.exp(y) if self.transform == "log" else y

    @staticmethod
    def fit_normalisation(y, transform: str) -> tuple[float, float]:
        """``(mean, std)`` of ``f(y)`` on training targets (std 1 when constant)."""
        import numpy as np

        y = np.asarray(y, dtype=np.float64)
        if transform == "log":
            if (y <= 0).any():
                raise ConfigError(
                    "regression transform 'log' needs positive targets (found values <= 0)"
                )
            y = np.log(y)
        sd = float(y.std())
        return float(y.mean()), sd if sd > 0 else 1.0

    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "l1":
            return F.l1_loss(pred, target)
        if self.loss_name == "mse":
            return F.mse_loss(pred, target)
        return F.huber_loss(pred, target, delta=1.0)

    # ---------------------------------------------------------------------------- steps
    def predict(self, batch, backbone) -> torch.Tensor:
        """Predictions in the target's units, one per structure."""
        return self.inverse_transform(self.raw(batch, backbone)[:, 0])

    def step(self, batch, backbone, generator=None) -> dict[str, torch.Tensor]:
        y = batch.target.to(batch.pos.dtype).reshape(-1)
        t = self.forward_transform(y)
        raw = self.raw(batch, backbone)[:, 0]
        loss = self._loss(raw, t)
        with torch.no_grad():
            pred = self.inverse_transform(raw)
            zero = torch.zeros_like(t)
            return {
                "loss": loss,
                "baseline": self._loss(zero, t),
                "mae": (pred - y).abs().mean(),
                "baseline_mae": (self.inverse_transform(zero) - y).abs().mean(),
            }


@register_task("classification")
class ClassificationTask(DownstreamTask):
    """Per-structure classification into ``n_classes`` (cross-entropy; accuracy)."""

    prior: torch.Tensor  # buffer

    def __init__(
        self, backbone, n_classes: int = 2, prior: Sequence[float] | None = None, **config: Any
    ):
        if int(n_classes) < 2:
            raise ConfigError(f"classification needs n_classes >= 2, got {n_classes}")
        if prior is not None:
            prior = [float(p) for p in prior]
            if len(prior) != int(n_classes) or min(prior) < 0 or sum(prior) <= 0:
                raise ConfigError(f"prior must be {n_classes} non-negative class frequencies")
            prior = [p / sum(prior) for p in prior]
        super().__init__(backbone, int(n_classes), n_classes=int(n_classes), prior=prior, **config)
        self.n_classes = int(n_classes)
        #: training class frequencies (the trivial predictor of ``baseline``); uniform when unknown
        uniform = [1.0 / self.n_classes] * self.n_classes
        self.register_buffer("prior", torch.tensor(prior or uniform, dtype=torch.float32))

    def predict_proba(self, batch, backbone) -> torch.Tensor:
        return torch.softmax(self.raw(batch, backbone), dim=-1)

    def predict(self, batch, backbone) -> torch.Tensor:
        return self.raw(batch, backbone).argmax(dim=-1)

    def step(self, batch, backbone, generator=None) -> dict[str, torch.Tensor]:
        label = batch.target.reshape(-1).long()
        logits = self.raw(batch, backbone)
        loss = F.cross_entropy(logits, label)
        with torch.no_grad():
            # baseline: predicting the training class frequencies (``prior``) for every structure
            base = -torch.log(self.prior.to(logits.dtype).clamp_min(1e-12))[label].mean()
            return {
                "loss": loss,
                "baseline": base,
                "accuracy": (logits.argmax(-1) == label).to(logits.dtype).mean(),
                "baseline_accuracy": (label == int(self.prior.argmax())).to(logits.dtype).mean(),
            }


__all__ = [
    "Readout",
    "DownstreamTask",
    "RegressionTask",
    "ClassificationTask",
    "READOUTS",
    "TRANSFORMS",
    "LOSSES",
]
