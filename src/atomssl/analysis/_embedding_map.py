"""2D map of structure embeddings (UMAP when ``umap-learn`` is installed, else PCA), coloured by a property.

CDSSL (seed 003) shows a UMAP of pretrained MEGNet embeddings coloured by density: if the
pretext task taught the network something about packing, nearby points have similar density.
:func:`neighbour_agreement` puts a number on that: the correlation between each structure's
density and the mean density of its ``k`` nearest neighbours in embedding space (0 for a
random map, 1 when neighbours share the value exactly).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..utils import save_figure

#: atomic mass unit / A^3 -> g / cm^3
AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660


def density(structure) -> float:
    """Mass density in g/cm^3 of a periodic structure (ASE atomic masses)."""
    from ase.data import atomic_masses

    s = structure
    volume = abs(float(np.linalg.det(np.asarray(s.cell, dtype=float))))
    if volume <= 0:
        raise ValueError(f"structure {s.id or s.source}: no cell volume, density undefined")
    return float(atomic_masses[np.asarray(s.numbers)].sum() / volume * AMU_PER_A3_TO_G_PER_CM3)


def project_2d(x: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """``(n, 2)`` coordinates and the method used: ``umap`` (if installed) or ``pca`` (standardised)."""
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(np.asarray(x, dtype=np.float64))
    if method in ("auto", "umap"):
        try:
            import umap

            return umap.UMAP(n_components=2, random_state=seed).fit_transform(x), "umap"
        except ImportError:
            if method == "umap":
                raise
    if method not in ("auto", "pca"):
        raise ValueError(f"method must be auto, umap or pca, got {method!r}")
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(x), "pca"


def neighbour_agreement(x: np.ndarray, values: np.ndarray, k: int = 10) -> float:
    """Pearson correlation of ``values`` with the mean value of each point's ``k`` nearest
    neighbours (Euclidean, standardised features, the point itself excluded)."""
    from sklearn.neighbors import NearestNeighbors
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(np.asarray(x, dtype=np.float64))
    values = np.asarray(values, dtype=np.float64)
    k = min(k, len(x) - 1)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    neigh = values[idx[:, 1:]].mean(axis=1)
    return float(np.corrcoef(values, neigh)[0, 1])


def embedding_map(
    embeddings: np.ndarray,
    values: ArrayLike,
    path: str | os.PathLike,
    label: str = "density (g/cm$^3$)",
    method: str = "auto",
    title: str = "",
    seed: int = 0,
) -> dict[str, Any]:
    """Write the 2D map figure (PNG) of ``embeddings`` coloured by ``values``; returns the
    method, the 2D coordinates and the neighbour agreement in full and in 2D."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(values, dtype=np.float64)
    if len(values) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings but {len(values)} values")
    xy, used = project_2d(embeddings, method, seed)
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    lo, hi = np.percentile(values, [1, 99])  # a few very dense crystals would wash out the colours
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=values, s=5, cmap="viridis", alpha=0.8, vmin=lo, vmax=hi)
    fig.colorbar(sc, ax=ax, label=label)
    ax.set_xlabel(f"{used.upper()} 1")
    ax.set_ylabel(f"{used.upper()} 2")
    agree = neighbour_agreement(embeddings, values)
    ax.set_title(
        title or f"structure embeddings ({used.upper()}); kNN agreement r={agree:.2f}", fontsize=9
    )
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    return {
        "method": used,
        "xy": xy,
        "agreement": agree,
        "agreement_2d": neighbour_agreement(xy, values),
    }


def embedding_map_figure(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    source: str = "matbench_dielectric",
    limit: int | None = None,
    method: str = "auto",
    batch_size: int = 64,
    control: bool = True,
    save_arrays: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Embed ``source`` (dataset name, file, folder) with the checkpoint's backbone and write the
    density-coloured map to ``out`` (PNG). With ``control``, the same architecture with fresh
    random weights (seed 0) is scored too (``agreement_random``): the yardstick for what
    pretraining added. ``save_arrays`` writes embeddings and coordinates beside the figure (``.npz``).
    ``progress``: bars over the embedded structures."""
    import torch

    from ..representation import build_backbone
    from ..train import embed_structures, load_backbone
    from ..train._data import load_source
    from ..utils import atomic_save_npz

    if isinstance(source, (str, os.PathLike)) and os.path.exists(source):
        # the user's own files: a bad one is an error naming it (as in ``atomssl embed``), not skipped
        from itertools import islice

        from ..data import expand_sources, iter_structures
        from ..errors import EmptyInputError

        if os.path.isdir(source) and not expand_sources([source]):
            raise EmptyInputError(f"no structure files found in {source}")
        structures = list(islice(iter_structures(source), limit))
    else:
        structures = list(load_source({"name": source, "limit": limit} if limit else source))
    if not structures:
        from ..errors import EmptyInputError

        raise EmptyInputError(f"{source}: no structures to embed")
    backbone = load_backbone(checkpoint)
    arrays = embed_structures(structures, backbone, batch_size=batch_size, progress=progress)
    rho = np.array([density(s) for s in structures])
    res = embedding_map(arrays["structure"], rho, out, method=method)
    res["n"] = len(structures)
    if control:
        torch.manual_seed(0)
        fresh = build_backbone(backbone.config)
        res["agreement_random"] = neighbour_agreement(
            embed_structures(structures, fresh, batch_size=batch_size, progress=progress)[
                "structure"
            ],
            rho,
        )
    if save_arrays:
        atomic_save_npz(
            Path(out).with_suffix(".npz"),
            structure=arrays["structure"],
            xy=res["xy"],
            density=rho,
            ids=arrays["ids"],
        )
    return res
