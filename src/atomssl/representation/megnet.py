"""MEGNet-style graph network (Chen et al. 2019) with Set2Set readouts, as used by the crystal
denoising SSL work (CDSSL).

Atoms carry a species embedding, bonds a Gaussian expansion of their length, the structure a
global state vector. Each block updates bonds from (source atom, destination atom, bond,
state), atoms from (mean of incoming bonds, atom, state) and the state from (mean bond, mean
atom, state), with residual connections. The structure embedding concatenates Set2Set
readouts of the final atoms and bonds with the final state (the state is already one vector
per structure, so it needs no set readout). Defaults follow the MEGNet reference
implementation (see ../shared/REFERENCES.md section 3). The network is E(3)-invariant: it sees
geometry only through bond lengths.

Written here rather than taken from matgl (not installed, DGL-based); the scatter operations
use torch's own ``index_add_`` so that no compiled PyG extension is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch_geometric.nn.aggr import Set2Set

from ..graph import edge_vectors
from ._base import N_SPECIES, Backbone, BackboneOutput, register_backbone

__all__ = ["MEGNet", "GaussianExpansion", "ShiftedSoftplus"]


class ShiftedSoftplus(nn.Module):
    """``softplus(x) - log 2`` (MEGNet's activation; zero at zero)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x) - math.log(2.0)


class GaussianExpansion(nn.Module):
    """``exp(-(d - c_k)^2 / width^2)`` for ``num`` centres ``c_k`` evenly spaced on [start, stop].

    Public so that pretext tasks can expand clean bond lengths into the same basis
    (CDSSL's edge-denoising target).
    """

    def __init__(self, start: float = 0.0, stop: float = 5.0, num: int = 100, width: float = 0.5):
        super().__init__()
        if num < 1 or width <= 0 or stop <= start:
            raise ValueError(
                f"bad Gaussian basis: start={start}, stop={stop}, num={num}, width={width}"
            )
        self.start, self.stop, self.num, self.width = (
            float(start),
            float(stop),
            int(num),
            float(width),
        )

    @property
    def centers(self) -> torch.Tensor:
        return torch.linspace(self.start, self.stop, self.num, dtype=torch.float64)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        # centres built in the input's dtype on the fly (exact in float64; 100 values, negligible)
        centers = torch.linspace(self.start, self.stop, self.num, dtype=d.dtype, device=d.device)
        return torch.exp(-(((d.unsqueeze(-1) - centers) / self.width) ** 2))


def _mlp(dims: Sequence[int], act: type[nn.Module] = ShiftedSoftplus) -> nn.Sequential:
    """Dense layers ``dims[0] -> ... -> dims[-1]``, each followed by the activation."""
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers)


class _SplitInputMLP(nn.Module):
    """An MLP on ``cat(parts)`` whose first layer is applied part by part.

    ``W @ cat(a[i], b[j], ...) == (W_a @ a)[i] + (W_b @ b)[j] + ...``: transforming each part
    at its own size (atoms, structures) before gathering it onto the bonds is exact and far
    cheaper than building the concatenated per-bond input (bonds outnumber atoms ~20-60x).
    """

    def __init__(self, part_dims: Sequence[int], hidden: Sequence[int]):
        super().__init__()
        self.part_dims = list(part_dims)
        self.first = nn.Linear(sum(part_dims), hidden[0])
        self.act = ShiftedSoftplus()
        self.rest = _mlp(hidden)

    def forward(
        self, parts: Sequence[tuple[torch.Tensor, torch.Tensor | None]], chunk: int | None = None
    ) -> torch.Tensor:
        """``parts``: (features, gather index or None), in the order of ``part_dims``; with ``chunk``,
        the output rows are computed ``chunk`` at a time (same result, less memory)."""
        weights = torch.split(self.first.weight, self.part_dims, dim=1)
        # gathered parts are transformed once at their own size, the others row slice by row slice
        small = [
            F.linear(x, w) if index is not None else None for (x, index), w in zip(parts, weights)
        ]
        x0, i0 = parts[0]

        def rows(s: slice) -> torch.Tensor:
            out: torch.Tensor | None = None
            for (x, index), w, g in zip(parts, weights, small):
                if index is not None:
                    assert g is not None  # gathered parts were transformed once above
                    y = g.index_select(0, index[s])
                else:
                    y = F.linear(x[s], w)
                out = y if out is None else out + y
            assert out is not None  # parts is never empty
            return self.rest(self.act(out + self.first.bias))

        return map_rows(rows, (x0 if i0 is None else i0).shape[0], chunk)


