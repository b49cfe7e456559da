"""Variational autoencoder on normalised Gram upper triangles (encoder 36-28-18-8, tanh; mirrored decoder).

Loss per environment: squared reconstruction error summed over the (normalised) Gram entries plus
``beta`` times the KL divergence of ``q(z|G) = N(mu, sigma^2)`` from ``N(0, I)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..utils import atomic_torch_save
from ..utils._torchfile import safe_torch_load
from ._environments import GramNormalizer, augment_permutations, triangle_to_gram

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


# ------------------------------------------------------------------ training
def shell_groups(k: int) -> list[list[int]]:
    """Slots of the first shell (4 nearest) and the rest, for shell-wise permutation augmentation."""
    first = list(range(min(4, k)))
    return [first, list(range(len(first), k))] if k > 4 else [first]


def train_vae(
    train_grams: np.ndarray,
    val_grams: np.ndarray | None = None,
    model_config: VAEConfig | None = None,
    config: TrainConfig | None = None,
    progress=None,
) -> tuple[GramVAE, list[dict]]:
    """Fit a :class:`GramVAE` on Gram matrices (n, k, k) in A^2; returns the model (eval mode) and history.

    ``progress(epoch, record)`` is called after every epoch. Normalisation statistics are fitted on the
    training set. With ``permutation_copies > 0`` every epoch draws fresh random relabellings.
    """
    config = config or TrainConfig()
    k = train_grams.shape[-1]
    model_config = model_config or VAEConfig(k=k)
    if model_config.k != k:
        raise ValueError(f"model k={model_config.k} but Gram matrices are {k}x{k}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    iu = np.triu_indices(k)
    model = GramVAE(model_config)
    normalizer = GramNormalizer.fit(train_grams[:, iu[0], iu[1]], k)
    model.set_normalizer(normalizer)
    within = None if config.permutation_within == "all" else shell_groups(k)

    def feats(grams):
        return torch.as_tensor(normalizer.transform(grams[:, iu[0], iu[1]]), dtype=torch.float32)

    x_val = feats(val_grams) if val_grams is not None and len(val_grams) else None
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    history = []
    for epoch in range(config.epochs):
        lr = config.lr_final + 0.5 * (config.lr - config.lr_final) * (
            1 + math.cos(math.pi * epoch / config.epochs)
        )
        for g in opt.param_groups:
            g["lr"] = lr
        beta = config.beta * min(1.0, (epoch + 1) / max(1, config.beta_warmup))
        grams = (
            augment_permutations(train_grams, config.permutation_copies, rng, within)
            if config.permutation_copies
            else train_grams
        )
        x = feats(grams)
        order = torch.as_tensor(rng.permutation(len(x)))
        model.train()
        tot = rec_tot = kl_tot = 0.0
        for start in range(0, len(x), config.batch_size):
            xb = x[order[start : start + config.batch_size]]
            recon, mu, logvar = model(xb)
            loss, rec, kl = model.loss(xb, recon, mu, logvar, beta)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(xb)
            rec_tot += float(rec.detach()) * len(xb)
            kl_tot += float(kl.detach()) * len(xb)
        rec_n = {
            "epoch": epoch + 1,
            "lr": lr,
            "beta": beta,
            "loss": tot / len(x),
            "recon": rec_tot / len(x),
            "kl": kl_tot / len(x),
        }
        if x_val is not None:
            model.eval()
            with torch.no_grad():
                recon, mu, logvar = model(x_val)
                _, rec, kl = model.loss(x_val, recon, mu, logvar, beta)
            rec_n.update(val_recon=float(rec), val_kl=float(kl))
        history.append(rec_n)
        if progress is not None:
            progress(epoch + 1, rec_n)
    model.eval()
    return model, history


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
    path = Path(path)
    payload = safe_torch_load(path, map_location="cpu")  # one-line CheckpointError on a bad file
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
