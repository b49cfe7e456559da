"""Per-particle neighbour-cloud pretext tasks of the geometric-algebra SSL work (seed 001).

Each atom's cloud is its ``k`` nearest-neighbour bonds in a kNN graph (``to_graph(s, k=k)``,
edges grouped by centre and sorted by distance, so they reshape to ``(n_atoms, k)``).
Corruptions act on bonds, not atoms, so they are handed to the backbone as fields of a shallow
copy of the batch (the caller's batch is left untouched):

- ``edge_delta`` (E, 3): displacement added to each bond vector (noisy bonds, cloud noise,
  whole-cloud shifts);
- ``edge_mask`` (E,) bool: bonds hidden from the cloud (nearest-bond task).

Backbones that honour these fields set ``accepts_edge_delta = True`` (the ``gaa`` backbone).

Lengths: with ``unit="min_distance"`` (default) noise sigmas and regression targets are in
units of each structure's shortest neighbour distance (as for the idealised crystals and
simulation frames of the reference); ``unit="angstrom"`` uses Angstrom.

Every ``step`` returns ``loss`` and ``baseline`` (the same loss for a trivial predictor) plus
metrics; all but ``loss`` are detached.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..graph import edge_vectors
from ._base import Task, register_task

_UNITS = ("min_distance", "angstrom")


def _randn(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    return torch.randn(shape, dtype=like.dtype, device=generator.device, generator=generator).to(
        like.device
    )


def _rand(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.rand(shape, dtype=like.dtype, device=like.device)
    return torch.rand(shape, dtype=like.dtype, device=generator.device, generator=generator).to(
        like.device
    )


def _head(n_in: int, n_out: int, hidden: int = 64) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, n_out))


def kabsch_register(moving: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Rotate each cloud ``moving`` (..., k, 3) about the origin onto ``target`` (least squares).

    Proper rotations only (the SVD's reflection is undone by flipping the smallest singular
    direction), so the registered cloud is never a mirror image.
    """
    h = moving.transpose(-1, -2) @ target  # (..., 3, 3)
    u, _, vt = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(vt.transpose(-1, -2) @ u.transpose(-1, -2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    diag = torch.ones(*d.shape, 3, dtype=moving.dtype, device=moving.device)
    diag[..., 2] = d
    rot = vt.transpose(-1, -2) @ (
        diag[..., None] * u.transpose(-1, -2)
    )  # R with target ~ moving @ R^T
    return moving @ rot.transpose(-1, -2)


class CloudTask(Task):
    """Shared plumbing: cloud shapes, length units, corrupted batch copies."""

    #: whether the task feeds ``edge_delta`` / ``edge_mask`` to the backbone
    corrupts_bonds: bool = True

    def __init__(self, backbone, unit: str = "min_distance", **config: Any):
        super().__init__(backbone, unit=unit, **config)
        if unit not in _UNITS:
            raise ConfigError(f"task {self.name!r}: unit must be one of {_UNITS}, got {unit!r}")
        spec = getattr(backbone, "graph_spec", {})
        if "k" not in spec:
            raise ConfigError(
                f"task {self.name!r} needs a backbone on kNN neighbour clouds (graph_spec {{'k': ...}})"
            )
        if self.corrupts_bonds and not getattr(backbone, "accepts_edge_delta", False):
            raise ConfigError(
                f"task {self.name!r} corrupts bonds through batch.edge_delta/edge_mask, which backbone "
                f"{backbone.name!r} does not read"
            )
        self.k = int(spec["k"])
        self.unit = unit

    def clean_clouds(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean bond vectors (n, k, 3) and each atom's length unit (n,), both without grad."""
        n = batch.pos.shape[0]
        with torch.no_grad():
            vec = edge_vectors(batch)
            if vec.shape[0] != n * self.k:
                raise ConfigError(
                    f"task {self.name!r}: expected a kNN graph with k={self.k} edges per atom, got "
                    f"{vec.shape[0]} edges for {n} atoms"
                )
            vec = vec.reshape(n, self.k, 3)
            if self.unit == "angstrom":
                return vec, torch.ones(n, dtype=vec.dtype, device=vec.device)
            graph_of = getattr(batch, "batch", None)
            if graph_of is None:
                graph_of = torch.zeros(n, dtype=torch.long, device=vec.device)
            nearest = vec.norm(dim=-1).min(dim=1).values
            dmin = torch.full(
                (int(graph_of.max()) + 1,), math.inf, dtype=vec.dtype, device=vec.device
            )
            dmin = dmin.scatter_reduce(0, graph_of, nearest, reduce="amin")
            return vec, dmin[graph_of]

    @staticmethod
    def corrupted(batch, **fields):
        """A shallow copy of ``batch`` with extra fields (the original is not modified)."""
        out = copy.copy(batch)
        for key, value in fields.items():
            setattr(out, key, value)
        return out


@register_task("noisy_bond")
class NoisyBondTask(CloudTask):
    """Noise (sigma) on a random fraction of the bonds; classify every bond as noisy or clean."""

    requires = frozenset({"edge"})

    def __init__(self, backbone, sigma: float = 0.5, fraction: float = 0.5, **config: Any):
        super().__init__(backbone, sigma=sigma, fraction=fraction, **config)
        self.sigma, self.fraction = float(sigma), float(fraction)
        self.head = _head(backbone.edge_dim, 2)

    def step(self, batch, backbone, generator=None):
        vec, unit = self.clean_clouds(batch)
        n, k = vec.shape[:2]
        noisy = _rand((n, k), vec, generator) < self.fraction
        delta = (
            _randn((n, k, 3), vec, generator)
            * (self.sigma * unit)[:, None, None]
            * noisy[..., None]
        )
        out = backbone(self.corrupted(batch, edge_delta=delta.reshape(n * k, 3)))
        logits = self.head(out.edge)
        label = noisy.reshape(-1).long()
        loss = F.cross_entropy(logits, label)
        return {
            "loss": loss,
            "baseline": loss.new_tensor(math.log(2.0)),
            "accuracy": (logits.argmax(-1) == label).to(vec.dtype).mean().detach(),
        }


def _vector_combiner(backbone, n_out: int) -> nn.Linear:
    """Linear map over the backbone's vector channels (equivariant: no bias, acts on channels)."""
    return nn.Linear(backbone.vector_dim, n_out, bias=False)


def _combine(layer: nn.Linear, vector: torch.Tensor) -> torch.Tensor:
    return torch.einsum("oc,nci->noi", layer.weight, vector)


@register_task("nearest_bond")
class NearestBondTask(CloudTask):
    """Hide each atom's nearest bond; regress its vector from the other ``k - 1`` (MSE)."""

    requires = frozenset({"vector"})

    def __init__(self, backbone, **config: Any):
        super().__init__(backbone, **config)
        self.combine = _vector_combiner(backbone, 1)

    def predict(self, out, unit: torch.Tensor) -> torch.Tensor:
        """Predicted hidden bond (n, 3), in length units, from the backbone's vectors (covariant)."""
        return _combine(self.combine, out.vector)[:, 0] / unit[:, None]

    def step(self, batch, backbone, generator=None):
        vec, unit = self.clean_clouds(batch)
        n, k = vec.shape[:2]
        mask = torch.ones(n, k, dtype=torch.bool, device=vec.device)
        mask[:, 0] = False  # bonds are sorted by distance: slot 0 is the nearest neighbour
        out = backbone(self.corrupted(batch, edge_mask=mask.reshape(-1)))
        pred = self.predict(out, unit)
        target = vec[:, 0] / unit[:, None]
        loss = F.mse_loss(pred, target)
        return {
            "loss": loss,
            "baseline": target.pow(2).mean(),  # predict zero
            "baseline_mean": (target - target.mean(0)).pow(2).mean(),  # predict the batch mean
        }


@register_task("cloud_denoise")
class CloudDenoiseTask(CloudTask):
    """Per-point noise (mean removed), noisy cloud Kabsch-registered onto the clean one;
    predict the clean cloud (MSE). Baseline: predicting the noisy input."""

    requires = frozenset({"edge", "edge_vector"})

    def __init__(self, backbone, sigma: float = 0.5, **config: Any):
        super().__init__(backbone, sigma=sigma, **config)
        self.sigma = float(sigma)
        self.gates = nn.Linear(
            backbone.edge_dim, 2
        )  # invariant gains of [backbone vector, noisy input]
        nn.init.zeros_(self.gates.weight)
        nn.init.zeros_(self.gates.bias)

    def predict(self, out, noisy: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        """Denoised clouds (n, k, 3), in length units, from the noisy input clouds (n, k, 3)."""
        n, k = noisy.shape[:2]
        g = self.gates(out.edge).reshape(n, k, 2)
        noisy_n = noisy / unit[:, None, None]
        return (
            noisy_n
            + g[..., :1] * out.edge_vector.reshape(n, k, 3) / unit[:, None, None]
            + g[..., 1:] * noisy_n
        )

    def step(self, batch, backbone, generator=None):
        vec, unit = self.clean_clouds(batch)
        n, k = vec.shape[:2]
        with torch.no_grad():
            noise = _randn((n, k, 3), vec, generator) * (self.sigma * unit)[:, None, None]
            noise = noise - noise.mean(dim=1, keepdim=True)
            noisy = kabsch_register((vec + noise).double(), vec.double()).to(vec.dtype)
        out = backbone(self.corrupted(batch, edge_delta=(noisy - vec).reshape(n * k, 3)))
        noisy_n = noisy / unit[:, None, None]
        pred = self.predict(out, noisy, unit)
        target = vec / unit[:, None, None]
        loss = F.mse_loss(pred, target)
        return {"loss": loss, "baseline": F.mse_loss(noisy_n, target).detach()}


@register_task("shift")
class ShiftTask(CloudTask):
    """Shift every neighbour of a cloud by the same ``y ~ N(0, sigma^2 I)``; regress ``y``."""

    requires = frozenset({"vector"})

    def __init__(self, backbone, sigma: float = 0.5, **config: Any):
        super().__init__(backbone, sigma=sigma, **config)
        self.sigma = float(sigma)
        self.combine = _vector_combiner(backbone, 1)

    def predict(self, out, unit: torch.Tensor) -> torch.Tensor:
        """Predicted shift (n, 3), in length units, from the backbone's vectors (covariant)."""
        return _combine(self.combine, out.vector)[:, 0] / unit[:, None]

    def step(self, batch, backbone, generator=None):
        vec, unit = self.clean_clouds(batch)
        n, k = vec.shape[:2]
        y = _randn((n, 3), vec, generator) * self.sigma  # in units
        delta = (y * unit[:, None])[:, None, :].expand(n, k, 3)
        out = backbone(self.corrupted(batch, edge_delta=delta.reshape(n * k, 3)))
        loss = F.mse_loss(self.predict(out, unit), y)
        return {"loss": loss, "baseline": y.pow(2).mean()}


def chamfer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Symmetric Chamfer distance (mean squared distance to the nearest point, both ways) per cloud."""
    d = (a[:, :, None, :] - b[:, None, :, :]).pow(2).sum(-1)
    return 0.5 * (d.min(dim=2).values.mean(dim=1) + d.min(dim=1).values.mean(dim=1))


@register_task("autoencoder")
class AutoencoderTask(CloudTask):
    """Variational autoencoder of each cloud through an invariant ``latent``-d bottleneck.

    The decoder turns the latent into ``k`` points in a canonical frame; an orthonormal frame
    built from two of the backbone's covariant vectors (Gram-Schmidt, so it carries only the
    orientation: 3 numbers) rotates them into place. Loss: Chamfer distance to the clean cloud
    (permutation-invariant) + ``kl_weight`` * KL. Baseline: predicting all points at the centre.
    """

    requires = frozenset({"vector"})
    corrupts_bonds = False

    def __init__(
        self, backbone, latent: int = 8, kl_weight: float = 1e-5, hidden: int = 64, **config: Any
    ):
        super().__init__(backbone, latent=latent, kl_weight=kl_weight, hidden=hidden, **config)
        self.latent, self.kl_weight = int(latent), float(kl_weight)
        self.encoder = nn.Linear(backbone.node_dim, 2 * self.latent)
        self.decoder = nn.Sequential(
            nn.Linear(self.latent, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, self.k * 3),
        )
        self.combine = _vector_combiner(backbone, 2)

    @staticmethod
    def frame(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
        """Rows e1, e2, e3 of a right-handed orthonormal frame from two vectors (n, 3)."""
        e1 = a / (a.norm(dim=-1, keepdim=True) + eps)
        b = b - (b * e1).sum(-1, keepdim=True) * e1
        e2 = b / (b.norm(dim=-1, keepdim=True) + eps)
        return torch.stack([e1, e2, torch.linalg.cross(e1, e2)], dim=1)

    def encode(self, out) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and log-variance (n, latent) of each cloud (invariant)."""
        mu, logvar = self.encoder(out.node).chunk(2, dim=-1)
        return mu, logvar.clamp(-10.0, 10.0)

    def decode(self, out, z: torch.Tensor) -> torch.Tensor:
        """Clouds (n, k, 3) in length units from latents, oriented by the backbone's vectors."""
        canon = self.decoder(z).reshape(z.shape[0], self.k, 3)
        ab = _combine(self.combine, out.vector)
        return canon @ self.frame(ab[:, 0], ab[:, 1])  # sum_m canon[..., m] * e_m

    def step(self, batch, backbone, generator=None):
        vec, unit = self.clean_clouds(batch)
        out = backbone(batch)
        mu, logvar = self.encode(out)
        z = mu + torch.exp(0.5 * logvar) * _randn(mu.shape, mu, generator) if self.training else mu
        cloud = self.decode(out, z)
        target = vec / unit[:, None, None]
        rec = chamfer(cloud, target).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(-1).mean()
        return {
            "loss": rec + self.kl_weight * kl,
            "baseline": chamfer(torch.zeros_like(target), target).mean(),
            "chamfer": rec.detach(),
            "kl": kl.detach(),
        }


@register_task("frame_class")
class FrameClassTask(CloudTask):
    """Which frame (structure, simulation snapshot, ...) a cloud came from, plus "none".

    Labels come from the per-atom batch attribute ``label`` (default ``frame``): values
    ``0..n_frames-1`` are classes ``1..n_frames``; negative values are class 0, "none".
    Baseline: the best constant predictor (the batch's class frequencies), whose cross-entropy
    is the label entropy; ``baseline_accuracy`` is the majority-class accuracy.
    """

    corrupts_bonds = False

    def __init__(self, backbone, n_frames: int, label: str = "frame", **config: Any):
        super().__init__(backbone, n_frames=n_frames, label=label, **config)
        if int(n_frames) < 1:
            raise ConfigError(f"task 'frame_class': n_frames must be >= 1, got {n_frames}")
        self.n_classes = int(n_frames) + 1
        self.label = label
        self.head = _head(backbone.node_dim, self.n_classes)

    def labels(self, batch) -> torch.Tensor:
        frame = getattr(batch, self.label, None)
        if frame is None:
            raise ConfigError(f"task 'frame_class': batch has no per-atom attribute {self.label!r}")
        frame = frame.reshape(-1).long()
        if frame.shape[0] != batch.pos.shape[0]:
            raise ConfigError(f"task 'frame_class': {self.label!r} must have one value per atom")
        if int(frame.max()) >= self.n_classes - 1:
            raise ConfigError(
                f"task 'frame_class': frame index {int(frame.max())} >= n_frames={self.n_classes - 1}"
            )
        return torch.where(frame < 0, torch.zeros_like(frame), frame + 1)

    def step(self, batch, backbone, generator=None):
        label = self.labels(batch)
        out = backbone(batch)
        logits = self.head(out.node)
        loss = F.cross_entropy(logits, label)
        freq = torch.bincount(label, minlength=self.n_classes).to(logits.dtype) / label.shape[0]
        nz = freq[freq > 0]
        return {
            "loss": loss,
            "baseline": -(nz * nz.log()).sum().detach(),
            "accuracy": (logits.argmax(-1) == label).to(logits.dtype).mean().detach(),
            "baseline_accuracy": freq.max().detach(),
        }
