"""Masked-species pretext tasks: ``mask`` (predict hidden species) and ``mask_denoise`` (jointly
with coordinate denoising, one forward pass on the doubly corrupted structure).

Masking is decided per structure: with probability ``p_species`` every atom of one random species
present in it is masked, otherwise a random ``fraction`` (15%, at least one atom) of its atoms.
Masked atoms get species index 0, the mask token shared by all backbones. The loss is the
cross-entropy over the 118 elements on masked atoms only. The head (:class:`SpeciesHead`)
predicts a correction to the log element frequencies from the masked atom's node features, its
structure's mean node features and (``use_edges``, when the backbone has edge features) a
message pooled over its incoming edges.

Baseline: the element frequencies seen in training so far (a buffer, saved with the task):
cross-entropy of predicting those frequencies, and top-1 accuracy of always predicting the most
frequent element.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..representation import N_SPECIES
from ._base import Task, register_task
from .denoise import (
    SIGMA_MODES,
    NoiseHead,
    graph_index,
    mlp,
    noise_loss,
    num_graphs,
    perturb_positions,
    rand,
    shallow_copy,
)

N_ELEMENTS = N_SPECIES - 1  # classes are elements 1..118 (index = Z - 1)


def choose_masked_atoms(
    batch, p_species: float = 0.5, fraction: float = 0.15, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Boolean (n_atoms,) mask, decided independently for each structure of the batch."""
    z = batch.z.detach().cpu()
    gidx = graph_index(batch).detach().cpu()
    n_graphs = num_graphs(batch)
    mask = torch.zeros(z.shape[0], dtype=torch.bool)
    coin = rand((n_graphs,), generator, "cpu")
    order = torch.argsort(gidx, stable=True)
    counts = torch.bincount(gidx, minlength=n_graphs).tolist()
    start = 0
    for g in range(n_graphs):
        atoms = order[start : start + counts[g]]
        start += counts[g]
        if len(atoms) == 0:
            continue
        if coin[g] < p_species:
            species = torch.unique(z[atoms])
            pick = species[int(rand((1,), generator, "cpu")[0] * len(species)) % len(species)]
            mask[atoms[z[atoms] == pick]] = True
        else:
            k = max(1, int(round(fraction * len(atoms))))
            scores = rand((len(atoms),), generator, "cpu")
            mask[atoms[torch.argsort(scores)[:k]]] = True
    return mask.to(batch.z.device)


def mask_species(batch, mask: torch.Tensor):
    """A copy of ``batch`` whose masked atoms carry the mask token (species 0)."""
    masked = shallow_copy(batch)
    masked.z = torch.where(mask, torch.zeros_like(batch.z), batch.z)
    soft = getattr(batch, "z_soft", None)
    if soft is not None:
        token = torch.zeros_like(soft)
        token[:, 0] = 1.0
        masked.z_soft = torch.where(mask[:, None], token, soft)
    return masked


