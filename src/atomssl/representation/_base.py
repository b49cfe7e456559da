"""The one interface every backbone implements.

A backbone takes a batch of graphs (:mod:`atomssl.graph`, torch_geometric ``Batch`` with ``z``,
``pos``, ``cell``, ``edge_index``, ``shift``, ``batch``) and returns a :class:`BackboneOutput`.

Conventions shared by all backbones
- species index 0 is the *mask token* (embedding tables have ``N_SPECIES = 119`` rows);
- when the batch carries ``z_soft`` (n, 119) probabilities, they replace the one-hot of ``z``
  (differentiable species, used by adversarial training);
- edge vectors are recomputed from ``pos`` (``atomssl.graph.edge_vectors``), so corrupting
  ``batch.pos`` is all a denoising task has to do;
- ``graph_spec`` says how graphs must be built for the backbone (``{"cutoff": r}`` or ``{"k": k}``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

N_SPECIES = 119  # 0 = mask token, 1..118 elements


@dataclass
class BackboneOutput:
    """What a backbone returns for a batch: invariant per-atom ``node`` features and per-structure
    ``graph`` embeddings, plus, where the backbone provides them, rotation-covariant per-atom
    ``vector`` features and per-edge ``edge`` / ``edge_vector`` features."""

    node: torch.Tensor  # (n_atoms, node_dim) invariant per-atom features
    graph: torch.Tensor  # (n_graphs, embedding_dim) invariant per-structure embedding
    vector: torch.Tensor | None = (
        None  # (n_atoms, vector_dim, 3) rotation-covariant per-atom vectors
    )
    edge: torch.Tensor | None = None  # (n_edges, edge_dim) invariant per-edge features
    edge_vector: torch.Tensor | None = None  # (n_edges, 3) covariant per-edge vectors, if any


class Backbone(nn.Module):
    """Base class. Subclasses set the class attributes and implement ``forward``."""

    name: ClassVar[str] = "backbone"
    provides_vectors: ClassVar[bool] = False
    provides_edges: ClassVar[bool] = False
    provides_edge_vectors: ClassVar[bool] = False

    def __init__(self, **config: Any):
        super().__init__()
        self.config: dict[str, Any] = {"name": self.name, **config}

    # sizes, set by subclasses in __init__
    node_dim: int
    embedding_dim: int
    edge_dim: int = 0
    vector_dim: int = 0

    @property
    def graph_spec(self) -> dict[str, float | int]:
        raise NotImplementedError

    @property
    def inference_graph_spec(self) -> dict:
        """How graphs are built for embedding and inference: ``graph_spec`` unless the backbone can
        read a richer graph there (``gaa``: whole tied neighbour shells, for exact invariance)."""
        return self.graph_spec

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def forward(self, batch) -> BackboneOutput:  # pragma: no cover - abstract
        raise NotImplementedError


BACKBONES: dict[str, type[Backbone]] = {}


def register_backbone(name: str) -> Callable[[type[Backbone]], type[Backbone]]:
    """Class decorator: file a :class:`Backbone` subclass in :data:`BACKBONES` under ``name`` (and
    set its ``name``), so that :func:`build_backbone` builds it from ``{"name": name, ...}``."""

    def wrap(cls: type[Backbone]) -> type[Backbone]:
        cls.name = name
        BACKBONES[name] = cls
        return cls

    return wrap


def build_backbone(config: dict[str, Any] | str) -> Backbone:
    """Build a backbone from ``{"name": ..., **kwargs}`` (or just a name, for defaults)."""
    from ..errors import ConfigError

    if isinstance(config, str):
        config = {"name": config}
    config = dict(config)
    name = config.pop("name", None)
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; available: {sorted(BACKBONES)}")
    try:
        return BACKBONES[name](**config)
    except TypeError as exc:
        raise ConfigError(f"backbone {name!r}: bad option: {exc}") from None
