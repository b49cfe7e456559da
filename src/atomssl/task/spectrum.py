"""A vector-valued downstream head: a non-negative spectrum on a fixed grid per structure.

The target of structure ``i`` is a vector of ``n_bins`` non-negative values (a vibrational or
phonon density of states, an absorption spectrum...) travelling on its graph as
``batch.target`` (1, n_bins). The head is the readout + MLP of :class:`DownstreamTask` and

- ``output="softplus"``: ``softplus(raw) * scale``, every bin free;
- ``output="softmax"``: a normalised shape ``softmax(raw)`` times a total: ``total="predicted"``
  (one more output, ``softplus(raw_total) * scale * n_bins``) or ``total="label"``, the sum of
  the target spectrum, for spectra whose integral is known in advance (a density of states
  normalised to the number of modes, 3N-6 for a molecule).

``scale`` is the mean bin value of the training spectra (set by the fine-tuning code), so the
raw outputs are O(1). Losses: ``l1`` or ``mse`` on the bins (in units of ``scale``), plus
``wasserstein`` times the 1-D Wasserstein distance between the normalised spectra (in bins).
Every step reports the loss of the training mean spectrum (``mean_spectrum``) as ``baseline``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ._base import register_task
from .downstream import DownstreamTask

OUTPUTS = ("softplus", "softmax")
TOTALS = ("predicted", "label")
SPECTRUM_LOSSES = ("l1", "mse")


def normalised(spectra: torch.Tensor) -> torch.Tensor:
    """Spectra (n, B) divided by their sums (a flat spectrum where the sum is 0)."""
    total = spectra.sum(dim=-1, keepdim=True)
    flat = torch.full_like(spectra, 1.0 / spectra.shape[-1])
    return torch.where(total > 0, spectra / total.clamp_min(1e-30), flat)


def wasserstein(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1-D Wasserstein distance (in bins) between the normalised spectra ``a`` and ``b`` (n, B): the
    L1 distance between their cumulative sums."""
    return (torch.cumsum(normalised(a), -1) - torch.cumsum(normalised(b), -1)).abs().sum(-1)


def moments(spectra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (in bins, bin centres 0..B-1) of the normalised spectra (n, B)."""
    p = normalised(spectra)
    x = torch.arange(spectra.shape[-1], dtype=spectra.dtype, device=spectra.device)
    mean = (p * x).sum(-1)
    var = (p * (x - mean[:, None]) ** 2).sum(-1)
    return mean, var.clamp_min(0).sqrt()


@register_task("spectrum")
class SpectrumTask(DownstreamTask):
    """Per-structure non-negative spectrum of ``n_bins`` values (see module docstring)."""

    mean_spectrum: torch.Tensor  # buffer

    def __init__(
        self,
        backbone,
        n_bins: int = 0,
        output: str = "softplus",
        total: str = "predicted",
        loss: str = "l1",
        wasserstein: float = 0.0,
        scale: float = 1.0,
        mean_spectrum: Sequence[float] | None = None,
        **config: Any,
    ):
        if int(n_bins) < 2:
            raise ConfigError(
                f"spectrum needs n_bins >= 2 (the length of the target vectors), got {n_bins}"
            )
        if output not in OUTPUTS:
            raise ConfigError(f"spectrum output must be one of {OUTPUTS}, got {output!r}")
        if total not in TOTALS:
            raise ConfigError(f"spectrum total must be one of {TOTALS}, got {total!r}")
        if loss not in SPECTRUM_LOSSES:
            raise ConfigError(f"spectrum loss must be one of {SPECTRUM_LOSSES}, got {loss!r}")
        if not float(scale) > 0 or float(wasserstein) < 0:
            raise ConfigError(
                f"spectrum needs scale > 0 and wasserstein >= 0 (got {scale}, {wasserstein})"
            )
        if config.get("transform", "none") != "none":
            raise ConfigError(
                f"spectrum takes no target transform (got {config['transform']!r}); spectra are fit as they are"
            )
        if mean_spectrum is not None and len(mean_spectrum) != int(n_bins):
            raise ConfigError(f"mean_spectrum has {len(mean_spectrum)} values, n_bins is {n_bins}")
        n_bins = int(n_bins)
        n_out = n_bins + (1 if output == "softmax" and total == "predicted" else 0)
        super().__init__(backbone, n_out, n_bins=n_bins, output=output, total=total, loss=loss,
                         wasserstein=float(wasserstein), scale=float(scale),
                         mean_spectrum=None if mean_spectrum is None else [float(v) for v in mean_spectrum],
                         **config)  # fmt: skip
        self.n_bins, self.output, self.total, self.loss_name = n_bins, output, total, loss
        self.w_weight, self.scale = float(wasserstein), float(scale)
        mean = torch.tensor(
            mean_spectrum if mean_spectrum is not None else [self.scale] * n_bins,
            dtype=torch.float32,
        )
        self.register_buffer("mean_spectrum", mean)

    def spectrum(self, raw: torch.Tensor, totals: torch.Tensor | None = None) -> torch.Tensor:
        """Spectra (n, B) in the target's units from head outputs ``raw``; ``totals`` (n,) when
        ``total="label"``."""
        b = self.n_bins
        if self.output == "softplus":
            return F.softplus(raw[:, :b]) * self.scale
        shape = torch.softmax(raw[:, :b], dim=-1)
        if self.total == "predicted":
            total = F.softplus(raw[:, b]) * (self.scale * b)
        else:
            if totals is None:
                raise ConfigError(
                    "spectrum with total='label' needs each structure's total (the sum of its spectrum)"
                )
            total = totals.to(raw.dtype)
        return shape * total[:, None]

    def predict(self, batch, backbone, totals: torch.Tensor | None = None) -> torch.Tensor:
        """Spectra (n_structures, n_bins) in the target's units."""
        if totals is None and self.total == "label":
            target = getattr(batch, "target", None)
            totals = None if target is None else target.reshape(-1, self.n_bins).sum(-1)
        return self.spectrum(self.raw(batch, backbone), totals)

    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, t = pred / self.scale, target / self.scale
        bins = F.l1_loss(p, t) if self.loss_name == "l1" else F.mse_loss(p, t)
        if self.w_weight:
            bins = bins + self.w_weight * wasserstein(pred, target).mean()
        return bins

    def step(self, batch, backbone, generator=None) -> dict[str, torch.Tensor]:
        y = batch.target.to(batch.pos.dtype).reshape(-1, self.n_bins)
        if bool((y < 0).any()):
            raise ConfigError("spectrum targets must be non-negative")
        pred = self.spectrum(
            self.raw(batch, backbone), y.sum(-1) if self.total == "label" else None
        )
        loss = self._loss(pred, y)
        with torch.no_grad():
            base = self.mean_spectrum.to(y.dtype).expand_as(y)
            return {
                "loss": loss,
                "baseline": self._loss(base, y),
                "mae": (pred - y).abs().mean(),
                "baseline_mae": (base - y).abs().mean(),
                "wasserstein": wasserstein(pred, y).mean(),
                "baseline_wasserstein": wasserstein(base, y).mean(),
            }


__all__ = [
    "SpectrumTask",
    "OUTPUTS",
    "TOTALS",
    "SPECTRUM_LOSSES",
    "normalised",
    "wasserstein",
    "moments",
]