class SpeciesHead(nn.Module):
    """Invariant features -> logits over the 118 elements; tracks element frequencies.

    Input: the atom's (layer-normalised) node features, the mean node features of its structure
    (what the rest of the structure holds: its composition, seen through the backbone) and, when the backbone provides edge
    features and ``use_edges``, a learned message pooled (mean) over the atom's incoming edges
    from ``[neighbour node features, edge features]`` -- one graph-convolution layer in the head.
    Why: a masked atom enters the backbone with the same token everywhere, and in a residual
    network such as MEGNet what its neighbours add to its own node features starts ~1e-4 of the
    token's part; with a head on node features alone the loss sat at the element-frequency
    prior for epochs. The neighbours' node features carry their species at full scale and the
    edge features the bond lengths, so the head sees the environment from the first step while
    the gradient still flows into the backbone through both.
    """

    counts: torch.Tensor  # buffer

    def __init__(self, node_dim: int, hidden: int = 64, edge_dim: int = 0):
        super().__init__()
        self.edge_dim = int(edge_dim)
        self.norm = nn.LayerNorm(node_dim)
        if self.edge_dim:
            self.message = nn.Sequential(
                nn.LayerNorm(node_dim + self.edge_dim),
                nn.Linear(node_dim + self.edge_dim, hidden),
                nn.SiLU(),
                nn.Linear(hidden, hidden),
            )
        self.context = nn.LayerNorm(node_dim)
        self.net = mlp(2 * node_dim + (hidden if self.edge_dim else 0), hidden, N_ELEMENTS)
        # the net predicts a correction to the log element frequencies (the baseline): it starts
        # near the baseline instead of spending its first epochs learning the prior
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.bias)
        self.register_buffer("counts", torch.zeros(N_ELEMENTS, dtype=torch.float64))

    def log_prior(self) -> torch.Tensor:
        """Log of the Laplace-smoothed element frequencies seen in training (118,)."""
        return ((self.counts + 1.0) / (self.counts.sum() + N_ELEMENTS)).log()

    def forward(self, out, batch, mask: torch.Tensor) -> torch.Tensor:
        """Logits (n_masked, 118) of the atoms selected by the boolean ``mask``."""
        gidx = graph_index(batch)
        n_graphs = num_graphs(batch)
        node = out.node
        mean = torch.zeros(
            (n_graphs, node.shape[-1]), dtype=node.dtype, device=node.device
        ).index_add_(0, gidx, node)
        mean = mean / torch.bincount(gidx, minlength=n_graphs).clamp_min(1).to(node.dtype)[:, None]
        x = torch.cat([self.norm(node[mask]), self.context(mean[gidx[mask]])], dim=-1)
        prior = self.log_prior().to(x.dtype)
        if not self.edge_dim:
            return prior + self.net(x)
        src, dst = batch.edge_index
        keep = mask[dst]
        row = torch.full_like(mask, -1, dtype=torch.long)
        row[mask] = torch.arange(int(mask.sum()), device=mask.device)
        row = row[dst[keep]]
        msg = self.message(torch.cat([out.node[src[keep]], out.edge[keep]], dim=-1))
        pooled = torch.zeros(
            (x.shape[0], msg.shape[-1]), dtype=msg.dtype, device=msg.device
        ).index_add_(0, row, msg)
        count = torch.bincount(row, minlength=x.shape[0]).clamp_min(1).to(msg.dtype)
        return prior + self.net(torch.cat([x, pooled / count[:, None]], dim=-1))

    def observe(self, z: torch.Tensor) -> None:
        valid = z[(z >= 1) & (z <= N_ELEMENTS)] - 1
        self.counts += torch.bincount(valid, minlength=N_ELEMENTS).to(self.counts)

    def loss(self, out, batch, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cross-entropy on the masked atoms (targets: the clean species ``batch.z``)."""
        z = batch.z
        target = z[mask] - 1
        logits = self(out, batch, mask)
        loss = F.cross_entropy(logits, target) if target.numel() else logits.sum() * 0.0
        with torch.no_grad():
            log_freq = self.log_prior().to(logits.dtype)
            baseline = -log_freq[target].mean() if target.numel() else loss.detach() * 0.0
            acc = (
                (logits.argmax(-1) == target).to(logits.dtype).mean()
                if target.numel()
                else baseline * 0.0
            )
            base_acc = (
                (target == int(torch.argmax(self.counts))).to(logits.dtype).mean()
                if target.numel()
                else acc * 0.0
            )
        return {"loss": loss, "baseline": baseline, "accuracy": acc, "baseline_accuracy": base_acc}


@register_task("mask")
class MaskedSpecies(Task):
    """Predict the species of masked atoms (cross-entropy over elements)."""

    def __init__(
        self,
        backbone,
        p_species: float = 0.5,
        fraction: float = 0.15,
        hidden: int = 64,
        use_edges: bool = True,
    ):
        super().__init__(
            backbone, p_species=p_species, fraction=fraction, hidden=hidden, use_edges=use_edges
        )
        _check_mask_options(p_species, fraction)
        self.p_species, self.fraction = float(p_species), float(fraction)
        self.head = SpeciesHead(backbone.node_dim, hidden, _edge_dim(backbone, use_edges))

    def step(self, batch, backbone, generator=None):
        if self.training:
            self.head.observe(batch.z)
        mask = choose_masked_atoms(batch, self.p_species, self.fraction, generator)
        out = backbone(mask_species(batch, mask))
        return self.head.loss(out, batch, mask)


@register_task("mask_denoise")
class MaskDenoise(Task):
    """Masked species + coordinate denoising on the same corrupted input, with weights.

    ``loss = species_weight * CE + noise_weight * MSE``; the baseline combines both baselines
    with the same weights, and each part is reported (``species_*``, ``noise_*``).
    """

    requires = frozenset({"vector"})

    def __init__(
        self,
        backbone,
        p_species: float = 0.5,
        fraction: float = 0.15,
        sigma: float = 0.1,
        sigma_mode: str = "relative",
        species_weight: float = 1.0,
        noise_weight: float = 1.0,
        hidden: int = 64,
        use_edges: bool = True,
    ):
        super().__init__(
            backbone,
            p_species=p_species,
            fraction=fraction,
            sigma=sigma,
            sigma_mode=sigma_mode,
            species_weight=species_weight,
            noise_weight=noise_weight,
            hidden=hidden,
            use_edges=use_edges,
        )
        _check_mask_options(p_species, fraction)
        if sigma_mode not in SIGMA_MODES:
            raise ConfigError(f"sigma_mode must be one of {SIGMA_MODES}, got {sigma_mode!r}")
        self.p_species, self.fraction = float(p_species), float(fraction)
        self.sigma, self.sigma_mode = float(sigma), sigma_mode
        self.species_weight, self.noise_weight = float(species_weight), float(noise_weight)
        self.species = SpeciesHead(backbone.node_dim, hidden, _edge_dim(backbone, use_edges))
        self.noise = NoiseHead(backbone.node_dim, backbone.vector_dim, hidden)

    def step(self, batch, backbone, generator=None):
        if self.training:
            self.species.observe(batch.z)
        mask = choose_masked_atoms(batch, self.p_species, self.fraction, generator)
        noisy, noise, sig = perturb_positions(batch, self.sigma, self.sigma_mode, generator)
        out = backbone(mask_species(noisy, mask))
        sp = self.species.loss(out, batch, mask)
        nz = noise_loss(self.noise, out, noise, sig, batch)
        res = {
            "loss": self.species_weight * sp["loss"] + self.noise_weight * nz["loss"],
            "baseline": self.species_weight * sp["baseline"] + self.noise_weight * nz["baseline"],
        }
        res.update({f"species_{k}": v.detach() for k, v in sp.items()})
        res.update({f"noise_{k}": v.detach() for k, v in nz.items()})
        return res


def _check_mask_options(p_species: float, fraction: float) -> None:
    if not 0.0 <= p_species <= 1.0:
        raise ConfigError(f"p_species must be in [0, 1], got {p_species}")
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")


def _edge_dim(backbone, use_edges: bool) -> int:
    """Width of the edge features the species head pools (0: node features only)."""
    return int(backbone.edge_dim) if use_edges and getattr(backbone, "provides_edges", False) else 0
