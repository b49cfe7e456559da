"""Exactly equivariant graph attention transformer of the Equiformer family (Liao & Smidt 2023).

Node features are e3nn irreps ``m0 x 0e + m1 x 1o + m2 x 2e + ...`` (polar parities, so the
network is O(3)-equivariant, reflections included). Per layer (pre-norm transformer):

- ``x += Attention(LN(x))``: for each edge (centre i, neighbour j, r_ij = x_j - x_i), the message
  ``Lin(x_i) + Lin(x_j)`` is tensor-multiplied with the spherical harmonics of r_ij (depth-wise,
  weights from a radial MLP of |r_ij|); its scalar part gives per-head attention logits
  (``a . LeakyReLU(.)``); the rest goes through a gate and, with ``nonlinear_messages``, a second
  depth-wise tensor product to give the values. Softmax over each atom's edges, weighted by the
  smooth cutoff envelope so that outputs stay continuous as atoms cross the cutoff;
- ``x += FFN(LN(x))``: linear -> gate -> linear.

Messages (``conv=``): ``"so2"`` (default) computes them eSCN-style: the pair features are
rotated into a frame whose polar axis is the edge, where the tensor product with Y(r_ij) plus a
linear layer becomes one linear map per |m| (O(L^3) per edge instead of O(L^6); see
``_so2_layers.SO2Linear``), and rotated back. The frame's roll about the edge is a fixed
deterministic choice and provably drops out (the maps commute with rolls; tested), so unlike
EquiformerV2's random per-edge rolls the outputs are exactly equivariant. ``"dtp"`` keeps the
original depth-wise Clebsch-Gordan tensor products (checkpoints written before ``conv`` existed
load with it).
Before the layers, an edge-degree embedding (sum over neighbours of radial x harmonics) seeds the
l > 0 features. Outputs: invariant per-atom scalars, per-atom l=1 vectors in Cartesian (x, y, z),
and an MLP of the mean (or sum) of the per-atom scalars per structure.

Sizes (``size=``): ``"tiny"`` (tests), ``"small"`` (default, CPU), ``"large"`` (GPU: lmax 4,
128 scalar channels, 8 layers, 8 heads); any option may also be given explicitly. ``"small"``
uses linear messages (``nonlinear_messages=False``, Equiformer's cheaper variant: one tensor
product per edge and layer instead of two, ~1.4x faster training steps on CPU); the other sizes
use nonlinear messages.
"""

from __future__ import annotations

from typing import Any

import torch
from e3nn import o3
from torch import nn

from ..errors import ConfigError
from ..graph import edge_vectors
from ._base import N_SPECIES, Backbone, BackboneOutput, register_backbone
from ._e3nn_layers import (
    LayerNorm,
    Linear,
    RadialBasis,
    irreps_of,
    l1_to_xyz_index,
    polynomial_envelope,
)
from ._equiformer_blocks import EdgeDegreeEmbedding, TransformerBlock, hidden_muls
from ._so2_layers import WignerFromRotation, edge_frames, polar_axis

SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        channels=16,
        lmax=1,
        num_layers=2,
        num_heads=2,
        num_basis=16,
        radial_hidden=32,
        vector_dim=4,
        nonlinear_messages=True,
    ),
    "small": dict(
        channels=48,
        lmax=2,
        num_layers=3,
        num_heads=4,
        num_basis=32,
        radial_hidden=64,
        vector_dim=16,
        nonlinear_messages=False,
    ),
    "large": dict(
        channels=128,
        lmax=4,
        num_layers=8,
        num_heads=8,
        num_basis=128,
        radial_hidden=128,
        vector_dim=64,
        nonlinear_messages=True,
    ),
}


