"""A tiny, fast backbone for trainer tests (registered as ``toy``): invariant node/edge/graph
features and covariant per-atom vectors (RBF-weighted sums of unit edge vectors), so every crystal
pretext task can run on it in seconds. Import this module (config ``imports: [toy_backbone]``)."""

import os
import time

import torch
from torch import nn

from atomssl.graph import edge_vectors
from atomssl.representation import N_SPECIES, Backbone, BackboneOutput, register_backbone


@register_backbone("toy")
class ToyBackbone(Backbone):
    provides_vectors = True
    provides_edges = True

    def __init__(
        self,
        cutoff: float = 4.0,
        width: int = 32,
        n_rbf: int = 16,
        vector_dim: int = 8,
        layers: int = 2,
    ):
        super().__init__(
            cutoff=cutoff, width=width, n_rbf=n_rbf, vector_dim=vector_dim, layers=layers
        )
        self.cutoff = float(cutoff)
        self.node_dim = self.edge_dim = self.embedding_dim = width
        self.vector_dim = vector_dim
        self.embed = nn.Embedding(N_SPECIES, width)
        self.register_buffer("centers", torch.linspace(0.5, cutoff, n_rbf), persistent=False)
        self.filters = nn.ModuleList(nn.Linear(n_rbf, width) for _ in range(layers))
        self.updates = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.SiLU()) for _ in range(layers)
        )
        self.edge_out = nn.Sequential(
            nn.Linear(width + n_rbf, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.vec_weights = nn.Linear(width + n_rbf, vector_dim)

    @property
    def graph_spec(self):
        return {"cutoff": self.cutoff}

    def forward(self, batch) -> BackboneOutput:
        if os.environ.get("TOY_SLEEP"):  # lets a test kill a run reliably in the middle of an epoch
            time.sleep(float(os.environ["TOY_SLEEP"]))
        src, dst = batch.edge_index
        vec = edge_vectors(batch)
        d = vec.norm(dim=-1).clamp_min(1e-9)
        envelope = 0.5 * (torch.cos(torch.pi * (d / self.cutoff).clamp(max=1.0)) + 1.0)
        rbf = torch.exp(-4.0 * (d[:, None] - self.centers) ** 2) * envelope[:, None]
        soft = getattr(batch, "z_soft", None)
        h = (
            soft.to(self.embed.weight) @ self.embed.weight
            if soft is not None
            else self.embed(batch.z)
        )
        for filt, upd in zip(self.filters, self.updates):
            msg = filt(rbf) * h[dst]
            h = h + upd(torch.zeros_like(h).index_add_(0, src, msg))
        pair = torch.cat([h[src] + h[dst], rbf], dim=-1)
        edge = self.edge_out(pair)
        w = self.vec_weights(pair) * envelope[:, None]
        vector = torch.zeros(h.shape[0], self.vector_dim, 3, dtype=h.dtype, device=h.device)
        vector = vector.index_add_(0, src, w[:, :, None] * (vec / d[:, None])[:, None, :])
        n_graphs = int(batch.num_graphs) if hasattr(batch, "num_graphs") else 1
        gidx = (
            batch.batch if getattr(batch, "batch", None) is not None else torch.zeros_like(batch.z)
        )
        count = torch.zeros(n_graphs, dtype=h.dtype, device=h.device).index_add_(
            0, gidx, torch.ones_like(h[:, 0])
        )
        graph = (
            torch.zeros(n_graphs, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, gidx, h)
            / count[:, None]
        )
        return BackboneOutput(node=h, graph=graph, vector=vector, edge=edge)


def tiny_config(**changes):
    """A pretraining config that runs in seconds on CPU with this backbone."""
    cfg = {
        "seed": 0,
        "imports": ["toy_backbone"],
        "data": {
            "sources": [{"name": "synthetic", "n": 40}],
            "batch_size": 8,
            "val_fraction": 0.25,
        },
        "backbone": {"name": "toy", "width": 16, "vector_dim": 4},
        "tasks": [{"name": "mask", "weight": 1.0}, {"name": "denoise", "weight": 0.5}],
        "optim": {"lr": 3e-3},
        "trainer": {"max_epochs": 3, "accelerator": "cpu"},
    }
    for key, value in changes.items():
        node = cfg
        *parts, last = key.split("__")
        for p in parts:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg
