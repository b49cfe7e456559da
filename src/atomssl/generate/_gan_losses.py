"""The losses of adversarial refinement: reconstruction (masked species, noise), the generator's
adversarial term and the critic's loss (non-saturating, or Wasserstein with gradient penalty)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ._discriminator import Discriminator
from ._reconstruct import Corruption

LOSS_KINDS = ("nonsaturating", "wgan-gp")


def reconstruction_losses(
    batch, corruption: Corruption, logits: torch.Tensor, pred: torch.Tensor, unit: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Cross-entropy on masked atoms and MSE of the (centred) noise in head units."""
    from ..task.denoise import center_per_graph

    m = corruption.mask
    target = batch.z[m] - 1
    ce = F.cross_entropy(logits[m], target) if target.numel() else logits.sum() * 0.0
    noise_target = center_per_graph(corruption.noise, batch) / unit[:, None]
    mse = ((pred - noise_target) ** 2).mean()
    return {"species": ce, "noise": mse}


def generator_adversarial_loss(
    disc: Discriminator, fake, kind: str = "nonsaturating"
) -> torch.Tensor:
    """The generator's adversarial term; differentiable in ``fake.z_soft`` and ``fake.pos``."""
    score = disc(fake)
    if kind == "nonsaturating":
        return F.softplus(-score).mean()
    if kind == "wgan-gp":
        return -score.mean()
    raise ConfigError(f"loss.kind must be one of {LOSS_KINDS}, got {kind!r}")


def discriminator_loss(
    disc: Discriminator,
    real,
    fake,
    kind: str = "nonsaturating",
    gp_weight: float = 10.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Critic loss on real vs (detached) fake batches built on the same atoms and edges."""
    fake = copy.copy(fake)
    fake.z_soft, fake.pos = fake.z_soft.detach(), fake.pos.detach()
    s_real, s_fake = disc(real), disc(fake)
    out = {"score_real": s_real.mean().detach(), "score_fake": s_fake.mean().detach()}
    if kind == "nonsaturating":
        out["loss"] = F.softplus(-s_real).mean() + F.softplus(s_fake).mean()
        out["accuracy"] = 0.5 * ((s_real > 0).float().mean() + (s_fake < 0).float().mean())
        return out
    if kind != "wgan-gp":
        raise ConfigError(f"loss.kind must be one of {LOSS_KINDS}, got {kind!r}")
    from ..task.denoise import graph_index, rand

    n_graphs = s_real.shape[0]
    a = rand((n_graphs,), generator, real.pos.device).to(real.pos.dtype)[graph_index(real)][:, None]
    mix = copy.copy(real)
    mix.z_soft = (a * real.z_soft + (1 - a) * fake.z_soft).requires_grad_(True)
    mix.pos = (a * real.pos + (1 - a) * fake.pos).requires_grad_(True)
    s_mix = disc(mix)
    gz, gp = torch.autograd.grad(s_mix.sum(), [mix.z_soft, mix.pos], create_graph=True)
    idx = graph_index(real)
    sq = gz.new_zeros(n_graphs).index_add_(0, idx, (gz**2).sum(-1) + (gp**2).sum(-1))
    penalty = ((sq.clamp_min(1e-12).sqrt() - 1.0) ** 2).mean()
    out["gp"] = penalty.detach()
    out["loss"] = s_fake.mean() - s_real.mean() + gp_weight * penalty
    out["wasserstein"] = (s_real.mean() - s_fake.mean()).detach()
    return out
