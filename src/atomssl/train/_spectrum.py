"""Spectrum targets in fine-tuning: head statistics, scores, files and plots (label checks: data/_labels).

A spectrum label is a vector of ``n_bins`` finite, non-negative values per structure (see
:mod:`atomssl.task.spectrum`). Scores, all means over structures, in the target's units or in
bins (the grid's step is the user's; bins keep scores independent of it):

- ``mae``: per-bin mean absolute error;
- ``wasserstein``: 1-D Wasserstein distance between the normalised spectra, in bins;
- ``mean_error`` / ``std_error``: absolute error of the first two moments (mean position and
  width of the normalised spectrum), in bins;
- ``total_error``: absolute error of the spectrum's integral (sum over bins).

The trivial predictor (``*_baseline`` rows) is the mean training spectrum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..utils import atomic_save_npz, save_figure


def spectrum_task_options(y_train: np.ndarray) -> dict[str, Any]:
    """What the head needs from the training spectra: ``n_bins``, ``scale`` (mean bin value), ``mean_spectrum``."""
    y = np.asarray(y_train, dtype=np.float64)
    if y.ndim != 2 or not len(y):
        raise ConfigError("spectrum: no training spectra")
    scale = float(y.mean())
    return {
        "n_bins": int(y.shape[1]),
        "scale": scale if scale > 0 else 1.0,
        "mean_spectrum": y.mean(0).tolist(),
    }


def _normalised(y: np.ndarray) -> np.ndarray:
    total = y.sum(-1, keepdims=True)
    return np.where(total > 0, y / np.where(total > 0, total, 1.0), 1.0 / y.shape[-1])


def spectrum_scores(y_true, y_pred) -> dict[str, float]:
    """Scores of predicted spectra (see module docstring)."""
    t, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    if t.shape != p.shape:
        raise ValueError(f"spectra of shapes {t.shape} and {p.shape}")
    nt, npr = _normalised(t), _normalised(p)
    x = np.arange(t.shape[1], dtype=np.float64)
    mt, mp = nt @ x, npr @ x
    st = np.sqrt(np.clip((nt * (x - mt[:, None]) ** 2).sum(1), 0, None))
    sp = np.sqrt(np.clip((npr * (x - mp[:, None]) ** 2).sum(1), 0, None))
    return {
        "mae": float(np.abs(p - t).mean()),
        "wasserstein": float(np.abs(np.cumsum(nt, 1) - np.cumsum(npr, 1)).sum(1).mean()),
        "mean_error": float(np.abs(mp - mt).mean()),
        "std_error": float(np.abs(sp - st).mean()),
        "total_error": float(np.abs(p.sum(1) - t.sum(1)).mean()),
    }


def spectrum_baseline_scores(y_train, y_true) -> dict[str, float]:
    """Scores of the mean training spectrum predicted for every structure."""
    y_true = np.asarray(y_true, np.float64)
    mean = np.asarray(y_train, np.float64).mean(0)
    return spectrum_scores(y_true, np.broadcast_to(mean, y_true.shape))


@torch.no_grad()
def predict_spectra(
    module, graphs: Sequence, totals: np.ndarray | None, batch_size: int = 64
) -> np.ndarray:
    """Predicted spectra (n, B) of ``graphs`` in order; ``totals`` (n,) for a ``total="label"`` head."""
    from ._data import graph_batches

    device = next(module.parameters()).device
    rows, start = [], 0
    for batch in graph_batches(graphs, batch_size):
        n = int(batch.num_graphs)
        t = (
            None
            if totals is None
            else torch.as_tensor(np.asarray(totals[start : start + n]), device=device)
        )
        rows.append(
            module.task.predict(batch.to(device), module.backbone, t).double().cpu().numpy()
        )
        start += n
    return np.concatenate(rows) if rows else np.zeros((0, module.task.n_bins))


def write_spectra(path: Path, sets: dict, preds: dict[str, dict]) -> None:
    """``predictions.npz``: per split ``{split}_ids``, ``{split}_target``, ``{split}_prediction`` (n, B)."""
    arrays: dict[str, np.ndarray] = {}
    for name, s in sets.items():
        if name in preds:
            arrays[f"{name}_ids"] = np.asarray(s.ids, dtype=str)
            arrays[f"{name}_target"] = np.asarray(s.y, np.float64)
            arrays[f"{name}_prediction"] = np.asarray(preds[name]["prediction"], np.float64)
    atomic_save_npz(path, **arrays)


def plot_spectra(path: Path, sets: dict, preds: dict[str, dict], n: int = 6, seed: int = 0, baseline=None,
                 grid: Sequence[float] | None = None, title: str = "") -> None:  # fmt: skip
    """Predicted against true spectra of ``n`` random structures of the test split (else validation),
    with the mean training spectrum (``baseline``) when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = next(
        (k for k in ("test", "val", "train") if k in preds and len(sets.get(k, ())) > 0), None
    )
    if split is None:
        return
    y, p = np.asarray(sets[split].y, float), np.asarray(preds[split]["prediction"], float)
    pick = np.sort(np.random.default_rng(seed).choice(len(y), min(n, len(y)), replace=False))
    x = np.asarray(grid, float) if grid is not None else np.arange(y.shape[1])
    cols = min(3, len(pick))
    rows = math.ceil(len(pick) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 2.6 * rows), squeeze=False)
    for ax, i in zip(axes.ravel(), pick):
        ax.plot(x, y[i], "k-", lw=1.2, label="true")
        ax.plot(x, p[i], "C0-", lw=1.0, label="predicted")
        if baseline is not None:
            ax.plot(x, baseline, color="0.6", ls=":", lw=0.9, label="mean training spectrum")
        w = spectrum_scores(y[i : i + 1], p[i : i + 1])["wasserstein"]
        ax.set_title(f"{sets[split].ids[i]}  (W1 {w:.3g} bins)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(pick) :]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.suptitle(title or f"spectra of {len(pick)} {split} structures", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
