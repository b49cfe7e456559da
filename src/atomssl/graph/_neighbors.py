"""Periodic neighbour lists by radius cutoff and by k nearest neighbours.

Edge convention (used everywhere in atomssl): an edge ``e`` goes from ``src[e]`` to the
periodic image ``shift[e]`` of ``dst[e]``, and
``vec[e] = positions[dst] + shift[e] @ cell - positions[src]``.

Two neighbour-search engines, both checked against brute force in the tests:

- ``"vesin"`` (cell lists; triclinic cells, mixed and no pbc, cells smaller than the
  cutoff, multi-threaded for large systems), called through :mod:`._vesin`;
- ``"pymatgen"`` (``pymatgen.optimization.neighbors.find_points_in_spheres``), used by
  ``engine="auto"`` for fully periodic structures below ``_LARGE`` atoms. Why: vesin's cells
  are never smaller than the cutoff and it always scans the 27 surrounding cells, so for
  typical small crystals (plane spacings between 1 and 2 cutoffs, e.g. 5-10 A at 5 A) it
  evaluates up to ~40x more candidate pairs; on the 4764 matbench_dielectric crystals at 5 A
  it is 2-10x slower per structure than pymatgen's routine (see benchmarks/neighbors.py).

Both engines search slightly beyond the cutoff; the cut itself (``|vec| < cutoff``, self pairs
with zero shift excluded) is made here with one arithmetic, so the engines return the same
edges even for pairs exactly at the cutoff.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data._structure import Structure
from ..errors import StructureError
from ._vesin import vesin_pairs

# From this many atoms on, "auto" uses vesin with several threads.
_LARGE = 5000
ENGINES = ("auto", "vesin", "pymatgen")


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


# ---------------------------------------------------------------------------- engines
def _vesin_search_cutoff(structure: Structure, cutoff: float) -> float:
    """The cutoff vesin searches with: at least ``cutoff``, at least ~ the mean atomic spacing.

    vesin's cells are as small as the cutoff, so a tiny cutoff (the 0.1 A overlap check in
    :meth:`Structure.validate`) over a normal crystal means ~10^5 mostly empty cells and
    tens of ms per call. Searching at the mean spacing (about one atom per cell) and
    filtering costs a few extra pairs per atom instead.
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


def _box(structure: Structure) -> np.ndarray:
    # vesin ignores the box along non-periodic axes; zero those rows so that whatever they
    # hold cannot leak into the edge vectors (shifts along them are 0 anyway)
    return structure.cell if structure.pbc.all() else np.where(structure.pbc[:, None], structure.cell, 0.0)


# Engines return candidate pairs (src, dst, shift): a superset of the edges, searched slightly
# beyond the cutoff, so that the final cut below is made by one piece of arithmetic for both.
_SEARCH_MARGIN = 1e-9


def _vesin_engine(structure: Structure, cutoff: float):
    search = _vesin_search_cutoff(structure, cutoff) * (1.0 + _SEARCH_MARGIN) + _SEARCH_MARGIN
    threads = 1 if structure.n_atoms < _LARGE else 0  # below, thread start-up costs more than it saves
    pairs, shift = vesin_pairs(structure.positions, _box(structure), structure.pbc, search, threads)
    pairs = pairs.view(np.int64)
    return pairs[:, 0], pairs[:, 1], shift, False


_ALL_PERIODIC = np.ones(3, dtype=np.int64)


def _pymatgen_engine(structure: Structure, cutoff: float):
    from pymatgen.optimization.neighbors import find_points_in_spheres

    if not structure.pbc.all():
        raise ValueError("the pymatgen engine is used for fully periodic structures only")
    pos, cell = np.ascontiguousarray(structure.positions), np.ascontiguousarray(structure.cell)
    # Pairs up to cutoff + tol, self pairs included; image offsets as integral floats.
    src, dst, offset, _ = find_points_in_spheres(
        pos, pos, float(cutoff) * (1.0 + _SEARCH_MARGIN), _ALL_PERIODIC, cell, _SEARCH_MARGIN
    )
    return src, dst, offset, True


