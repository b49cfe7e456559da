"""Structure and motif statistics: coordination, RDF, bond angles, motif distance/angle distributions, plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import wasserstein_distance

from ..data import Structure
from ..graph import radius_graph

# First minimum of g(r) in a-Si lies between the shells at 2.35 A and 3.8 A; 2.85 A is the usual bond cutoff.
BOND_CUTOFF = 2.85


def coordination(structure, cutoff: float = BOND_CUTOFF) -> np.ndarray:
    """Number of neighbours within ``cutoff`` of every atom."""
    s = Structure.coerce(structure)
    nl = radius_graph(s, cutoff)
    return np.bincount(nl.src, minlength=s.n_atoms)


def rdf(structures, r_max: float = 8.0, bins: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """Radial distribution function g(r) averaged over periodic structures: ``(r centres, g)``."""
    if isinstance(structures, Structure):
        structures = [structures]
    edges = np.linspace(0.0, r_max, bins + 1)
    hist = np.zeros(bins)
    norm = 0.0
    for s in structures:
        s = Structure.coerce(s)
        nl = radius_graph(s, r_max)
        hist += np.histogram(nl.distance, edges)[0]
        norm += s.n_atoms * s.n_atoms / s.volume  # pairs per unit volume, summed over cells
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    return 0.5 * (edges[1:] + edges[:-1]), hist / (shell * norm)


def bond_angles(structure, cutoff: float = BOND_CUTOFF) -> np.ndarray:
    """All angles (degrees) j-i-k between pairs of bonds at every atom i."""
    s = Structure.coerce(structure)
    nl = radius_graph(s, cutoff)
    out = []
    starts = np.searchsorted(nl.src, np.arange(s.n_atoms + 1))
    for i in range(s.n_atoms):
        v = nl.vec[starts[i] : starts[i + 1]]
        if len(v) > 1:
            out.append(_pair_angles(v[None])[0])
    return np.concatenate(out) if out else np.zeros(0)


def _pair_angles(vectors: np.ndarray) -> np.ndarray:
    """Angles (degrees) between all pairs of vectors in each cloud, (n, m, 3) -> (n, m(m-1)/2)."""
    u = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
    cos = np.einsum("nai,nbi->nab", u, u)
    ia, ib = np.triu_indices(vectors.shape[1], 1)
    return np.degrees(np.arccos(np.clip(cos[:, ia, ib], -1.0, 1.0)))


def structure_summary(structures, cutoff: float = BOND_CUTOFF) -> dict:
    """Coordination statistics, RDF first peak and bond-angle statistics of a set of cells."""
    if isinstance(structures, Structure):
        structures = [structures]
    coord = np.concatenate([coordination(s, cutoff) for s in structures])
    r, g = rdf(structures, r_max=6.0, bins=300)
    first = r < cutoff
    angles = np.concatenate([bond_angles(s, cutoff) for s in structures])
    hist, edges = np.histogram(angles, bins=90, range=(0, 180))
    density = [s.n_atoms * 28.0855 / 6.02214076e23 / (s.volume * 1e-24) for s in structures]
    return {
        "n_cells": len(structures),
        "n_atoms": int(len(coord)),
        "bond_cutoff": cutoff,
        "mean_coordination": float(coord.mean()),
        "fraction_fourfold": float((coord == 4).mean()),
        "fraction_threefold": float((coord == 3).mean()),
        "fraction_fivefold": float((coord == 5).mean()),
        "rdf_first_peak": float(r[first][np.argmax(g[first])]),
        "bond_angle_mean": float(angles.mean()),
        "bond_angle_std": float(angles.std()),
        "bond_angle_peak": float(0.5 * (edges[:-1] + edges[1:])[np.argmax(hist)]),
        "density_g_cm3": float(np.mean(density)),
    }


# ------------------------------------------------------------------ motifs
def motif_statistics(coords: np.ndarray, shell: int = 4) -> dict[str, np.ndarray]:
    """Distances and angles of motifs (n, k, 3) centred on their central atom.

    ``bond_lengths`` / ``bond_angles``: the ``shell`` nearest neighbours (the first, bonded shell of a-Si)
    and the angles between them; ``distances`` / ``angles``: all neighbours.
    """
    coords = np.asarray(coords, dtype=np.float64)
    d = np.linalg.norm(coords, axis=-1)
    order = np.argsort(d, axis=1)
    c = np.take_along_axis(coords, order[..., None], axis=1)
    d = np.take_along_axis(d, order, axis=1)
    return {
        "bond_lengths": d[:, :shell].ravel(),
        "bond_angles": _pair_angles(c[:, :shell]).ravel(),
        "distances": d.ravel(),
        "angles": _pair_angles(c).ravel(),
    }


def compare_motifs(
    reference: np.ndarray, generated: np.ndarray, shell: int = 4
) -> dict[str, float]:
    """1D Wasserstein distances between motif statistics (A for lengths, degrees for angles)."""
    a, b = motif_statistics(reference, shell), motif_statistics(generated, shell)
    return {f"wasserstein_{key}": float(wasserstein_distance(a[key], b[key])) for key in a}


# ------------------------------------------------------------------ plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_structure_summary(structures, path, cutoff: float = BOND_CUTOFF) -> Path:
    """RDF, bond-angle distribution and coordination histogram of a-Si cells in one PNG."""
    from ..utils import save_figure

    plt = _plt()
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    r, g = rdf(structures, r_max=8.0, bins=200)
    ax[0].plot(r, g)
    ax[0].axvline(cutoff, ls=":", c="gray")
    ax[0].set(xlabel="r (A)", ylabel="g(r)", title="radial distribution")
    angles = np.concatenate([bond_angles(s, cutoff) for s in structures])
    ax[1].hist(angles, bins=90, range=(0, 180), density=True)
    ax[1].axvline(109.47, ls=":", c="gray")
    ax[1].set(xlabel="bond angle (deg)", ylabel="density", title="bond angles")
    coord = np.concatenate([coordination(s, cutoff) for s in structures])
    vals = np.arange(coord.min(), coord.max() + 1)
    ax[2].bar(vals, [(coord == v).mean() for v in vals])
    ax[2].set(
        xlabel=f"coordination (r < {cutoff} A)", ylabel="fraction", title=f"mean {coord.mean():.3f}"
    )
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_motif_comparison(
    reference: np.ndarray, generated: np.ndarray, path, labels=("data", "generated")
) -> Path:
    """Histograms of neighbour distances and angles, data vs generated motifs."""
    from ..utils import save_figure

    plt = _plt()
    a, b = motif_statistics(reference), motif_statistics(generated)
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    for stats, label in ((a, labels[0]), (b, labels[1])):
        ax[0].hist(
            stats["bond_lengths"],
            bins=60,
            range=(2.0, 2.8),
            density=True,
            histtype="step",
            label=label,
        )
        ax[1].hist(
            stats["bond_angles"],
            bins=60,
            range=(60, 160),
            density=True,
            histtype="step",
            label=label,
        )
        ax[2].hist(
            stats["distances"],
            bins=80,
            range=(2.0, 4.2),
            density=True,
            histtype="step",
            label=label,
        )
    ax[0].set(xlabel="first-shell distance (A)", title="bond lengths")
    ax[1].set(xlabel="first-shell angle (deg)", title="bond angles")
    ax[2].set(xlabel="all 8 neighbour distances (A)", title="neighbour distances")
    ax[0].legend()
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_errors(
    errors: dict[str, np.ndarray], path, threshold: float | None = None, xlabel: str = "error (A)"
) -> Path:
    """Cumulative distributions of errors, one curve per key."""
    from ..utils import save_figure

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for key, e in errors.items():
        e = np.sort(np.asarray(e))
        ax.plot(e, np.arange(1, len(e) + 1) / len(e), label=key)
    if threshold is not None:
        ax.axvline(threshold, ls=":", c="gray")
    ax.set(xlabel=xlabel, ylabel="fraction <= x", xscale="log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
