"""Geometric-algebra attention on per-particle neighbour clouds (seed 001 architecture).

Every atom sees the cloud of its ``k`` nearest neighbours (a kNN graph: ``to_graph(s, k=k)``
gives each atom exactly ``k`` outgoing edges, src = centre, dst = neighbour, sorted by src
then distance, so edges reshape to ``(n_atoms, k)``). A graph with more edges per atom, grouped
by centre (``to_graph(s, k=k, ties=True)``: whole tied k-th shells, as in rock salt or bcc), is
read with multiplicity weights (:func:`atomssl.graph.tie_weights`, summing to ``k`` per cloud)
on every attention, so embeddings are exact functions of geometry: independent of atom order,
equal on symmetry-equivalent atoms. Embedding uses such graphs (``inference_graph_spec``);
training keeps exactly ``k`` bonds. Bond vectors ``r_ij`` become
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
from ._gaa_blocks import _attention_mask, _Block, _Dropout, _gala, _mlp, _weighted  # noqa: F401 (_Dropout: tests)

_MODES = ("single", "partial", "full")


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
            raise ConfigError(
                f"backbone 'gaa': normalize must be None, 'min' or 'mean', got {normalize!r}"
            )
        if k < 2 or width < 1 or n_blocks < 1 or rank < 1 or not length_scale > 0:
            raise ConfigError(
                "backbone 'gaa': need k >= 2, width >= 1, n_blocks >= 1, rank >= 1, length_scale > 0"
            )
        super().__init__(
            k=k,
            width=width,
            n_blocks=n_blocks,
            rank=rank,
            hidden_factor=hidden_factor,
            species_dim=species_dim,
            dropout=dropout,
            invariant_mode=invariant_mode,
            covariant_mode=covariant_mode,
            include_normalized_products=include_normalized_products,
            merge_fun=merge_fun,
            join_fun=join_fun,
            normalize=normalize,
            length_scale=length_scale,
            chiral=chiral,
            vector_channels=vector_channels,
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
            _Block(
                width,
                hidden,
                dropout,
                rank,
                invariant_mode,
                covariant_mode,
                include_normalized_products,
                chiral,
                merge_fun,
                join_fun,
                momentum,
            )
            for _ in range(n_blocks)
        )
        inv_dims = gala.MultivectorAttention.get_invariant_dims(
            rank, invariant_mode, include_normalized_products
        )
        # permutation-invariant readout of each cloud into one invariant per-particle vector
        self.readout = _weighted("MultivectorAttention")(
            width,
            _mlp(width, hidden, 1, dropout, pre_norm=False),
            _mlp(inv_dims, hidden, width, dropout, pre_norm=True, chiral=chiral, momentum=momentum),
            reduce=True,
            rank=rank,
            invariant_mode=invariant_mode,
            covariant_mode=covariant_mode,
            include_normalized_products=include_normalized_products,
            merge_fun=merge_fun,
            join_fun=join_fun,
        )
        # per-cloud covariant vectors: attention pooling of the bonds' vector parts with
        # invariant weights (score) and invariant gains (scale), one pair per channel
        self.vector_head = nn.Linear(width, 2 * self.vector_dim) if self.vector_dim else None

    @property
    def graph_spec(self) -> dict[str, float | int]:
        return {"k": self.k}

    @property
    def inference_graph_spec(self) -> dict:
        """Whole tied k-th shells (``to_graph(..., ties=True)``), weighted so that embeddings are exact
        functions of geometry. Training keeps exactly ``k`` bonds per atom: the cloud pretext tasks
        corrupt (n, k) bond arrays, and thermal or noisy training clouds have no ties."""
        return {"k": self.k, "ties": True}

    # -- inputs ---------------------------------------------------------------------------
    def _layout(self, batch):
        """``(src, slot, width)`` placing each edge in a dense (n, width) cloud layout.

        A plain kNN graph (exactly ``k`` edges per atom, grouped by centre) is the identity layout
        (``slot`` None). A graph with whole tied shells (``to_graph(..., ties=True)``) has >= ``k``
        edges per atom: clouds are padded to the largest."""
        from ..errors import ConfigError

        n, k = batch.pos.shape[0], self.k
        src = batch.edge_index[0]
        expected = torch.arange(n, device=src.device).repeat_interleave(k)
        if src.shape[0] == n * k and torch.equal(src, expected):
            return src, None, k
        counts = torch.bincount(src, minlength=n)
        grouped = bool((src[1:] >= src[:-1]).all()) if src.shape[0] > 1 else True
        if not grouped or n == 0 or int(counts.min()) < k:
            raise ConfigError(
                f"backbone 'gaa' needs a kNN graph with at least k={k} edges per atom, grouped by centre "
                f"(build graphs with to_graph(structure, k={k})); got {src.shape[0]} edges for {n} atoms"
            )
        slot = (
            torch.arange(src.shape[0], device=src.device) - (torch.cumsum(counts, 0) - counts)[src]
        )
        return src, slot, int(counts.max())

    @staticmethod
    def _sparse(values: torch.Tensor, layout) -> torch.Tensor:
        """Per-edge rows (E, ...) of a dense (n, K, ...) cloud tensor (inverse of :meth:`_dense`)."""
        src, slot, width = layout
        if slot is None:
            return values.reshape(-1, *values.shape[2:])
        return values[src, slot]

    @staticmethod
    def _dense(values: torch.Tensor, layout, n: int, fill=0) -> torch.Tensor:
        src, slot, width = layout
        if slot is None:
            return values.reshape(n, width, *values.shape[1:])
        out = values.new_full((n, width, *values.shape[1:]), fill)
        return out.index_put((src, slot), values)

    def _clouds(self, batch, layout):
        """Bond vectors (n, K, 3) in length units, the unit (n, 1, 1), the bond mask (n, K) or None, and
        log multiplicity weights (n, K) or None (all bonds weigh 1)."""
        from ..graph import edge_vectors, tie_weights

        n, k = batch.pos.shape[0], self.k
        vec = self._dense(edge_vectors(batch), layout, n)
        dist = vec.norm(dim=-1)
        present = None
        if layout[1] is not None:  # padding slots and zero vectors are not bonds
            edges = torch.ones_like(batch.edge_index[0], dtype=torch.bool)
            present = self._dense(edges, layout, n, False) & (dist > 0)
        weight = None
        if present is not None:
            weight = tie_weights(torch.where(present, dist, torch.zeros_like(dist)), k)
        # per-cloud length unit (n, 1, 1), from the uncorrupted bonds
        if self.normalize == "min":
            graph_of = getattr(batch, "batch", None)
            if graph_of is None:
                graph_of = torch.zeros(n, dtype=torch.long, device=vec.device)
            n_graphs = int(graph_of.max()) + 1 if n else 0
            near = (
                dist
                if present is None
                else torch.where(present, dist, torch.full_like(dist, float("inf")))
            )
            dmin = torch.full((n_graphs,), float("inf"), dtype=vec.dtype, device=vec.device)
            dmin = dmin.scatter_reduce(0, graph_of, near.min(dim=1).values, reduce="amin")
            unit = dmin[graph_of]
        elif self.normalize == "mean":
            unit = dist.mean(dim=1) if weight is None else (weight * dist).sum(dim=1) / k
        else:
            unit = torch.ones(n, dtype=vec.dtype, device=vec.device)
        unit = (unit * self.length_scale).reshape(n, 1, 1)
        delta = getattr(batch, "edge_delta", None)
        if delta is not None:
            vec = vec + self._dense(delta.to(vec.dtype), layout, n)
        r = vec / unit
        mask = getattr(batch, "edge_mask", None)
        if mask is not None:
            mask = self._dense(mask.bool(), layout, n, False)
        if weight is not None:
            bonds = weight > 0
            mask = bonds if mask is None else mask & bonds
        if mask is not None:
            r = r * mask[..., None]
        log_weight = None
        if weight is not None and bool((weight != 1).any()):
            log_weight = torch.where(weight > 0, weight.log(), torch.zeros_like(weight)).to(r.dtype)
        return r, unit, mask, log_weight

    def _types(self, batch, layout) -> torch.Tensor:
        z_soft = getattr(batch, "z_soft", None)
        if z_soft is not None:
            emb = z_soft.to(self.species.weight.dtype) @ self.species.weight
        else:
            emb = self.species(batch.z)
        src, dst = batch.edge_index
        ei, ej = emb[src], emb[dst]
        t = self.type_embedding(torch.cat([ej - ei, ej + ei], dim=-1))
        return self._dense(t, layout, batch.pos.shape[0])

    # -- forward --------------------------------------------------------------------------
    def _cloud_forward(self, r, unit, mask, v, log_weight=None):
        """Blocks, readout and vector head on a set of clouds: (node, bond vectors, vectors, bond features)."""
        gala = _gala()
        x = gala.Vector2Multivector()(r)
        for block in self.blocks:
            x, v = block(x, v, mask, log_weight)
        node = self.readout((x, v), **_attention_mask(mask, log_weight))

        bond_vec = gala.Multivector2Vector()(x)  # (n, k, 3), covariant
        if self.vector_head is not None:
            sw = self.vector_head(v)  # (n, k, 2C)
            score, gain = sw[..., : self.vector_dim], sw[..., self.vector_dim :]
            if mask is not None:
                score = score.masked_fill(~mask[..., None], float("-inf"))
            if log_weight is not None:
                score = score + log_weight[..., None]
            weight = torch.softmax(score, dim=1) * gain  # (n, k, C)
            vector = torch.einsum("nkc,nki->nci", weight, bond_vec) * unit
        else:
            vector = None
        return node, bond_vec, vector, v

    def forward(self, batch) -> BackboneOutput:
        n = batch.pos.shape[0]
        layout = self._layout(batch)
        width = layout[2]
        r, unit, mask, log_weight = self._clouds(batch, layout)
        v = self._types(batch, layout)
        if mask is not None:
            v = v * mask[..., None]
        # Clouds are independent once the length unit is known, and in eval mode the package's
        # momentum normalisations use their running statistics, so inference may run a slice of
        # clouds at a time: exact, and the (clouds, k, k, hidden) pair tensors of the rank-2
        # products stay small. ``edge_chunk`` (set by ``atomssl embed``) is counted in bond pairs,
        # k^2 per cloud, as those tensors are what fills memory here.
        per = None if self.edge_chunk is None else max(1, int(self.edge_chunk) // (width * width))
        if per is None or per >= n or self.training or torch.is_grad_enabled():
            node, bond_vec, vector, v = self._cloud_forward(r, unit, mask, v, log_weight)
        else:

            def part(x, i):
                return None if x is None else x[i : i + per]

            parts = [
                self._cloud_forward(r[i : i + per], unit[i : i + per], part(mask, i), v[i : i + per], part(log_weight, i))
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
            edge=self._sparse(v, layout),
            edge_vector=self._sparse(bond_vec * unit, layout),
        )