def _pairs(structure: Structure, cutoff: float, engine: str):
    """``(src, dst, shift, vec, d2, keep)``: candidate pairs and the mask of those that are edges.

    ``shift`` may be int32 or integral floats. ``.take`` is used throughout: for these
    small arrays it is several times faster than fancy indexing.
    """
    if engine == "auto":
        engine = "pymatgen" if structure.pbc.all() and structure.n_atoms < _LARGE else "vesin"
    if engine == "vesin":
        src, dst, shift, has_self = _vesin_engine(structure, cutoff)
    elif engine == "pymatgen":
        src, dst, shift, has_self = _pymatgen_engine(structure, cutoff)
    else:
        raise ValueError(f"unknown engine {engine!r}; use one of {ENGINES}")
    pos = structure.positions
    vec = pos.take(dst, axis=0) + shift @ _box(structure) - pos.take(src, axis=0)
    d2 = np.einsum("ij,ij->i", vec, vec)
    keep = d2 < cutoff * cutoff
    if has_self:
        # an atom's own image at zero shift is the only pair with src == dst and zero length
        keep &= (src != dst) | (d2 > 0.0)
    return src, dst, shift, vec, d2, keep


def _check(structure, validate: bool) -> Structure:
    structure = Structure.coerce(structure)
    if validate:
        structure.validate()
    return structure


# ---------------------------------------------------------------------------- public
def radius_graph(structure, cutoff: float, *, validate: bool = True, engine: str = "auto") -> NeighborList:
    """All directed pairs closer than ``cutoff`` (Angstrom), over periodic images.

    Self pairs with zero shift are excluded; an atom's own periodic images are neighbours.
    Edges are grouped by source atom and ordered by distance within each group (exact ties
    keep the engine's deterministic order). ``engine``: ``"auto"``, ``"vesin"`` or
    ``"pymatgen"`` (fully periodic structures only); all give the same edges.
    """
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    structure = _check(structure, validate)
    cutoff = float(cutoff)
    src, dst, shift, vec, d2, keep = _pairs(structure, cutoff, engine)
    # One stable argsort on src + d^2 / (cutoff^2 (1 + eps)) (the fraction lies in [0, 1));
    # dropped candidates get an infinite key and fall off the end.
    key = src + d2 * (1.0 / (cutoff * cutoff * (1.0 + 1e-9)))
    key[~keep] = np.inf
    order = np.argsort(key, kind="stable")[: int(np.count_nonzero(keep))]
    return NeighborList(
        src.take(order),
        dst.take(order),
        shift.take(order, axis=0).astype(np.int64),
        vec.take(order, axis=0),
        structure.n_atoms,
        cutoff,
    )


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


def knn_graph(
    structure, k: int, *, validate: bool = True, max_cutoff: float = 1e4, engine: str = "auto"
) -> NeighborList:
    """The ``k`` nearest neighbours of every atom (over periodic images), sorted by distance.

    Every atom gets exactly ``k`` edges, ordered by distance. Ties (distances equal to
    1e-10 A) are broken deterministically by (destination, shift). Raises
    :class:`StructureError` when a finite structure has fewer than ``k + 1`` atoms.
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
        src, dst, shift, vec, d2, keep = _pairs(structure, cutoff, engine)
        idx = np.flatnonzero(keep)
        src, dst, shift, vec, d2 = src.take(idx), dst.take(idx), shift.take(idx, 0), vec.take(idx, 0), d2.take(idx)
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
    take = order.take((starts[:, None] + np.arange(k)[None, :]).reshape(-1))
    return NeighborList(
        src.take(take), dst.take(take), shift.take(take, axis=0).astype(np.int64), vec.take(take, axis=0), n, None, k
    )
