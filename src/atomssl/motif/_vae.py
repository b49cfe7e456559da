"""Variational autoencoder on normalised Gram upper triangles (encoder 36-28-18-8, tanh; mirrored decoder).

Loss per environment: squared reconstruction error summed over the (normalised) Gram entries plus
``beta`` times the KL divergence of ``q(z|G) = N(mu, sigma^2)`` from ``N(0, I)``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..utils import atomic_torch_save
from ..utils._torchfile import safe_torch_load
from ._environments import GramNormalizer, triangle_to_gram

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "atomssl.motif.GramVAE"
CHECKPOINT_VERSION = 1


@dataclass
class VAEConfig:
    """Architecture: ``hidden`` widths between the Gram input and the latent (mirrored in the decoder)."""

    k: int = 8
    hidden: tuple[int, ...] = (28, 18)
    latent: int = 8

    @property
    def n_features(self) -> int:
        return self.k * (self.k + 1) // 2


@dataclass
class TrainConfig:
    """Training schedule of :func:`train_vae`: ``epochs`` of Adam on batches of ``batch_size``,
    the learning rate decaying (cosine) from ``lr`` to ``lr_final``, the KL weight ``beta`` warmed
    up over ``beta_warmup`` epochs, optional random neighbour relabellings, and the ``seed``."""

    epochs: int = 400
    batch_size: int = 256
    lr: float = 3e-3
    lr_final: float = 1e-4  # cosine decay to this
    beta: float = 1e-3
    beta_warmup: int = 50  # epochs of linear KL warm-up
    permutation_copies: int = 0  # random relabellings of every training environment
    permutation_within: str = "shell"  # "all" or "shell" (shuffle slots 0-3 and 4-7 separately)
    seed: int = 0


class GramVAE(nn.Module):
    """Variational autoencoder of normalised Gram upper triangles (``k (k + 1) / 2`` inputs, sizes
    from :class:`VAEConfig`). The normalisation statistics are a buffer saved with the weights;
    ``forward`` gives ``(reconstruction, mu, logvar)``, ``encode_grams`` / ``decode_grams`` work on
    Gram matrices in A^2."""

    norm: torch.Tensor  # buffer

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = config or VAEConfig()
        sizes = [self.config.n_features, *self.config.hidden]
        enc: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            enc += [nn.Linear(a, b), nn.Tanh()]
        self.encoder = nn.Sequential(*enc)
        self.mu = nn.Linear(sizes[-1], self.config.latent)
        self.logvar = nn.Linear(sizes[-1], self.config.latent)
        rev = [self.config.latent, *sizes[::-1][:-1]]
        dec: list[nn.Module] = []
        for a, b in zip(rev[:-1], rev[1:]):
            dec += [nn.Linear(a, b), nn.Tanh()]
        dec.append(nn.Linear(rev[-1], self.config.n_features))
        self.decoder = nn.Sequential(*dec)
        # normalisation statistics travel with the weights (buffers end up in the state_dict)
        self.register_buffer("norm", torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64))

    # -------------------------------------------------------------- normalisation
    @property
    def normalizer(self) -> GramNormalizer:
        m = self.norm.tolist()
        return GramNormalizer(self.config.k, *m)

    def set_normalizer(self, normalizer: GramNormalizer) -> None:
        self.norm.copy_(
            torch.tensor(
                [normalizer.mean_diag, normalizer.std_diag, normalizer.mean_off, normalizer.std_off]
            )
        )

    # -------------------------------------------------------------- model
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode(z), mu, logvar

    @staticmethod
    def loss(x, recon, mu, logvar, beta: float):
        rec = ((recon - x) ** 2).sum(-1).mean()
        kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(-1)).mean()
        return rec + beta * kl, rec, kl

    # -------------------------------------------------------------- physical units
    def decode_gram(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded Gram matrices in A^2, (..., k, k), differentiable in ``z``."""
        z = z.to(self.mu.weight.dtype)
        tri = self.normalizer.inverse(self.decode(z).to(torch.float64))
        k = self.config.k
        iu = torch.triu_indices(k, k)
        g = tri.new_zeros(tri.shape[:-1] + (k, k))
        g[..., iu[0], iu[1]] = tri
        g[..., iu[1], iu[0]] = tri
        return g

    @torch.no_grad()
    def encode_grams(self, grams: np.ndarray) -> np.ndarray:
        """Posterior means for Gram matrices (n, k, k) in A^2."""
        iu = np.triu_indices(self.config.k)
        x = self.normalizer.transform(np.asarray(grams)[:, iu[0], iu[1]])
        mu, _ = self.encode(torch.as_tensor(x, dtype=torch.float32))
        return mu.numpy().astype(np.float64)

    @torch.no_grad()
    def decode_grams(self, z: np.ndarray) -> np.ndarray:
        """Gram matrices (n, k, k) in A^2 decoded from latents (n, latent)."""
        out = (
            self.decode(torch.as_tensor(np.asarray(z), dtype=torch.float32))
            .numpy()
            .astype(np.float64)
        )
        return triangle_to_gram(self.normalizer.inverse(out), self.config.k)

    def reconstruct(self, grams: np.ndarray) -> np.ndarray:
        return self.decode_grams(self.encode_grams(grams))


