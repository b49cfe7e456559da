"""Denoising pretext tasks for crystals: coordinate denoising and CDSSL edge denoising.

Both corrupt ``batch.pos`` with Cartesian Gaussian noise (on a copy of the batch). The noisy graph
keeps the clean graph's edges and periodic images (``edge_index``/``shift``), so edge vectors
are recomputed from the noisy positions and targets line up edge by edge. Positions are not
re-wrapped: wrapping would change the image of an edge without changing the crystal.

- ``denoise`` predicts the noise of every atom from per-atom *vector* outputs, as an invariant
  gated sum of the backbone's vector channels: equivariant by construction (the reference code
  regresses fractional noise, which is not). Loss: MSE on noise / sigma; baseline: predict zero.
- ``edge_denoise`` (CDSSL) predicts the Gaussian expansion of the *clean* bond lengths from the
  per-edge features of the noisy structure. Loss: mean over edges of ``||E_hat - E||^2``;
  baselines: the expansion of the noisy lengths (copy the input) and the batch-mean expansion.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import ConfigError
from ..graph import edge_vectors
from ._base import Task, register_task

SIGMA_MODES = ("relative", "absolute")
_FALLBACK_DMIN = (
    1.0  # Angstrom; only for a structure with no edge at all (nothing to denoise there)
)


# ---------------------------------------------------------------------------------------- helpers
def graph_index(batch) -> torch.Tensor:
    """``batch.batch`` (atom -> structure), or zeros for a single unbatched graph."""
    b = getattr(batch, "batch", None)
    if b is None:
        return torch.zeros(batch.pos.shape[0], dtype=torch.long, device=batch.pos.device)
    return b


def num_graphs(batch) -> int:
    n = getattr(batch, "num_graphs", None)
    return int(n) if n is not None else 1


def min_distances(batch) -> torch.Tensor:
    """Minimum interatomic distance of each structure in the batch, from its (clean) edges.

    The neighbour list always contains every pair closer than its cutoff (and the nearest
    neighbours for kNN graphs), so the shortest edge is the shortest periodic distance.
    """
    n_graphs = num_graphs(batch)
    d = edge_vectors(batch).detach().norm(dim=-1)
    out = torch.full((n_graphs,), float("inf"), dtype=d.dtype, device=d.device)
    if d.numel():
        owner = graph_index(batch)[batch.edge_index[0]]
        out = out.scatter_reduce(0, owner, d, reduce="amin")
    return torch.where(torch.isfinite(out), out, torch.full_like(out, _FALLBACK_DMIN))


def shallow_copy(batch):
    """A copy of the batch whose fields can be replaced without touching the original."""
    return copy.copy(batch)


def randn(shape, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    """Gaussian noise drawn from ``generator`` (on its own device) and moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def rand(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def perturb_positions(
    batch, sigma: float, sigma_mode: str = "relative", generator: torch.Generator | None = None
):
    """Add Gaussian noise to ``batch.pos`` on a copy of the batch.

    ``sigma_mode="relative"``: the standard deviation of each structure is ``sigma`` times its
    minimum interatomic distance (the convention of the reference work, ratio 0.1);
    ``"absolute"``: ``sigma`` in Angstrom. Returns ``(noisy_batch, noise (n, 3), sigma_per_atom (n,))``.
    """
    if sigma_mode not in SIGMA_MODES:
        raise ConfigError(f"sigma_mode must be one of {SIGMA_MODES}, got {sigma_mode!r}")
    pos = batch.pos
    gidx = graph_index(batch)
    if sigma_mode == "relative":
        per_graph = sigma * min_distances(batch).to(pos.dtype)
    else:
        per_graph = torch.full(
            (num_graphs(batch),), float(sigma), dtype=pos.dtype, device=pos.device
        )
    sig = per_graph[gidx]
    noise = randn(pos.shape, generator, pos.device, pos.dtype) * sig[:, None]
    noisy = shallow_copy(batch)
    noisy.pos = pos + noise
    return noisy, noise, sig


def center_per_graph(x: torch.Tensor, batch) -> torch.Tensor:
    """Subtract each structure's mean (a rigid translation, which no translation-invariant model sees)."""
    gidx = graph_index(batch)
    n = num_graphs(batch)
    total = torch.zeros((n, x.shape[-1]), dtype=x.dtype, device=x.device).index_add_(0, gidx, x)
    count = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(
        0, gidx, torch.ones_like(x[:, 0])
    )
    return x - (total / count.clamp_min(1)[:, None])[gidx]


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.SiLU(),
        nn.Linear(hidden, hidden),
        nn.SiLU(),
        nn.Linear(hidden, n_out),
    )


