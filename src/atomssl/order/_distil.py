"""Distil an :class:`OrderStudent` from a teacher backbone, trained through the training engine."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from ._student import OrderStudent


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


class _Steps(torch.utils.data.Dataset):
    """The minibatch indices of each step, drawn up front: one ``randint`` a step, as always."""

    def __init__(self, indices: list[torch.Tensor]):
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.indices[i]


class DistilModule(L.LightningModule):
    """The student's MLP regressing standardised teacher embeddings; AdamW + OneCycleLR."""

    def __init__(self, student: OrderStudent, x, y, y_scale, indices, lr: float, report=None):
        super().__init__()
        self.student = student
        self.x, self.y, self.y_scale = x, y, y_scale
        self.indices, self.lr, self.report = indices, float(lr), report

    def train_dataloader(self):
        # batch_size=None: each item is a step's index tensor; an own generator leaves the global
        # RNG (drawn from after training) untouched
        return torch.utils.data.DataLoader(
            _Steps(self.indices), batch_size=None, shuffle=False, generator=torch.Generator()
        )

    def training_step(self, idx, batch_idx):
        from ..train._engine import check_finite

        loss = (((self.student.head(self.x[idx]) - self.y[idx]) / self.y_scale) ** 2).mean()
        check_finite(loss, self.current_epoch, int(self.global_step))
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        step, steps = int(self.global_step), len(self.indices)
        if self.report is not None and (step % 500 == 0 or step == steps):
            self.report(step, steps, float(outputs["loss"].detach()))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.student.mlp.parameters(), lr=self.lr, weight_decay=1e-5)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.lr, total_steps=len(self.indices), pct_start=0.1
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _train(student, x, y, y_scale, *, steps, batch, lr, progress, run_dir) -> None:
    """Fit the student's MLP for ``steps`` steps on the engine (CPU, no checkpoints, CSV logs)."""
    from ..train._engine import make_trainer

    indices = [torch.randint(len(x), (batch,)) for _ in range(steps)]
    rng_after = torch.get_rng_state()  # where the hand-written loop left the global RNG
    report = progress if callable(progress) else None
    module = DistilModule(student, x, y, y_scale, indices, lr, report)
    tcfg = {"max_steps": int(steps), "max_epochs": -1, "accelerator": "cpu", "devices": 1,
            "log_every_n_steps": max(1, min(50, int(steps))), "enable_checkpointing": False}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="atomssl-distil-") as tmp:
        fit = make_trainer(tcfg, run_dir or tmp, [], bool(progress), has_val=False)
        fit.fit(module)
    torch.set_rng_state(rng_after)


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
    run_dir: str | os.PathLike | None = None,
) -> OrderStudent:
    """Train an :class:`OrderStudent` to reproduce ``embed_clouds(teacher, clouds)``.

    ``clouds``: groups of environments (default :func:`distillation_clouds`); a ``held_out`` group is only
    evaluated. A random ``validation`` fraction of the other groups is held out too. ``student.metrics``
    records R^2 of the regression per held-out group (``validation``, ``held_out``), the training R^2 and times.
    The MLP trains on the engine (:func:`atomssl.train.make_trainer`): a progress bar if ``progress``
    (a callable is also called as ``progress(step, steps, loss)`` every 500 steps), CSV logs in
    ``run_dir`` (default: a temporary folder), a one-line TrainingError on a non-finite loss.
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
    train_x: list[torch.Tensor] = []
    train_y: list[torch.Tensor] = []
    # held-out (x, y) pieces per evaluated group, in the order the groups first appear
    pieces: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    t = time.perf_counter()
    for name, c in groups.items():
        y = torch.as_tensor(embed_clouds(teacher, c, chunk=256))
        x = _features(student, c)
        if name == "held_out":
            pieces["held_out"] = [(x, y)]
            continue
        perm = rng.permutation(len(c))
        n_val = round(validation * len(c))
        pieces.setdefault("validation", []).append((x[perm[:n_val]], y[perm[:n_val]]))
        train_x.append(x[perm[n_val:]])
        train_y.append(y[perm[n_val:]])
    t_teacher = time.perf_counter() - t
    evals = {
        name: (
            p[0] if len(p) == 1 else (torch.cat([a for a, _ in p]), torch.cat([b for _, b in p]))
        )
        for name, p in pieces.items()
    }
    x, y = torch.cat(train_x), torch.cat(train_y)
    student.mean.copy_(x.mean(0))
    student.scale.copy_(x.std(0).clamp_min(1e-6))
    y_scale = y.std(0).clamp_min(1e-6)  # loss on standardised components: each counts alike
    last = student.mlp[-1]
    assert isinstance(last, nn.Linear)
    with torch.no_grad():
        last.bias.copy_(y.mean(0))
    t = time.perf_counter()
    _train(student, x, y, y_scale, steps=steps, batch=batch, lr=lr, progress=progress,
           run_dir=run_dir)  # fmt: skip
    student.eval()
    t_train = time.perf_counter() - t
    with torch.inference_mode():
        metrics: dict[str, Any] = {
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