def map_rows(fn, n_rows: int, chunk: int | None) -> torch.Tensor:
    """``fn(slice)`` over consecutive row slices of at most ``chunk`` rows, stacked into one
    tensor (a single ``fn(slice(None))`` when ``chunk`` is None or covers every row)."""
    if not chunk or n_rows <= chunk:
        return fn(slice(None))
    out = None
    for a in range(0, n_rows, chunk):
        y = fn(slice(a, a + chunk))
        if out is None:
            out = y.new_empty((n_rows, *y.shape[1:]))
        out[a : a + chunk] = y
    assert out is not None  # n_rows > chunk: the loop ran
    return out


def _scatter_mean(x: torch.Tensor, index: torch.Tensor, inv_count: torch.Tensor) -> torch.Tensor:
    out = x.new_zeros(inv_count.shape[0], x.shape[1]).index_add_(0, index, x)
    return out * inv_count.unsqueeze(1)


def _inverse_counts(index: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    count = torch.bincount(index, minlength=size).to(dtype)
    return 1.0 / count.clamp(min=1.0)  # empty groups average to 0


class _MEGNetBlock(nn.Module):
    """Optional dense pre-layers, one MEGNet graph convolution, residual connections."""

    def __init__(self, dim: int, dense: Sequence[int], conv: Sequence[int], dropout: float):
        super().__init__()
        has_dense = len(dense) > 0
        self.edge_dense = _mlp([dim, *dense]) if has_dense else nn.Identity()
        self.node_dense = _mlp([dim, *dense]) if has_dense else nn.Identity()
        self.state_dense = _mlp([dim, *dense]) if has_dense else nn.Identity()
        d = dense[-1] if has_dense else dim
        out = conv[-1]
        self.edge_update = _SplitInputMLP([d, d, d, d], conv)  # (v_src, v_dst, e, u)
        self.node_update = _SplitInputMLP([out, d, d], conv)  # (mean incoming e', v, u)
        self.state_update = _SplitInputMLP([out, out, d], conv)  # (mean e', mean v', u)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, e, v, u, g):
        e0, v0, u0 = e, v, u
        chunk = g.get("edge_chunk")
        e = map_rows(lambda s: self.edge_dense(e0[s]), e0.shape[0], chunk)
        v, u = self.node_dense(v), self.state_dense(u)
        e_new = self.edge_update(
            [(v, g["src"]), (v, g["dst"]), (e, None), (u, g["edge_graph"])], chunk
        )
        del e  # the dense edge features are not needed past the edge update
        v_in = _scatter_mean(e_new, g["dst"], g["inv_in_degree"])
        v_new = self.node_update([(v_in, None), (v, None), (u, g["node_graph"])])
        u_e = _scatter_mean(e_new, g["edge_graph"], g["inv_edges_per_graph"])
        u_v = _scatter_mean(v_new, g["node_graph"], g["inv_nodes_per_graph"])
        u_new = self.state_update([(u_e, None), (u_v, None), (u, None)])
        return (
            self.dropout(e_new) + e0,
            self.dropout(v_new) + v0,
            self.dropout(u_new) + u0,
        )


@register_backbone("megnet")
class MEGNet(Backbone):
    """MEGNet graph network with Set2Set readouts (E(3)-invariant).

    Outputs: ``node`` (n, conv[-1]) atom features, ``edge`` (E, conv[-1]) bond features,
    ``graph`` (B, 4 * conv[-1] + conv[-1]) = [Set2Set(atoms), Set2Set(bonds), state].

    ``edge_chunk`` (default None: off): when set, and only without autograd (inference), the
    per-bond work (Gaussian expansion, edge encoder, each block's edge MLPs) runs on at most
    ``edge_chunk`` bonds at a time, so that only the (E, width) bond features stay in memory
    between layers. Exact: the same numbers as the unchunked forward up to float round-off (the
    global state couples every atom in each block, so the graph is cut by bonds, not by atoms).
    """

    edge_chunk: int | None = None

    provides_vectors = False
    provides_edges = True

    def __init__(
        self,
        cutoff: float = 4.0,
        n_gaussians: int = 100,
        gaussian_width: float = 0.5,
        node_embedding_dim: int = 16,
        state_dim: int = 2,
        n_blocks: int = 3,
        dense: Sequence[int] = (64, 32),
        conv: Sequence[int] = (64, 64, 32),
        set2set_iterations: int = 2,
        set2set_layers: int = 1,
        dropout: float = 0.0,
    ):
        from ..errors import ConfigError

        dense, conv = [int(x) for x in dense], [int(x) for x in conv]
        if not dense or not conv or dense[-1] != conv[-1]:
            raise ConfigError(
                f"megnet: dense[-1] must equal conv[-1] for the residual connections (got {dense}, {conv})"
            )
        if cutoff <= 0 or n_blocks < 1 or set2set_iterations < 1:
            raise ConfigError("megnet: need cutoff > 0, n_blocks >= 1, set2set_iterations >= 1")
        super().__init__(
            cutoff=float(cutoff), n_gaussians=int(n_gaussians), gaussian_width=float(gaussian_width),
            node_embedding_dim=int(node_embedding_dim), state_dim=int(state_dim), n_blocks=int(n_blocks),
            dense=dense, conv=conv, set2set_iterations=int(set2set_iterations),
            set2set_layers=int(set2set_layers), dropout=float(dropout),
        )  # fmt: skip
        self.cutoff = float(cutoff)
        width = dense[-1]
        self.embedding = nn.Embedding(N_SPECIES, node_embedding_dim)
        self.rbf = GaussianExpansion(0.0, self.cutoff + 1.0, n_gaussians, gaussian_width)
        # the global state starts from a learned constant (no per-structure state inputs)
        self.state0 = nn.Parameter(torch.zeros(state_dim))
        self.edge_encoder = _mlp([n_gaussians, *dense])
        self.node_encoder = _mlp([node_embedding_dim, *dense])
        self.state_encoder = _mlp([state_dim, *dense])
        # first block has no dense pre-layers (the encoders just ran), as in the reference
        self.blocks = nn.ModuleList(
            _MEGNetBlock(width, [] if i == 0 else dense, conv, dropout) for i in range(n_blocks)
        )
        self.node_s2s = Set2Set(
            width, processing_steps=set2set_iterations, num_layers=set2set_layers
        )
        self.edge_s2s = Set2Set(
            width, processing_steps=set2set_iterations, num_layers=set2set_layers
        )
        self.node_dim = width
        self.edge_dim = width
        self.embedding_dim = 2 * width + 2 * width + width

    @property
    def graph_spec(self) -> dict[str, float]:
        return {"cutoff": self.cutoff}

    def embed_species(self, batch) -> torch.Tensor:
        z_soft = getattr(batch, "z_soft", None)
        if z_soft is not None:
            return z_soft.to(self.embedding.weight.dtype) @ self.embedding.weight
        return self.embedding(batch.z)

    def forward(self, batch) -> BackboneOutput:
        src, dst = batch.edge_index
        n = batch.pos.shape[0]
        node_graph = getattr(batch, "batch", None)
        if node_graph is None:
            node_graph = torch.zeros(n, dtype=torch.long, device=batch.pos.device)
        n_graphs = (
            int(batch.num_graphs)
            if hasattr(batch, "num_graphs")
            else int(node_graph.max()) + 1
            if n
            else 0
        )
        edge_graph = node_graph.index_select(0, src)
        dtype = batch.pos.dtype
        g = {
            "src": src,
            "dst": dst,
            "node_graph": node_graph,
            "edge_graph": edge_graph,
            "inv_in_degree": _inverse_counts(dst, n, dtype),
            "inv_edges_per_graph": _inverse_counts(edge_graph, n_graphs, dtype),
            "inv_nodes_per_graph": _inverse_counts(node_graph, n_graphs, dtype),
        }
        # chunk bonds only in inference: slices written into one buffer would break autograd
        g["edge_chunk"] = self.edge_chunk if not torch.is_grad_enabled() else None
        length = edge_vectors(batch).norm(dim=-1)
        e = map_rows(
            lambda s: self.edge_encoder(self.rbf(length[s])), length.shape[0], g["edge_chunk"]
        )
        v = self.node_encoder(self.embed_species(batch))
        u = self.state_encoder(self.state0.to(dtype).expand(n_graphs, -1))
        for block in self.blocks:
            e, v, u = block(e, v, u, g)
        graph = torch.cat(
            [
                self.node_s2s(v, node_graph, dim_size=n_graphs),
                self.edge_s2s(e, edge_graph, dim_size=n_graphs),
                u,
            ],
            dim=-1,
        )
        return BackboneOutput(node=v, graph=graph, edge=e)
