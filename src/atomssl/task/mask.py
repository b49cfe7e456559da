"""Masked-species pretext tasks: ``mask`` (predict hidden species) and ``mask_denoise`` (jointly
with coordinate denoising, one forward pass on the doubly corrupted structure).

Masking is decided per structure: with probability ``p_species`` every atom of one random species
present in it is masked, otherwise a random ``fraction`` (15%, at least one atom) of its atoms.
Masked atoms get species index 0, the mask token shared by all backbones. The loss is the
cross-entropy over the 118 elements on masked atoms only.

Baseline: the element frequencies seen in training so far (a buffer, saved with the task):
cross-entropy of predicting those frequencies, and top-1 accuracy of always predicting the most
frequent element.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..representation import N_SPECIES
from ..errors import ConfigError
from ._base import Task, register_task
from .denoise import SIGMA_MODES, NoiseHead, graph_index, mlp, noise_loss, num_graphs, perturb_positions, rand, shallow_copy

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

    The input is the atom's node features, concatenated (when the backbone provides edge
    features and ``use_edges``) with the mean features of its incoming edges, layer-normalised.
    Why: a masked atom enters every backbone with the same token, and in a residual network
    (MEGNet) what its neighbours add to its node features starts ~1e-4 of the token's own part,
    so a head on raw node features sits at the element-frequency prior for many epochs; the
    edges into the atom carry its neighbours' species and bond lengths at full scale.
    """

    def __init__(self, node_dim: int, hidden: int = 64, edge_dim: int = 0):
        super().__init__()
        self.edge_dim = int(edge_dim)
        n_in = node_dim + self.edge_dim
        self.norm = nn.LayerNorm(n_in)
        self.net = mlp(n_in, hidden, N_ELEMENTS)
        self.register_buffer("counts", torch.zeros(N_ELEMENTS, dtype=torch.float64))

    def features(self, out, batch) -> torch.Tensor:
        """Per-atom head input (n_atoms, node_dim [+ edge_dim])."""
        if not self.edge_dim:
            return out.node
        dst = batch.edge_index[1]
        edge = out.edge
        total = torch.zeros((out.node.shape[0], edge.shape[-1]), dtype=edge.dtype, device=edge.device).index_add_(0, dst, edge)
        count = torch.bincount(dst, minlength=out.node.shape[0]).clamp_min(1).to(edge.dtype)
        return torch.cat([out.node, total / count[:, None]], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))

    def observe(self, z: torch.Tensor) -> None:
        valid = z[(z >= 1) & (z <= N_ELEMENTS)] - 1
        self.counts += torch.bincount(valid, minlength=N_ELEMENTS).to(self.counts)

    def loss(self, features: torch.Tensor, z: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cross-entropy on the masked atoms; ``features`` from :meth:`features`."""
        target = z[mask] - 1
        logits = self(features[mask])
        loss = F.cross_entropy(logits, target) if target.numel() else logits.sum() * 0.0
        with torch.no_grad():
            freq = (self.counts + 1.0) / (self.counts.sum() + N_ELEMENTS)  # Laplace-smoothed
            log_freq = freq.log().to(logits.dtype)
            baseline = -log_freq[target].mean() if target.numel() else loss.detach() * 0.0
            acc = (logits.argmax(-1) == target).to(logits.dtype).mean() if target.numel() else baseline * 0.0
            base_acc = (target == int(torch.argmax(self.counts))).to(logits.dtype).mean() if target.numel() else acc * 0.0
        return {"loss": loss, "baseline": baseline, "accuracy": acc, "baseline_accuracy": base_acc}


@register_task("mask")
class MaskedSpecies(Task):
    """Predict the species of masked atoms (cross-entropy over elements)."""

    def __init__(
        self, backbone, p_species: float = 0.5, fraction: float = 0.15, hidden: int = 64, use_edges: bool = True
    ):
        super().__init__(backbone, p_species=p_species, fraction=fraction, hidden=hidden, use_edges=use_edges)
        _check_mask_options(p_species, fraction)
        self.p_species, self.fraction = float(p_species), float(fraction)
        self.head = SpeciesHead(backbone.node_dim, hidden, _edge_dim(backbone, use_edges))

    def step(self, batch, backbone, generator=None):
        if self.training:
            self.head.observe(batch.z)
        mask = choose_masked_atoms(batch, self.p_species, self.fraction, generator)
        out = backbone(mask_species(batch, mask))
        return self.head.loss(self.head.features(out, batch), batch.z, mask)


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
        sp = self.species.loss(self.species.features(out, batch), batch.z, mask)
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
