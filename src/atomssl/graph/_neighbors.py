"""Periodic neighbour lists by radius cutoff and by k nearest neighbours.

Edge convention (used everywhere in atomssl): an edge ``e`` goes from ``src[e]`` to the
periodic image ``shift[e]`` of ``dst[e]``, and
``vec[e] = positions[dst] + shift[e] @ cell - positions[src]``.
Pairs are found by vesin (cell lists, triclinic, mixed pbc, cells smaller than the cutoff).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import vesin

from ..data._structure import Structure
from ..errors import StructureError


@dataclass(eq=False)
class NeighborList:
    """Directed edges of one structure (both i->j and j->i are present)."""

    src: np.ndarray  # (E,) int64
    dst: np.ndarray  # (E,) int64
    shift: np.ndarray  # (E, 3) int64, image offset of dst in lattice vectors
    vec: np.ndarray  # (E, 3) float64, Cartesian vector src -> image of dst
    n_atoms: int
    cutoff: float | None = None
    k: int | None = None

    @property
    def distance(self) -> np.ndarray:
        return np.linalg.norm(self.vec, axis=1)

    def __len__(self) -> int:
        return int(len(self.src))

    def sorted(self) -> "NeighborList":
        """Edges ordered by source atom, then distance, then destination and shift."""
        d = np.round(self.distance, 10)
        order = np.lexsort((self.shift[:, 2], self.shift[:, 1], self.shift[:, 0], self.dst, d, self.src))
        return self._take(order)

    def _take(self, idx: np.ndarray) -> "NeighborList":
        return NeighborList(
            self.src[idx], self.dst[idx], self.shift[idx], self.vec[idx], self.n_atoms, self.cutoff, self.k
        )


def _pairs(structure: Structure, cutoff: float) -> NeighborList:
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    box = np.where(structure.pbc[:, None], structure.cell, 0.0) if not structure.pbc.all() else structure.cell
    i, j, s, d = nl.compute(structure.positions, box, structure.pbc.tolist(), "ijSD")
    return NeighborList(
        i.astype(np.int64), j.astype(np.int64), s.astype(np.int64), d.astype(np.float64), structure.n_atoms, cutoff
    )


def _check(structure: Structure, validate: bool) -> Structure:
    structure = Structure.coerce(structure)
    if validate:
        structure.validate()
    return structure


def radius_graph(structure, cutoff: float, *, validate: bool = True) -> NeighborList:
    """All directed pairs closer than ``cutoff`` (Angstrom), over periodic images.

    Self-pairs with zero shift are excluded; an atom's own periodic images are neighbours.
    """
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    structure = _check(structure, validate)
    return _pairs(structure, cutoff).sorted()


def _initial_cutoff(structure: Structure, k: int) -> float:
    n = structure.n_atoms
    if structure.pbc.all():
        volume = structure.volume
    else:
        span = np.ptp(structure.positions, axis=0) + 1.0
        volume = float(np.prod(span))
        if structure.pbc.any():
            volume = max(volume, structure.volume)
    density = n / max(volume, 1e-12)
    return max(1.3 * (3.0 * (k + 1) / (4.0 * np.pi * density)) ** (1.0 / 3.0), 1e-3)


def knn_graph(structure, k: int, *, validate: bool = True, max_cutoff: float = 1e4) -> NeighborList:
    """The ``k`` nearest neighbours of every atom (over periodic images), sorted by distance.

    Ties at the k-th distance are broken deterministically by (destination, shift). Raises
    :class:`StructureError` when a finite structure has fewer than ``k + 1`` atoms.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    structure = _check(structure, validate)
    if not structure.pbc.any() and structure.n_atoms <= k:
        raise StructureError(
            f"k={k} nearest neighbours requested but the non-periodic structure has only {structure.n_atoms} atoms",
            structure.source or structure.id,
            structure.index,
        )
    cutoff = _initial_cutoff(structure, k)
    while True:
        nl = _pairs(structure, cutoff)
        counts = np.bincount(nl.src, minlength=structure.n_atoms)
        if counts.min() >= k:
            break
        if cutoff > max_cutoff:
            raise StructureError(
                f"could not find {k} neighbours within {max_cutoff} A", structure.source or structure.id, structure.index
            )
        cutoff *= 1.5
    nl = nl.sorted()
    counts = np.bincount(nl.src, minlength=structure.n_atoms)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    keep = (starts[:, None] + np.arange(k)[None, :]).reshape(-1)
    out = nl._take(keep)
    out.k, out.cutoff = k, None
    return out