@register_backbone("equiformer")
class EquivariantTransformer(Backbone):
    """Equivariant graph attention transformer (see module docstring).

    Options (defaults from ``size``): ``channels`` (scalar channels; l-th block has
    channels / 2^l), ``lmax``, ``num_layers``, ``num_heads``, ``att_dim`` (per-head width of the
    attention MLP), ``num_basis``, ``radial`` (``"gaussian"``/``"bessel"``), ``radial_hidden``,
    ``cutoff`` (A), ``avg_neighbors`` (normaliser of the edge-degree embedding),
    ``nonlinear_messages``, ``node_dim``, ``vector_dim``, ``embedding_dim``, ``pool``
    (``"mean"``/``"sum"``).
    """

    provides_vectors = True
    xyz_index: torch.Tensor  # buffer

    def __init__(
        self,
        size: str = "small",
        channels: int | None = None,
        lmax: int | None = None,
        num_layers: int | None = None,
        num_heads: int | None = None,
        att_dim: int = 16,
        num_basis: int | None = None,
        radial: str = "gaussian",
        radial_hidden: int | None = None,
        cutoff: float = 5.0,
        avg_neighbors: float = 40.0,
        nonlinear_messages: bool | None = None,
        node_dim: int | None = None,
        vector_dim: int | None = None,
        embedding_dim: int | None = None,
        pool: str = "mean",
        conv: str = "so2",
    ):
        if size not in SIZES:
            raise ConfigError(f"equiformer: unknown size {size!r}; choose one of {sorted(SIZES)}")
        preset = SIZES[size]
        given: dict[str, int | None] = dict(
            channels=channels,
            lmax=lmax,
            num_layers=num_layers,
            num_heads=num_heads,
            num_basis=num_basis,
            radial_hidden=radial_hidden,
            vector_dim=vector_dim,
            nonlinear_messages=nonlinear_messages,
        )
        # nonlinear_messages (bool) is an int to the type checker; it is read with bool() below
        opts: dict[str, int] = {k: preset[k] if v is None else v for k, v in given.items()}
        node_dim = opts["channels"] if node_dim is None else node_dim
        embedding_dim = opts["channels"] if embedding_dim is None else embedding_dim
        if pool not in ("mean", "sum"):
            raise ConfigError(f"equiformer: pool must be 'mean' or 'sum', got {pool!r}")
        if conv not in ("so2", "dtp"):
            raise ConfigError(f"equiformer: conv must be 'so2' or 'dtp', got {conv!r}")
        if radial not in ("gaussian", "bessel"):
            raise ConfigError(f"equiformer: radial must be 'gaussian' or 'bessel', got {radial!r}")
        if opts["lmax"] < 1 or opts["num_layers"] < 1 or opts["num_heads"] < 1 or cutoff <= 0:
            raise ConfigError(
                "equiformer: lmax, num_layers and num_heads must be >= 1 and cutoff > 0"
            )
        super().__init__(
            size=size,
            **opts,
            att_dim=att_dim,
            radial=radial,
            cutoff=cutoff,
            avg_neighbors=avg_neighbors,
            node_dim=node_dim,
            embedding_dim=embedding_dim,
            pool=pool,
            conv=conv,
        )
        C, L, H = opts["channels"], opts["lmax"], opts["num_heads"]
        self.cutoff, self.pool, self.lmax = float(cutoff), pool, L
        self.node_dim, self.vector_dim, self.embedding_dim = (
            node_dim,
            opts["vector_dim"],
            embedding_dim,
        )
        self.muls = hidden_muls(C, L, H)
        self.irreps = irreps_of(self.muls)  # e3nn description of the hidden features
        self.irreps_sh = o3.Irreps.spherical_harmonics(L)

        self.embed = nn.Embedding(N_SPECIES, self.muls[0])
        self.rbf = RadialBasis(cutoff, opts["num_basis"], radial)
        nb, rh = opts["num_basis"], opts["radial_hidden"]
        self.edge_degree = EdgeDegreeEmbedding(self.muls, L, nb, rh, avg_neighbors)
        nonlinear = bool(opts["nonlinear_messages"])
        self.blocks = nn.ModuleList(
            TransformerBlock(self.muls, L, H, nb, rh, att_dim, nonlinear, conv)
            for _ in range(opts["num_layers"])
        )
        self.out_norm = LayerNorm(self.muls)
        self.out_lin = Linear(self.muls, [node_dim, self.vector_dim])
        self.readout = nn.Sequential(
            nn.Linear(node_dim, embedding_dim), nn.SiLU(), nn.Linear(embedding_dim, embedding_dim)
        )
        self.register_buffer("xyz_index", l1_to_xyz_index(), persistent=False)
        self.conv = conv
        if conv == "so2":
            self.wigner = WignerFromRotation(L)
            self._axis = polar_axis()  # float64, cast per call (see DepthwiseTP on float32 buffers)

    @property
    def graph_spec(self) -> dict[str, float]:
        return {"cutoff": self.cutoff}

    def forward(self, batch) -> BackboneOutput:
        pos = batch.pos
        n = pos.shape[0]
        dtype = self.embed.weight.dtype
        center, neighbor = batch.edge_index  # messages flow neighbour (dst) -> centre (src)
        vec = edge_vectors(batch, pos).to(dtype)  # r_ij = x_j + shift - x_i
        dist = vec.norm(dim=-1)
        # spherical harmonics of the direction; the clamp only guards coincident atoms
        sh = o3.spherical_harmonics(
            self.irreps_sh,
            vec / dist.clamp(min=1e-9).unsqueeze(-1),
            normalize=False,
            normalization="component",
        )
        rbf = self.rbf(dist)
        env = polynomial_envelope(dist, self.cutoff)

        z_soft = getattr(batch, "z_soft", None)
        scalars = (
            z_soft.to(dtype) @ self.embed.weight if z_soft is not None else self.embed(batch.z)
        )
        cache: dict = {}
        xs = self.edge_degree(scalars, sh, rbf, env, center, neighbor, cache)
        xs[0] = xs[0] + scalars.unsqueeze(1)
        if self.conv == "so2":
            unit = vec / dist.clamp(min=1e-9).unsqueeze(-1)
            geom = self.wigner(edge_frames(unit, self._axis.to(device=unit.device)))
        else:
            geom = sh
        for block in self.blocks:
            xs = block(xs, geom, rbf, env, center, neighbor, cache)

        out = self.out_lin(self.out_norm(xs))
        node = out[0][:, 0, :]
        vector = out[1].transpose(1, 2)[..., self.xyz_index]

        batch_index = getattr(batch, "batch", None)
        if batch_index is None:
            batch_index = torch.zeros(n, dtype=torch.long, device=pos.device)
        n_graphs = int(batch.num_graphs) if hasattr(batch, "num_graphs") else 1
        return BackboneOutput(
            node=node, graph=self.graph_from_nodes(node, batch_index, n_graphs), vector=vector
        )

    @property
    def receptive_hops(self) -> int:
        """Bond hops that can reach an atom's outputs (edge-degree embedding + one per layer):
        atoms further away never change them, so a large structure may be embedded chunk by
        chunk, each with this many hops of neighbours around it (exact)."""
        return len(self.blocks) + 1

    def graph_from_nodes(
        self, node: torch.Tensor, batch_index: torch.Tensor, n_graphs: int
    ) -> torch.Tensor:
        """The structure embeddings from the per-atom ``node`` outputs (pool, then readout MLP)."""
        pooled = node.new_zeros(n_graphs, self.node_dim).index_add_(0, batch_index, node)
        if self.pool == "mean":
            counts = torch.bincount(batch_index, minlength=n_graphs).clamp(min=1).to(node.dtype)
            pooled = pooled / counts.unsqueeze(-1)
        return self.readout(pooled)
