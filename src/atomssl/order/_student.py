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
in place of the teacher. Its checkpoint holds only tensors and plain data (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
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


def distillation_clouds(
    k: int = 12,
    per_crystal: int = 1000,
    seed: int = 0,
    n_min: int = 2048,
    liquid_sigmas=(0.08, 0.12, 0.16),
    wide: int = 150,
) -> dict[str, np.ndarray]:
    """Environments to distil on, by group: ``reference`` (the teacher's pretraining prototypes at the
    reference sigmas), ``disordered`` (the same at liquid-like sigmas), ``wide`` (``wide`` environments
    of every other one-component prototype except the held-out ones, sigma 0.03) and ``held_out``
    (the :data:`HELD_OUT_PROTOTYPES`, never trained on: generalisation)."""
    from ..data import PRETRAINING_PROTOTYPES, idealized_crystal
    from ..errors import StructureError
    from ._clouds import frame_clouds
    from ._reference import (
        HELD_OUT_PROTOTYPES,
        SIGMAS,
        one_component_prototypes,
        reference_clouds,
    )

    rng = np.random.default_rng(seed)
    out = {
        "reference": reference_clouds(per_crystal=per_crystal, n_min=n_min, seed=seed, k=k).clouds
    }

    def sample(names, sigmas, per):
        parts = []
        for name in names:
            for sigma in sigmas:
                for _ in range(
                    5
                ):  # strong noise may put two atoms on top of each other: draw again
                    try:
                        c = frame_clouds(
                            idealized_crystal(
                                name, n_min=min(n_min, 4 * per), sigma=sigma, seed=rng
                            ),
                            k,
                        )
                        break
                    except StructureError:
                        c = None
                if c is not None:
                    parts.append(c[rng.choice(len(c), min(per, len(c)), replace=False)])
        return parts

    out["disordered"] = sample(PRETRAINING_PROTOTYPES, liquid_sigmas, per_crystal)
    out["wide"] = (
        sample(
            [p for p in one_component_prototypes() if p not in HELD_OUT_PROTOTYPES], (0.03,), wide
        )
        if wide
        else []
    )
    out["held_out"] = sample(HELD_OUT_PROTOTYPES, SIGMAS, max(per_crystal // 4, 1))
    return {key: _pad_concat(v) if isinstance(v, list) else v for key, v in out.items() if len(v)}


def _pad_concat(parts) -> np.ndarray:
    """Concatenate clouds (n_i, K_i, 3), zero-padding to the widest K."""
    width = max(p.shape[1] for p in parts)
    return np.concatenate(
        [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0))) for p in parts]
    ).astype(np.float32)


def _features(student: OrderStudent, clouds: np.ndarray, chunk: int = 8192) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat(
            [
                student.features(torch.as_tensor(clouds[i : i + chunk]))
                for i in range(0, len(clouds), chunk)
            ]
        )


def r2(pred: np.ndarray, target: np.ndarray) -> float:
    """Coefficient of determination over all embedding components (1 - SSE / total variance)."""
    pred, target = np.asarray(pred, float), np.asarray(target, float)
    return float(1.0 - ((pred - target) ** 2).sum() / ((target - target.mean(0)) ** 2).sum())


def distil(
    teacher,
    clouds: dict[str, np.ndarray] | None = None,
    *,
    hidden: int = 128,
    steps: int = 4000,
    batch: int = 512,
    lr: float = 3e-3,
    validation: float = 0.1,
    seed: int = 0,
    features: dict | None = None,
    progress=None,
) -> OrderStudent:
    """Train an :class:`OrderStudent` to reproduce ``embed_clouds(teacher, clouds)``.

    ``clouds``: groups of environments (default :func:`distillation_clouds`); a ``held_out`` group is only
    evaluated. A random ``validation`` fraction of the other groups is held out too. ``student.metrics``
    records R^2 of the regression per held-out group (``validation``, ``held_out``), the training R^2 and times.
    """
    from ._clouds import embed_clouds

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    k = int(getattr(teacher, "k", 12))
    groups = distillation_clouds(k=k, seed=seed) if clouds is None else dict(clouds)
    t_clouds = time.perf_counter() - t0
    width = int(teacher.node_dim)
    student = OrderStudent(width, hidden, {"k": k, **(features or {})})
    train_x, train_y, evals = [], [], {}
    t = time.perf_counter()
    for name, c in groups.items():
        y = torch.as_tensor(embed_clouds(teacher, c, chunk=256))
        x = _features(student, c)
        if name == "held_out":
            evals["held_out"] = (x, y)
            continue
        perm = rng.permutation(len(c))
        n_val = round(validation * len(c))
        evals.setdefault("validation", []).append((x[perm[:n_val]], y[perm[:n_val]]))
        train_x.append(x[perm[n_val:]])
        train_y.append(y[perm[n_val:]])
    t_teacher = time.perf_counter() - t
    if isinstance(evals.get("validation"), list):
        evals["validation"] = tuple(torch.cat(z) for z in zip(*evals["validation"]))
    x, y = torch.cat(train_x), torch.cat(train_y)
    student.mean.copy_(x.mean(0))
    student.scale.copy_(x.std(0).clamp_min(1e-6))
    y_scale = y.std(0).clamp_min(1e-6)  # loss on standardised components: each counts alike
    with torch.no_grad():
        student.mlp[-1].bias.copy_(y.mean(0))
    student.train()
    opt = torch.optim.AdamW(student.mlp.parameters(), lr=lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    t = time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(len(x), (batch,))
        loss = (((student.head(x[idx]) - y[idx]) / y_scale) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None and (step % 500 == 0 or step == steps):
            progress(step, steps, float(loss.detach()))
    student.eval()
    t_train = time.perf_counter() - t
    with torch.inference_mode():
        metrics = {
            f"r2_{name}": r2(student.head(ex).numpy(), ey.numpy())
            for name, (ex, ey) in evals.items()
        }
        sub = torch.randperm(len(x))[:20000]
        metrics["r2_train"] = r2(student.head(x[sub]).numpy(), y[sub].numpy())
    metrics.update(
        {f"n_{name}": len(c) for name, c in groups.items()},
        steps=steps,
        batch=batch,
        hidden=hidden,
        seconds={
            "clouds": t_clouds,
            "teacher_and_features": t_teacher,
            "training": t_train,
            "total": time.perf_counter() - t0,
        },
    )
    student.metrics = metrics
    student.teacher = {"config": dict(getattr(teacher, "config", {}) or {}), "node_dim": width}
    return student