# ------------------------------------------------------------------ training (see _vae_train)
def shell_groups(k: int) -> list[list[int]]:
    """Slots of the first shell (4 nearest) and the rest, for shell-wise permutation augmentation."""
    first = list(range(min(4, k)))
    return [first, list(range(len(first), k))] if k > 4 else [first]


# ------------------------------------------------------------------ checkpoints
def save_vae(model: GramVAE, path, extra: dict | None = None) -> Path:
    """Write ``{"kind", "version", "model_config", "state_dict", "extra"}`` atomically (loadable with
    ``torch.load(weights_only=True)``)."""
    cfg = asdict(model.config)
    cfg["hidden"] = list(cfg["hidden"])
    payload = {
        "kind": CHECKPOINT_KIND,
        "version": CHECKPOINT_VERSION,
        "model_config": cfg,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    atomic_torch_save(payload, path)
    return Path(path)


def load_vae(path) -> GramVAE:
    """The VAE of ``RUN/checkpoints/model.pt`` (:func:`save_vae`), or of a training checkpoint of
    the same run (``checkpoints/last.pt`` or ``best.pt``)."""
    path = Path(path)
    payload = safe_torch_load(path, map_location="cpu")  # one-line CheckpointError on a bad file
    payload = _from_engine_checkpoint(payload)
    if not isinstance(payload, dict) or payload.get("kind") != CHECKPOINT_KIND:
        if isinstance(payload, dict) and payload.get("format") == "atomssl-checkpoint":
            what = "an atomssl backbone checkpoint; give one made by 'atomssl motif train'"
        else:
            what = f"kind={payload.get('kind') if isinstance(payload, dict) else None!r}"
        raise CheckpointError(f"{path}: not a motif VAE checkpoint ({what})")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint version {payload.get('version')}")
    cfg = dict(payload["model_config"])
    cfg["hidden"] = tuple(cfg["hidden"])
    model = GramVAE(VAEConfig(**cfg))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the stored config ({exc})") from exc
    model.eval()
    return model


def _from_engine_checkpoint(payload):
    """A training checkpoint of ``atomssl motif train`` (``backbone_config.name: motif_vae``) as
    the payload :func:`save_vae` writes; anything else as it is."""
    bc = payload.get("backbone_config") if isinstance(payload, dict) else None
    if not isinstance(bc, dict) or payload.get("format") != "atomssl-checkpoint":
        return payload
    if bc.get("name") != "motif_vae":
        return payload
    return {
        "kind": CHECKPOINT_KIND,
        "version": CHECKPOINT_VERSION,
        "model_config": {k: v for k, v in bc.items() if k != "name"},
        "state_dict": payload.get("backbone") or {},
        "extra": {"config": payload.get("config") or {}},
    }
