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
    box = freud.box.Box.from_matrix(np.asarray(s.cell, dtype=float).T)  # freud: lattice vectors as columns
    points = box.wrap(np.asarray(s.positions, dtype=float) - np.asarray(s.cell, dtype=float).sum(0) / 2)
    return box, points.astype(np.float32)


def steinhardt_features(structure: Structure, k: int = 12) -> np.ndarray:
    """(n, 6) q4, q6, w6 (normalised W_l), plain and neighbour-averaged (Lechner-Dellago), over k nearest."""
    import freud

    system = freud_system(structure)
    nb = {"num_neighbors": k}
    cols = []
    for average in (False, True):
        for l, wl in ((4, False), (6, False), (6, True)):
            op = freud.order.Steinhardt(l, average=average, wl=wl, wl_normalize=wl)
            op.compute(system, neighbors=nb)
            cols.append(np.asarray(op.particle_order, dtype=np.float64))
    return np.nan_to_num(np.stack(cols, axis=1)).astype(np.float32)


def solid_fraction(structure: Structure, k: int = 12, q_threshold: float = 0.7, solid_threshold: int = 6) -> float:
    """Fraction of particles with >= ``solid_threshold`` q6-correlated neighbours (ten Wolde criterion)."""
    import freud

    op = freud.order.SolidLiquid(l=6, q_threshold=q_threshold, solid_threshold=solid_threshold)
    op.compute(freud_system(structure), neighbors={"num_neighbors": k})
    return float(np.mean(op.num_connections >= solid_threshold))
