"""Periodic neighbour lists by radius cutoff and by k nearest neighbours.

Edge convention (used everywhere in atomssl): an edge ``e`` goes from ``src[e]`` to the
periodic image ``shift[e]`` of ``dst[e]``, and
``vec[e] = positions[dst] + shift[e] @ cell - positions[src]``.
Pairs are found by vesin (cell lists; triclinic cells, mixed pbc, cells smaller than the
cutoff); see :mod:`._vesin` for how it is called.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data._structure import Structure
from ..errors import StructureError
from ._vesin import vesin_pairs

# Above this many atoms vesin may use several threads; below, thread start-up costs more
# than it saves.
_THREADED_ABOVE = 5000


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
        return np.sqrt(np.einsum("ij,ij->i", self.vec, self.vec))

    def __len__(self) -> int:
        return int(len(self.src))

    def sorted(self) -> "NeighborList":
        """Edges ordered by source atom, then distance (rounded to 1e-10 A), then destination and shift."""
        return self._take(_lexsort_edges(self.src, self.dst, self.shift, self.distance))

    def _take(self, idx: np.ndarray) -> "NeighborList":
        return NeighborList(
            self.src[idx], self.dst[idx], self.shift[idx], self.vec[idx], self.n_atoms, self.cutoff, self.k
        )


def _lexsort_edges(src, dst, shift, distance) -> np.ndarray:
    d = np.round(distance, 10)
    return np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], dst, d, src))


def _box(structure: Structure) -> np.ndarray:
    # vesin ignores the box along non-periodic axes; zero them so that garbage there is harmless
    return structure.cell if structure.pbc.all() else np.where(structure.pbc[:, None], structure.cell, 0.0)


def _search_cutoff(structure: Structure, cutoff: float) -> float:
    """The cutoff vesin searches with: at least ``cutoff``, at least ~ the mean atomic spacing.

    vesin's cell list has cells no larger than the cutoff, so a tiny cutoff (the 0.1 A overlap
    check in :meth:`Structure.validate`) over a normal crystal means ~10^6 empty cells and tens
    of ms per call. Searching at the mean spacing (about one atom per cell) and filtering costs
    a few extra pairs per atom instead.
    """
    n = structure.n_atoms
    if n == 0:
        return cutoff
    if structure.pbc.all():
        volume = structure.volume
    else:
        extent = np.ptp(structure.positions, axis=0) + np.abs(structure.cell[structure.pbc]).sum(axis=0)
        volume = float(np.prod(np.maximum(extent, 1.0)))
    spacing = (volume / n) ** (1.0 / 3.0)
    if not np.isfinite(spacing):
        return cutoff
    return max(cutoff, min(spacing, 1e3))


def _pymatgen_pairs(structure: Structure, cutoff: float):
    from pymatgen.optimization.neighbors import find_points_in_spheres

    pos = structure.positions
    i, j, shift, _ = find_points_in_spheres(pos, pos, float(cutoff), _ALL_PERIODIC, structure.cell, 1e-8)
    shift = shift.astype(np.int32)  # integer-valued doubles
    vec = pos[j] - pos[i] + shift @ structure.cell
    return i, j, shift, vec


_ALL_PERIODIC = np.ones(3, dtype=np.int64)


def _raw(structure: Structure, cutoff: float, engine: str = "auto"):
    """Unordered pairs ``(src, dst, shift int32, vec, d2)`` with ``|vec| < cutoff``."""
    if engine == "auto":
        engine = "pymatgen" if structure.pbc.all() and structure.n_atoms < _THREADED_ABOVE else "vesin"
    if engine == "pymatgen":
        src, dst, shift, vec = _pymatgen_pairs(structure, cutoff)
        d2 = np.einsum("ij,ij->i", vec, vec)
        keep = (d2 < cutoff * cutoff) & ((src != dst) | (d2 > 0.0))
        return src[keep], dst[keep], shift[keep], vec[keep], d2[keep]
    search = _search_cutoff(structure, cutoff)
    threads = 1 if structure.n_atoms < _THREADED_ABOVE else 0
    pairs, shift, vec = vesin_pairs(structure.positions, _box(structure), structure.pbc, search, threads)
    d2 = np.einsum("ij,ij->i", vec, vec)
    if search > cutoff:
        keep = d2 < cutoff * cutoff
        pairs, shift, vec, d2 = pairs[keep], shift[keep], vec[keep], d2[keep]
    return pairs[:, 0].view(np.int64), pairs[:, 1].view(np.int64), shift, vec, d2


def _check(structure, validate: bool) -> Structure:
    structure = Structure.coerce(structure)
    if validate:
        structure.validate()
    return structure


def radius_graph(structure, cutoff: float, *, validate: bool = True) -> NeighborList:
    """All directed pairs closer than ``cutoff`` (Angstrom), over periodic images.

    Self-pairs with zero shift are excluded; an atom's own periodic images are neighbours.
    Edges are grouped by source atom and ordered by distance within each group (exact ties
    keep vesin's deterministic order).
    """
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    structure = _check(structure, validate)
    cutoff = float(cutoff)
    src, dst, shift, vec, d2 = _raw(structure, cutoff)
    # One stable argsort on src + d^2 / (cutoff^2 * (1 + eps)): d^2 / ... lies in [0, 1).
    order = np.argsort(src + d2 * (1.0 / (cutoff * cutoff * (1.0 + 1e-9))), kind="stable")
    return NeighborList(src[order], dst[order], shift[order].astype(np.int64), vec[order], structure.n_atoms, cutoff)


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

    Every atom gets exactly ``k`` edges. Ties (distances equal to 1e-10 A) are broken
    deterministically by (destination, shift). Raises :class:`StructureError` when a finite
    structure has fewer than ``k + 1`` atoms.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    structure = _check(structure, validate)
    n = structure.n_atoms
    if not structure.pbc.any() and n <= k:
        raise StructureError(
            f"k={k} nearest neighbours requested but the non-periodic structure has only {n} atoms",
            structure.source or structure.id,
            structure.index,
        )
    cutoff = _initial_cutoff(structure, k)
    while True:
        src, dst, shift, vec, d2 = _raw(structure, cutoff)
        counts = np.bincount(src, minlength=n)
        if counts.min() >= k:
            break
        if cutoff > max_cutoff:
            raise StructureError(
                f"could not find {k} neighbours within {max_cutoff} A", structure.source or structure.id, structure.index
            )
        cutoff *= 1.5
    order = _lexsort_edges(src, dst, shift, np.sqrt(d2))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    keep = order[(starts[:, None] + np.arange(k)[None, :]).reshape(-1)]
    return NeighborList(src[keep], dst[keep], shift[keep].astype(np.int64), vec[keep], n, None, k)
