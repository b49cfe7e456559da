"""Steinhardt bond-orientational order (freud) per particle: the baseline for the SSL embeddings."""

from __future__ import annotations

import numpy as np

from ..data import Structure

#: column names of :func:`steinhardt_features`
STEINHARDT_FEATURES = ("q4", "q6", "w6", "q4_avg", "q6_avg", "w6_avg")


def freud_system(structure: Structure):
    """(freud Box, points) for a periodic frame; positions are wrapped into freud's centred box."""
    import freud

    s = Structure.coerce(structure)
    box = freud.box.Box.from_matrix(
        np.asarray(s.cell, dtype=float).T
    )  # freud: lattice vectors as columns
    points = box.wrap(
        np.asarray(s.positions, dtype=float) - np.asarray(s.cell, dtype=float).sum(0) / 2
    )
    return box, points.astype(np.float32)


def knn_neighbors(system, k: int = 12):
    """freud ``NeighborList`` of the ``k`` nearest neighbours of every point of ``system`` = (box, points)
    (self excluded): the one neighbour query of a frame, shared by every Steinhardt quantity of it."""
    import freud

    box, points = system
    return (
        freud.locality.AABBQuery(box, points)
        .query(points, {"num_neighbors": k, "exclude_ii": True})
        .toNeighborList()
    )


def _system_neighbors(structure, k: int, system, neighbors):
    """(system, neighbour list): the given ones, or a fresh system and its single k-nearest query."""
    if system is None:
        if neighbors is not None:
            raise ValueError("neighbors= needs the system= it was computed on")
        system = freud_system(structure)
    return system, (knn_neighbors(system, k) if neighbors is None else neighbors)


def steinhardt_features(
    structure: Structure, k: int = 12, *, system=None, neighbors=None
) -> np.ndarray:
    """(n, 6) q4, q6, w6 (normalised W_l), plain and neighbour-averaged (Lechner-Dellago), over k nearest.

    One neighbour query serves all six (``neighbors``: a :func:`knn_neighbors` list of ``system`` to reuse).
    """
    import freud

    system, nb = _system_neighbors(structure, k, system, neighbors)
    cols = []
    for average in (False, True):
        for l, wl in ((4, False), (6, False), (6, True)):
            op = freud.order.Steinhardt(l, average=average, wl=wl, wl_normalize=wl)
            op.compute(system, neighbors=nb)
            cols.append(np.asarray(op.particle_order, dtype=np.float64))
    return np.nan_to_num(np.stack(cols, axis=1)).astype(np.float32)


def particle_q6(structure: Structure, k: int = 12, *, system=None, neighbors=None) -> np.ndarray:
    """(n,) float32 Steinhardt q6 of every particle over its ``k`` nearest neighbours."""
    import freud

    system, nb = _system_neighbors(structure, k, system, neighbors)
    op = freud.order.Steinhardt(6)
    op.compute(system, neighbors=nb)
    return np.asarray(op.particle_order, dtype=np.float32)


def solid_fraction(
    structure: Structure,
    k: int = 12,
    q_threshold: float = 0.7,
    solid_threshold: int = 6,
    *,
    system=None,
    neighbors=None,
) -> float:
    """Fraction of particles with >= ``solid_threshold`` q6-correlated neighbours (ten Wolde criterion)."""
    import freud

    system, nb = _system_neighbors(structure, k, system, neighbors)
    op = freud.order.SolidLiquid(l=6, q_threshold=q_threshold, solid_threshold=solid_threshold)
    op.compute(system, neighbors=nb)
    return float(np.mean(op.num_connections >= solid_threshold))


def frame_steinhardt(structure: Structure, k: int = 12, q_threshold: float = 0.7, solid_threshold: int = 6, *,
                     system=None, neighbors=None):  # fmt: skip
    """(q6 per particle (n,), ten Wolde solid fraction) of a frame from one shared neighbour query
    (``neighbors``: a :func:`knn_neighbors` list of ``system`` to reuse)."""
    system, nb = _system_neighbors(structure, k, system, neighbors)
    return (
        particle_q6(structure, k, system=system, neighbors=nb),
        solid_fraction(structure, k, q_threshold, solid_threshold, system=system, neighbors=nb),
    )