class NoiseHead(nn.Module):
    """Per-atom 3-vector from the backbone's vector channels: ``sum_c w_c(node) v_c``.

    The weights are invariant (a function of invariant node features plus a learned constant
    mix), the channels rotate with the structure, so the prediction is equivariant.
    """

    def __init__(self, node_dim: int, vector_dim: int, hidden: int = 64):
        super().__init__()
        self.mix = nn.Parameter(torch.full((vector_dim,), 1.0 / max(vector_dim, 1)))
        self.gate = mlp(node_dim, hidden, vector_dim)
        last = self.gate[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, node: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
        w = self.mix + self.gate(node)  # (n, C)
        return torch.einsum("nc,ncx->nx", w, vector)


def noise_loss(
    head: NoiseHead, out, noise: torch.Tensor, sig: torch.Tensor, batch
) -> dict[str, torch.Tensor]:
    """MSE between predicted and true (centred) noise, in units of sigma; baseline: predict zero."""
    if out.vector is None:
        raise RuntimeError("backbone returned no vector output; coordinate denoising needs one")
    target = center_per_graph(noise, batch) / sig[:, None]
    # a rigid translation of the noise is unobservable: compare centred prediction and target
    pred = center_per_graph(head(out.node, out.vector), batch)
    loss = ((pred - target) ** 2).mean()
    with torch.no_grad():
        baseline = (target**2).mean()
        rmse = (((pred - target) * sig[:, None]) ** 2).sum(-1).mean().sqrt()
        rmse0 = ((target * sig[:, None]) ** 2).sum(-1).mean().sqrt()
    return {"loss": loss, "baseline": baseline, "rmse_A": rmse, "baseline_rmse_A": rmse0}


# ------------------------------------------------------------------------------------------ tasks
@register_task("denoise")
class CoordinateDenoising(Task):
    """Predict the Cartesian noise added to every atom (equivariant vector head)."""

    requires = frozenset({"vector"})

    def __init__(
        self, backbone, sigma: float = 0.1, sigma_mode: str = "relative", hidden: int = 64
    ):
        super().__init__(backbone, sigma=sigma, sigma_mode=sigma_mode, hidden=hidden)
        if sigma_mode not in SIGMA_MODES:
            raise ConfigError(f"sigma_mode must be one of {SIGMA_MODES}, got {sigma_mode!r}")
        if not sigma > 0:
            raise ConfigError(f"sigma must be > 0, got {sigma}")
        self.sigma, self.sigma_mode = float(sigma), sigma_mode
        self.head = NoiseHead(backbone.node_dim, backbone.vector_dim, hidden)

    def step(self, batch, backbone, generator=None):
        noisy, noise, sig = perturb_positions(batch, self.sigma, self.sigma_mode, generator)
        return noise_loss(self.head, backbone(noisy), noise, sig, batch)


class GaussianExpansion(nn.Module):
    """``exp(-(d - mu_k)^2 / width^2)`` on ``n`` centres evenly spaced over ``[0, r_max]`` (MEGNet's edge basis)."""

    centers: torch.Tensor  # buffer

    def __init__(self, n: int = 100, r_max: float = 6.0, width: float = 0.5):
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, float(r_max), int(n)), persistent=False)
        self.width = float(width)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return torch.exp(-((d[:, None] - self.centers.to(d.dtype)) ** 2) / self.width**2)


def _default_rmax(backbone) -> float:
    try:
        spec = backbone.graph_spec
    except (NotImplementedError, AttributeError):
        spec = {}
    return float(spec["cutoff"]) + 1.0 if "cutoff" in spec else 6.0


@register_task("edge_denoise")
class EdgeDenoising(Task):
    """CDSSL: from the noisy structure, predict the clean edges' Gaussian-expanded lengths."""

    requires = frozenset({"edge"})

    def __init__(
        self,
        backbone,
        sigma: float = 0.1,
        sigma_mode: str = "relative",
        n_gaussians: int = 100,
        r_max: float | None = None,
        width: float = 0.5,
        hidden: int = 64,
    ):
        r_max = _default_rmax(backbone) if r_max is None else float(r_max)
        super().__init__(
            backbone,
            sigma=sigma,
            sigma_mode=sigma_mode,
            n_gaussians=n_gaussians,
            r_max=r_max,
            width=width,
            hidden=hidden,
        )
        if sigma_mode not in SIGMA_MODES:
            raise ConfigError(f"sigma_mode must be one of {SIGMA_MODES}, got {sigma_mode!r}")
        self.sigma, self.sigma_mode = float(sigma), sigma_mode
        self.expand = GaussianExpansion(n_gaussians, r_max, width)
        self.head = mlp(backbone.edge_dim, hidden, n_gaussians)

    def step(self, batch, backbone, generator=None):
        noisy, _, _ = perturb_positions(batch, self.sigma, self.sigma_mode, generator)
        out = backbone(noisy)
        if out.edge is None or out.edge.shape[0] != batch.edge_index.shape[1]:
            raise RuntimeError("edge denoising needs one backbone edge feature per input edge")
        with torch.no_grad():
            target = self.expand(edge_vectors(batch).norm(dim=-1))
            copied = self.expand(edge_vectors(noisy).norm(dim=-1))
        pred = self.head(out.edge)
        loss = ((pred - target) ** 2).sum(-1).mean()
        with torch.no_grad():
            base_copy = ((copied - target) ** 2).sum(-1).mean()
            base_mean = ((target.mean(0, keepdim=True) - target) ** 2).sum(-1).mean()
        # the yardstick is the better of the two trivial predictors
        return {
            "loss": loss,
            "baseline": torch.minimum(base_copy, base_mean),
            "baseline_copy": base_copy,
            "baseline_mean": base_mean,
        }
