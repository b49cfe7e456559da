"""Geometric-algebra attention on per-particle neighbour clouds (seed 001 architecture).

Every atom sees the cloud of its ``k`` nearest neighbours (a kNN graph: ``to_graph(s, k=k)``
gives each atom exactly ``k`` outgoing edges, src = centre, dst = neighbour, sorted by src
then distance, so edges reshape to ``(n_atoms, k)``). Bond vectors ``r_ij`` become
multivectors; each of ``n_blocks`` blocks runs a multivector-to-multivector attention update
(the covariant stream) and an invariant attention update (the per-bond features), then an
MLP, a residual and a LayerNorm, using the PyTorch layers of the ``geometric-algebra-attention``
package (rank-2 products over pairs of bonds of one cloud).

Symmetry: with ``chiral=True`` (the package's "full" invariants, as in the reference) the
invariants include the pseudoscalar (trivector) part of geometric products, which flips sign
under reflections: outputs are invariant/covariant under proper rotations only, and
distinguish mirror images. ``chiral=False`` feeds ``|trivector|`` instead, which makes the
whole network O(3)-equivariant (invariants unchanged, vectors rotated, also under
reflections).

Optional batch fields honoured besides the common ones (``z``, ``pos``, ``z_soft``):

- ``edge_delta`` (E, 3): a displacement (in Angstrom) added to each edge vector after it is
  computed from positions -- how per-bond corruptions (noisy bonds, shifted clouds) are fed;
- ``edge_mask`` (E,) bool: ``False`` hides a bond from its cloud (it is zeroed and excluded
  from every attention; its own per-bond outputs are meaningless).

``momentum``: of the running statistics of the package's momentum normalisations (0.99 there).

Length scale: vectors are divided by ``length_scale`` (default 2, as in the reference) and,
with ``normalize="min"``, by each structure's shortest neighbour distance (``"mean"``: each
cloud's mean neighbour distance), which makes the network scale-invariant. Vector outputs are
multiplied back by the same per-cloud factor, so they are in the units of the positions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._base import N_SPECIES, Backbone, BackboneOutput, register_backbone

_MODES = ("single", "partial", "full")


def _gala():
    # imported lazily: importing the package pulls in its keras/tensorflow shims only on demand
    from geometric_algebra_attention import pytorch as gala

    return gala


class _ParityEven(nn.Module):
    """``|x|`` on the trivector (pseudoscalar) columns of multivector invariants.

    ``mvecmvec_invariants`` returns ``[scalar, |vector|, |bivector|, trivector]`` per product;
    the trivector changes sign under reflections. Taking its absolute value removes the
    network's only reflection-odd input (see module docstring).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        odd = torch.zeros(x.shape[-1], dtype=torch.bool, device=x.device)
        odd[3::4] = True
        return torch.where(odd, x.abs(), x)


