"""Per-particle neighbour clouds and their Gram matrices (for per-particle models)."""

from __future__ import annotations

import numpy as np

from ..data._neighbors import knn_graph


def neighbor_clouds(
    structure,
    k: int = 12,
    *,
    normalize: str | None = None,
    validate: bool = True,
    ties: bool = False,
):
    """Centred clouds of the ``k`` nearest neighbours of every atom, sorted by distance.

    Returns ``(vectors, neighbors)`` with ``vectors`` (n, k, 3) Cartesian vectors from each
    atom to its neighbours (self excluded) and ``neighbors`` (n, k) their atom indices.
    ``normalize="min_distance"`` divides all vectors by the structure's shortest neighbour
    distance (as done for simulation frames and idealised crystals).

    ``ties=True``: each cloud holds its whole tied ``k``-th shell (``knn_graph(ties=True)``),
    so the arrays are (n, K, ...) with K >= k the largest cloud; shorter clouds are padded with
    zero vectors and neighbour index -1. :func:`atomssl.graph.tie_weights` of the vectors'
    lengths gives each neighbour's weight (padding weighs 0).
    """
    nl = knn_graph(structure, k, validate=validate, ties=ties)
    n = nl.n_atoms
    if ties:
        counts = np.bincount(nl.src, minlength=n)
        width = int(counts.max()) if n else k
        slot = np.arange(len(nl.src)) - np.repeat(np.cumsum(counts) - counts, counts)
        vectors = np.zeros((n, width, 3), dtype=nl.vec.dtype)
        neighbors = np.full((n, width), -1, dtype=nl.dst.dtype)
        vectors[nl.src, slot] = nl.vec
        neighbors[nl.src, slot] = nl.dst
    else:
        vectors = nl.vec.reshape(n, k, 3)
        neighbors = nl.dst.reshape(n, k)
    if normalize == "min_distance":
        vectors = vectors / np.linalg.norm(vectors[:, 0], axis=-1).min()
    elif normalize is not None:
        raise ValueError(f"unknown normalize={normalize!r}; use None or 'min_distance'")
    return vectors, neighbors


def gram_matrices(vectors: np.ndarray) -> np.ndarray:
    """Gram matrices ``G[..., a, b] = r_a . r_b`` of neighbour vectors (..., k, 3) -> (..., k, k).

    They are invariant under rotations and reflections of the cloud; permuting neighbours
    permutes rows and columns together.
    """
    vectors = np.asarray(vectors)
    return np.einsum("...ai,...bi->...ab", vectors, vectors)


def upper_triangle(gram: np.ndarray) -> np.ndarray:
    """Upper triangle (diagonal included) of Gram matrices, (..., k, k) -> (..., k(k+1)/2)."""
    k = gram.shape[-1]
    iu = np.triu_indices(k)
    return gram[..., iu[0], iu[1]]
