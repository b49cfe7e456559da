"""A distilled fast student of the order backbone: cheap invariant cloud features -> MLP -> teacher embedding.

The small rank-2 gaa teacher embeds ~5,000 particles/s on one CPU core (the 144 bond pairs of each
cloud go through attention MLPs). The student computes, per cloud, a fixed invariant description
and regresses the teacher's per-particle embedding (``embed_clouds(teacher, clouds)``) with a small
MLP, trained on the environments the teacher is pretrained and referenced on (noisy idealized crystals
of the pretraining prototypes, :func:`reference_clouds`) plus strongly disordered ones (liquid-like)
and other one-component prototypes. Features of a cloud (n, K, 3), K >= k, zero rows absent, each
neighbour weighted by :func:`atomssl.graph.tie_weights` (pairs by ``w_i w_j``), so they are exact
functions of geometry even where a tied shell straddles the ``k``-th place:

- radial: Gaussian-smeared histogram of the neighbour distances (in the cloud's units: the frame's
  shortest neighbour distance);
- optionally (``n_angle`` > 0; off by default: the power spectrum below already resolves the bond-angle
  distribution up to l_max, and the histogram's exponentials doubled the cost) a Gaussian-smeared
  histogram of the cosines of the bond pairs (i != j);
- a power spectrum: for l = 1..l_max and radial shells a <= b, ``sum_ij w_i w_j g_a(r_i) g_b(r_j)
  P_l(cos theta_ij) / k^2`` (addition theorem: the SOAP-like invariants of the spherical harmonics
  of the shells), plus the plain ``q_l^2 = sum_ij w_i w_j P_l / k^2`` of the whole cloud.

The student quacks like a backbone for :func:`embed_clouds` (it reads the clouds from the cloud batch and
returns ``node``), so :func:`reference_embeddings`, :func:`analyse_trajectory` and the experiments take it
in place of the teacher (:func:`atomssl.order._distil.distil` trains it). Its checkpoint holds only tensors and plain data (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

FORMAT = "atomssl-order-student"
VERSION = 1
#: feature settings (cloud units: the frame's shortest neighbour distance is 1)
FEATURES = {
    "k": 12,
    "r_min": 0.75,
    "r_max": 2.0,
    "n_radial": 16,
    "radial_width": 0.06,
    "shells": (0.95, 1.2, 1.45, 1.7),
    "shell_width": 0.15,
    "l_max": 12,
    "n_angle": 0,
    "angle_width": 0.09,
}


class CloudFeatures(nn.Module):
    """Invariant features (n, n_features) of clouds (n, K, 3); see module docstring."""

    radial: torch.Tensor  # buffers
    shells: torch.Tensor
    angles: torch.Tensor
    iu: torch.Tensor

    def __init__(
        self,
        k: int = 12,
        r_min: float = 0.75,
        r_max: float = 2.0,
        n_radial: int = 16,
        radial_width: float = 0.06,
        shells=(0.95, 1.2, 1.45, 1.7),
        shell_width: float = 0.15,
        l_max: int = 12,
        n_angle: int = 0,
        angle_width: float = 0.09,
    ):
        super().__init__()
        self.k, self.l_max = int(k), int(l_max)
        self.radial_width, self.shell_width, self.angle_width = (
            float(radial_width),
            float(shell_width),
            float(angle_width),
        )
        self.register_buffer("radial", torch.linspace(r_min, r_max, n_radial), persistent=False)
        self.register_buffer(
            "shells", torch.tensor(list(shells), dtype=torch.float32), persistent=False
        )
        self.register_buffer("angles", torch.linspace(-1.0, 1.0, n_angle), persistent=False)
        s = len(shells)
        iu = torch.triu_indices(s, s)
        self.register_buffer("iu", iu[0] * s + iu[1], persistent=False)
        self.n_features = n_radial + n_angle + self.l_max * (1 + len(iu[0]))

    def forward(self, clouds: torch.Tensor) -> torch.Tensor:
        from ..graph import tie_weights

        n, kk, _ = clouds.shape
        d = clouds.norm(dim=-1)  # (n, K)
        w = tie_weights(d, self.k) / self.k  # sums to 1 per cloud; 0 for padding
        radial = torch.einsum(
            "nk,nkr->nr",
            w,
            torch.exp(-0.5 * ((d[..., None] - self.radial) / self.radial_width) ** 2),
        )
        u = clouds / d.clamp_min(1e-12)[..., None]
        cos = torch.bmm(u, u.transpose(1, 2)).clamp_(-1.0, 1.0)  # (n, K, K)
        off = (
            w[:, :, None] * w[:, None, :] * (1.0 - torch.eye(kk, dtype=w.dtype, device=w.device))
            if len(self.angles)
            else None
        )
        angle = (
            torch.einsum(
                "nij,nija->na",
                off,
                torch.exp(-0.5 * ((cos[..., None] - self.angles) / self.angle_width) ** 2),
            )
            if len(self.angles)
            else cos.new_zeros(n, 0)
        )
        g = w[..., None] * torch.exp(
            -0.5 * ((d[..., None] - self.shells) / self.shell_width) ** 2
        )  # (n, K, S)
        gw = torch.cat([w[..., None], g], dim=2)  # channel 0: plain weights (q_l^2)
        s = g.shape[2]
        cols = [radial, angle]
        p_prev, p = torch.ones_like(cos), cos
        for l in range(1, self.l_max + 1):
            if l > 1:
                p_prev, p = p, ((2 * l - 1) * cos * p - (l - 1) * p_prev) / l
            t = torch.bmm(gw.transpose(1, 2), torch.bmm(p, gw))  # (n, S+1, S+1)
            cols.append(t[:, 0, :1])
            cols.append(t[:, 1:, 1:].reshape(n, s * s)[:, self.iu])
        return torch.cat(cols, dim=1)


class OrderStudent(nn.Module):
    """Features -> standardise -> MLP -> teacher embedding (width ``node_dim``)."""

    #: clouds per chunk in :func:`embed_clouds` when the caller leaves the choice to the model
    inference_chunk = 1024  # measured: 38k/s at 1024 vs 21k/s at 4096 clouds (cache), one thread

    mean: torch.Tensor  # buffer
    scale: torch.Tensor  # buffer

    def __init__(self, width: int, hidden: int = 128, features: dict | None = None):
        super().__init__()
        self.feature_settings = {**FEATURES, **(features or {})}
        self.feature_settings["shells"] = tuple(float(x) for x in self.feature_settings["shells"])
        self.features = CloudFeatures(**self.feature_settings)
        f = self.features.n_features
        self.register_buffer("mean", torch.zeros(f))
        self.register_buffer("scale", torch.ones(f))
        self.mlp = nn.Sequential(
            nn.Linear(f, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, width),
        )
        self.node_dim = self.embedding_dim = int(width)
        self.hidden = int(hidden)
        self.k = int(self.feature_settings["k"])
        self.metrics: dict = {}
        self.teacher: dict = {}

    def embed(self, clouds: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(clouds))

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.mlp((feats - self.mean) / self.scale)

    def forward(self, batch):
        """A cloud batch (:func:`cloud_batch`: per-centre edge vectors in ``shift``) -> output with ``node``."""
        from ..representation._base import BackboneOutput

        n = batch.pos.shape[0]
        src, shift = batch.edge_index[0], batch.shift.to(self.mean.dtype)
        counts = torch.bincount(src, minlength=n)
        width = int(counts.max()) if n else 0
        if len(src) == n * width:  # every cloud full: the edges, grouped by centre, are the clouds
            clouds = shift.reshape(n, width, 3)
        else:  # padding was left out of the batch: put it back as zero vectors
            slot = torch.arange(len(src), device=src.device) - torch.repeat_interleave(
                torch.cumsum(counts, 0) - counts, counts
            )
            clouds = shift.new_zeros(n, width, 3)
            clouds[src, slot] = shift
        node = self.embed(clouds)
        return BackboneOutput(node=node, graph=node.mean(dim=0, keepdim=True))

    def state(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "width": self.node_dim,
            "hidden": self.hidden,
            "features": {
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in self.feature_settings.items()
            },
            "state_dict": self.state_dict(),
            "metrics": self.metrics,
            "teacher": self.teacher,
        }


def save_student(student: OrderStudent, path: str | Path) -> Path:
    """Write ``student`` (weights, sizes, feature settings, metrics, teacher) atomically to
    ``path``, for :func:`load_student`; returns the path."""
    from ..utils import atomic_torch_save

    path = Path(path)
    atomic_torch_save(student.state(), path)
    return path


def load_student(path: str | Path) -> OrderStudent:
    """A student saved by :func:`save_student`; a file of another kind fails with a one-line error."""
    from ..errors import CheckpointError
    from ..utils._torchfile import safe_torch_load

    obj = safe_torch_load(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an atomssl order student (make one with benchmarks/order_speed.py --train-student)"
        )
    if obj.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: order student version {obj.get('version')}, this atomssl reads {VERSION}"
        )
    s = OrderStudent(obj["width"], obj["hidden"], obj["features"])
    s.load_state_dict(obj["state_dict"])
    s.metrics, s.teacher = dict(obj.get("metrics", {})), dict(obj.get("teacher", {}))
    return s.eval()