class _Dropout(nn.Module):
    """Inverted dropout (as ``nn.Dropout``) whose keep mask is drawn 16 bits at a time from
    64-bit random integers. The per-element Bernoulli draws of ``nn.Dropout`` took ~20-30% of a
    CPU training step here (the pair tensors hold n * k^2 * hidden values); this is ~5x cheaper.
    Drop probability round(p * 2^16) / 2^16, within 1e-5 of ``p``; seeded by torch's generator."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.threshold = int(round(self.p * 65536)) - 32768  # keep iff a uniform int16 >= threshold

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        n = x.numel()
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
        keep = words.view(torch.int16)[:n].view(x.shape) >= self.threshold
        return x * (keep.to(x.dtype) * (1.0 / (1.0 - self.p)))  # fastest forward+backward of the forms tried


def _mlp(
    n_in: int, hidden: int, n_out: int, dropout: float, pre_norm: bool, chiral: bool = True, momentum: float = 0.99
) -> nn.Sequential:
    """Dense(hidden)-LN-ReLU-Dropout-Dense(n_out), optionally after a momentum normalisation."""
    gala = _gala()
    layers: list[nn.Module] = []
    if pre_norm:
        if not chiral:
            layers.append(_ParityEven())
        layers.append(gala.MomentumNormalization(n_in, momentum=momentum))
    # in-place ReLU: LayerNorm's backward needs its input, not its output
    layers += [nn.Linear(n_in, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True)]
    if dropout:
        layers.append(_Dropout(dropout))
    layers.append(nn.Linear(hidden, n_out))
    return nn.Sequential(*layers)


class _Block(nn.Module):
    """Multivector attention update + invariant attention update, MLP, residuals, norms."""

    def __init__(self, width: int, hidden: int, dropout: float, rank: int, inv_mode: str, cov_mode: str,
                 normalized: bool, chiral: bool, merge_fun: str, join_fun: str, momentum: float):
        super().__init__()
        gala = _gala()
        inv_dims = gala.MultivectorAttention.get_invariant_dims(rank, inv_mode, normalized)
        common = dict(
            rank=rank, invariant_mode=inv_mode, covariant_mode=cov_mode, include_normalized_products=normalized,
            merge_fun=merge_fun, join_fun=join_fun,
        )
        self.vector_attention = gala.Multivector2MultivectorAttention(
            width,
            _mlp(width, hidden, 1, dropout, pre_norm=False),  # score net
            _mlp(inv_dims, hidden, width, dropout, pre_norm=True, chiral=chiral, momentum=momentum),  # value net
            _mlp(width, hidden, 1, dropout, pre_norm=True, momentum=momentum),  # scale net (input: invariant joined values)
            reduce=False,
            **common,
        )
        self.invariant_attention = gala.MultivectorAttention(
            width,
            _mlp(width, hidden, 1, dropout, pre_norm=False),
            _mlp(inv_dims, hidden, width, dropout, pre_norm=True, chiral=chiral, momentum=momentum),
            reduce=False,
            **common,
        )
        self.mlp = _mlp(width, hidden, width, dropout, pre_norm=False)
        self.norm = nn.LayerNorm(width)
        # rotation-covariant normalisation of the multivector stream (a global scalar rescale);
        # a per-component LayerNorm, as in parts of the reference code, would break equivariance
        self.vector_norm = gala.MomentumLayerNormalization(momentum=momentum)

    def forward(self, x, v, mask):
        kw = {} if mask is None else {"mask": (mask, mask)}
        x_new = self.vector_attention((x, v), **kw)
        v_new = self.invariant_attention((x_new, v), **kw)
        v = self.norm(v + self.mlp(v_new))
        x = self.vector_norm(x + x_new)
        if mask is not None:
            x = x * mask[..., None]
        return x, v


@register_backbone("gaa")
class GeometricAlgebraAttention(Backbone):
    """Geometric-algebra attention network on kNN neighbour clouds (see module docstring).

    Outputs: ``node`` (n, width) invariant per-particle embedding (attention-pooled over the
    cloud), ``edge`` (n*k, width) per-bond invariants, ``vector`` (n, vector_channels, 3)
    covariant per-cloud vectors, ``edge_vector`` (n*k, 3) covariant per-bond vectors and
    ``graph`` (n_graphs, width), the mean of ``node`` over each structure.
    """

    provides_vectors = True
    provides_edges = True
    provides_edge_vectors = True
    #: honours ``batch.edge_delta`` and ``batch.edge_mask`` (used by the cloud pretext tasks)
    accepts_edge_delta = True
    #: bond pairs per slice of clouds at inference (no grad, eval mode); ``None``: all at once
    edge_chunk: int | None = None

    def __init__(
        self,
        k: int = 12,
        width: int = 32,
        n_blocks: int = 3,
        rank: int = 2,
        hidden_factor: float = 2.0,
        species_dim: int = 32,
        dropout: float = 0.1,
        invariant_mode: str = "full",
        covariant_mode: str = "full",
        include_normalized_products: bool = True,
        merge_fun: str = "mean",
        join_fun: str = "mean",
        normalize: str | None = None,
        length_scale: float = 2.0,
        chiral: bool = True,
        vector_channels: int = 4,
        momentum: float = 0.99,
        **extra: Any,
    ):
        from ..errors import ConfigError

        if extra:
            raise ConfigError(f"backbone 'gaa': unknown options {sorted(extra)}")
        if invariant_mode not in _MODES or covariant_mode not in _MODES:
            raise ConfigError(f"backbone 'gaa': modes must be one of {_MODES}")
        if normalize not in (None, "none", "min", "mean"):
            raise ConfigError(f"backbone 'gaa': normalize must be None, 'min' or 'mean', got {normalize!r}")
        if k < 2 or width < 1 or n_blocks < 1 or rank < 1 or not length_scale > 0:
            raise ConfigError("backbone 'gaa': need k >= 2, width >= 1, n_blocks >= 1, rank >= 1, length_scale > 0")
        super().__init__(
            k=k, width=width, n_blocks=n_blocks, rank=rank, hidden_factor=hidden_factor, species_dim=species_dim,
            dropout=dropout, invariant_mode=invariant_mode, covariant_mode=covariant_mode,
            include_normalized_products=include_normalized_products, merge_fun=merge_fun, join_fun=join_fun,
            normalize=normalize, length_scale=length_scale, chiral=chiral, vector_channels=vector_channels,
            momentum=momentum,
        )
        gala = _gala()
        self.k = int(k)
        self.normalize = None if normalize == "none" else normalize
        self.length_scale = float(length_scale)
        hidden = int(round(width * hidden_factor))
        self.node_dim = self.embedding_dim = self.edge_dim = width
        self.vector_dim = int(vector_channels)

        self.species = nn.Embedding(N_SPECIES, species_dim)
        self.type_embedding = nn.Linear(2 * species_dim, width)
        self.blocks = nn.ModuleList(
            _Block(width, hidden, dropout, rank, invariant_mode, covariant_mode, include_normalized_products, chiral,
                   merge_fun, join_fun, momentum)
            for _ in range(n_blocks)
        )
        inv_dims = gala.MultivectorAttention.get_invariant_dims(rank, invariant_mode, include_normalized_products)
        # permutation-invariant readout of each cloud into one invariant per-particle vector
        self.readout = gala.MultivectorAttention(
            width,
            _mlp(width, hidden, 1, dropout, pre_norm=False),
            _mlp(inv_dims, hidden, width, dropout, pre_norm=True, chiral=chiral, momentum=momentum),
            reduce=True, rank=rank, invariant_mode=invariant_mode, covariant_mode=covariant_mode,
            include_normalized_products=include_normalized_products, merge_fun=merge_fun, join_fun=join_fun,
        )
        # per-cloud covariant vectors: attention pooling of the bonds' vector parts with
        # invariant weights (score) and invariant gains (scale), one pair per channel
        self.vector_head = nn.Linear(width, 2 * self.vector_dim) if self.vector_dim else None

    @property
    def graph_spec(self) -> dict[str, int]:
        return {"k": self.k}

    # -- inputs ---------------------------------------------------------------------------
    def _clouds(self, batch):
        from ..graph import edge_vectors

        n = batch.pos.shape[0]
        k = self.k
        src = batch.edge_index[0]
        expected = torch.arange(n, device=src.device).repeat_interleave(k)
        if src.shape[0] != n * k or not torch.equal(src, expected):
            from ..errors import ConfigError

            raise ConfigError(
                f"backbone 'gaa' needs a kNN graph with exactly k={k} edges per atom, grouped by centre "
                f"(build graphs with to_graph(structure, k={k})); got {src.shape[0]} edges for {n} atoms"
            )
        vec = edge_vectors(batch)
        # per-cloud length unit (n, 1, 1), from the uncorrupted bonds
        dist = vec.norm(dim=-1).reshape(n, k)
        if self.normalize == "min":
            graph_of = getattr(batch, "batch", None)
            if graph_of is None:
                graph_of = torch.zeros(n, dtype=torch.long, device=vec.device)
            n_graphs = int(graph_of.max()) + 1 if n else 0
            dmin = torch.full((n_graphs,), float("inf"), dtype=vec.dtype, device=vec.device)
            dmin = dmin.scatter_reduce(0, graph_of, dist.min(dim=1).values, reduce="amin")
            unit = dmin[graph_of]
        elif self.normalize == "mean":
            unit = dist.mean(dim=1)
        else:
            unit = torch.ones(n, dtype=vec.dtype, device=vec.device)
        unit = (unit * self.length_scale).reshape(n, 1, 1)
        delta = getattr(batch, "edge_delta", None)
        if delta is not None:
            vec = vec + delta.to(vec.dtype)
        r = vec.reshape(n, k, 3) / unit
        mask = getattr(batch, "edge_mask", None)
        if mask is not None:
            mask = mask.reshape(n, k).bool()
            r = r * mask[..., None]
        return r, unit, mask

    def _types(self, batch) -> torch.Tensor:
        z_soft = getattr(batch, "z_soft", None)
        if z_soft is not None:
            emb = z_soft.to(self.species.weight.dtype) @ self.species.weight
        else:
            emb = self.species(batch.z)
        src, dst = batch.edge_index
        ei, ej = emb[src], emb[dst]
        t = self.type_embedding(torch.cat([ej - ei, ej + ei], dim=-1))
        return t.reshape(batch.pos.shape[0], self.k, -1)

    # -- forward --------------------------------------------------------------------------
    def _cloud_forward(self, r, unit, mask, v):
        """Blocks, readout and vector head on a set of clouds: (node, bond vectors, vectors, bond features)."""
        gala = _gala()
        x = gala.Vector2Multivector()(r)
        for block in self.blocks:
            x, v = block(x, v, mask)
        kw = {} if mask is None else {"mask": (mask, mask)}
        node = self.readout((x, v), **kw)

        bond_vec = gala.Multivector2Vector()(x)  # (n, k, 3), covariant
        if self.vector_head is not None:
            sw = self.vector_head(v)  # (n, k, 2C)
            score, gain = sw[..., : self.vector_dim], sw[..., self.vector_dim :]
            if mask is not None:
                score = score.masked_fill(~mask[..., None], float("-inf"))
            weight = torch.softmax(score, dim=1) * gain  # (n, k, C)
            vector = torch.einsum("nkc,nki->nci", weight, bond_vec) * unit
        else:
            vector = None
        return node, bond_vec, vector, v

    def forward(self, batch) -> BackboneOutput:
        n, k = batch.pos.shape[0], self.k
        r, unit, mask = self._clouds(batch)
        v = self._types(batch)
        if mask is not None:
            v = v * mask[..., None]
        # Clouds are independent once the length unit is known, and in eval mode the package's
        # momentum normalisations use their running statistics, so inference may run a slice of
        # clouds at a time: exact, and the (clouds, k, k, hidden) pair tensors of the rank-2
        # products stay small. ``edge_chunk`` (set by ``atomssl embed``) is counted in bond pairs,
        # k^2 per cloud, as those tensors are what fills memory here.
        per = None if self.edge_chunk is None else max(1, int(self.edge_chunk) // (k * k))
        if per is None or per >= n or self.training or torch.is_grad_enabled():
            node, bond_vec, vector, v = self._cloud_forward(r, unit, mask, v)
        else:
            parts = [
                self._cloud_forward(r[i : i + per], unit[i : i + per], None if mask is None else mask[i : i + per],
                                    v[i : i + per])
                for i in range(0, n, per)
            ]  # fmt: skip
            node, bond_vec, v = (torch.cat([p[j] for p in parts]) for j in (0, 1, 3))
            vector = None if parts[0][2] is None else torch.cat([p[2] for p in parts])

        graph_of = getattr(batch, "batch", None)
        if graph_of is None:
            graph_of = torch.zeros(n, dtype=torch.long, device=node.device)
        n_graphs = int(graph_of.max()) + 1 if n else 0
        total = node.new_zeros(n_graphs, node.shape[1]).index_add_(0, graph_of, node)
        count = node.new_zeros(n_graphs).index_add_(0, graph_of, node.new_ones(n)).clamp_min(1)
        return BackboneOutput(
            node=node,
            graph=total / count[:, None],
            vector=vector,
            edge=v.reshape(n * k, -1),
            edge_vector=(bond_vec * unit).reshape(n * k, 3),
        )
