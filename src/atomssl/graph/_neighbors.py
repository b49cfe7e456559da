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

Both engines search slightly beyond the cutoff and report distances; the cut (``|vec| <
cutoff``, self pairs with zero shift excluded) is made here, and pairs within ``_BAND`` of the
cutoff are decided with atomssl's own arithmetic for ``vec``, so the engines return the same
edges even for pairs exactly at the cutoff (e.g. cutoff = lattice constant).
Edge vectors are computed on first use (training recomputes them in torch anyway).
"""

from __future__ import annotations

import numpy as np

from ..data._structure import Structure
from ..errors import StructureError
from ._limits import check_search_size, pymatgen_plan
from ._vesin import vesin_pairs

# From this many atoms on, "auto" uses vesin with several threads.
_LARGE = 5000
ENGINES = ("auto", "vesin", "pymatgen")
#: relative tolerance on the k-th neighbour distance within which neighbours count as tied
#: (``knn_graph(ties=True)``, :func:`atomssl.graph.tie_weights`): symmetry-equivalent neighbours
#: agree to ~1e-7 in float32, distinct shells of real structures differ by far more than 1e-5
TIE_RTOL = 1e-5


class NeighborList:
    """Directed edges of one structure (both i->j and j->i are present).

    ``src``, ``dst`` (E,) int64; ``shift`` (E, 3) int64 image offsets of ``dst`` in lattice
    vectors; ``vec`` (E, 3) float64 Cartesian vectors ``positions[dst] + shift @ cell -
    positions[src]``; ``distance`` (E,) their lengths. ``vec`` may be given, or computed on
    first access from ``positions`` and ``cell``.
    """

    __slots__ = (
        "src",
        "dst",
        "shift",
        "n_atoms",
        "cutoff",
        "k",
        "_vec",
        "_positions",
        "_cell",
        "_distance",
    )

    def __init__(
        self,
        src: np.ndarray,
        dst: np.ndarray,
        shift: np.ndarray,
        vec: np.ndarray | None,
        n_atoms: int,
        cutoff: float | None = None,
        k: int | None = None,
        *,
        positions: np.ndarray | None = None,
        cell: np.ndarray | None = None,
        distance: np.ndarray | None = None,
    ) -> None:
        if vec is None and (positions is None or cell is None):
            raise ValueError("give vec, or positions and cell to compute it from")
        self.src, self.dst, self.shift = src, dst, shift
        self.n_atoms, self.cutoff, self.k = int(n_atoms), cutoff, k
        self._vec, self._positions, self._cell, self._distance = vec, positions, cell, distance

    @property
    def vec(self) -> np.ndarray:
        if self._vec is None:
            self._vec = _edge_vectors(self._positions, self._cell, self.src, self.dst, self.shift)
        return self._vec

    @property
    def distance(self) -> np.ndarray:
        """Edge lengths (the search engine's, equal to ``|vec|`` up to rounding)."""
        if self._distance is None:
            self._distance = np.sqrt(np.square(self.vec) @ _ONES3)
        return self._distance

    def __len__(self) -> int:
        return int(len(self.src))

    def __repr__(self) -> str:
        return f"NeighborList(n_atoms={self.n_atoms}, edges={len(self)}, cutoff={self.cutoff}, k={self.k})"

    def sorted(self) -> NeighborList:
        """Edges ordered by source atom, then distance (rounded to 1e-10 A), then destination and shift."""
        return self._take(_lexsort_edges(self.src, self.dst, self.shift, self.distance))

    def _take(self, idx: np.ndarray) -> NeighborList:
        return NeighborList(
            self.src.take(idx),
            self.dst.take(idx),
            self.shift.take(idx, axis=0),
            None if self._vec is None else self._vec.take(idx, axis=0),
            self.n_atoms,
            self.cutoff,
            self.k,
            positions=self._positions,
            cell=self._cell,
            distance=None if self._distance is None else self._distance.take(idx),
        )


_ONES3 = np.ones(3)


def _edge_vectors(positions, cell, src, dst, shift) -> np.ndarray:
    """``positions[dst] + shift @ cell - positions[src]``, element-wise (bit-identical whether
    ``cell`` is one (3, 3) matrix or a per-edge (E, 3, 3) stack)."""
    shift = shift.astype(np.float64, copy=False)
    vec = positions.take(dst, axis=0)
    vec -= positions.take(src, axis=0)
    vec += shift[:, 0:1] * cell[..., 0, :]
    vec += shift[:, 1:2] * cell[..., 1, :]
    vec += shift[:, 2:3] * cell[..., 2, :]
    return vec


def _lexsort_edges(src, dst, shift, distance) -> np.ndarray:
    d = np.round(distance, 10)
    return np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], dst, d, src))


# ---------------------------------------------------------------------------- engines
def _vesin_search_cutoff(structure: Structure, cutoff: float) -> float:
    """The cutoff vesin searches with: at least ``cutoff``, at least ~ the mean atomic spacing.

    vesin's cells are as small as the cutoff, so a tiny cutoff (e.g. an overlap check at
    0.1 A) over a normal crystal means ~10^5 mostly empty cells and tens of ms per call. Searching at the mean spacing (about one atom per cell) and
    filtering costs a few extra pairs per atom instead.
    """
    n = structure.n_atoms
    if n == 0:
        return cutoff
    if structure.pbc.all():
        volume = structure.volume
    else:
        extent = np.ptp(structure.positions, axis=0) + np.abs(structure.cell[structure.pbc]).sum(
            axis=0
        )
        volume = float(np.prod(np.maximum(extent, 1.0)))
    spacing = (volume / n) ** (1.0 / 3.0)
    if not np.isfinite(spacing):
        return cutoff
    return max(cutoff, min(spacing, 1e3))


def _box(structure: Structure) -> np.ndarray:
    # vesin ignores the box along non-periodic axes; zero those rows so that whatever they
    # hold cannot leak into the edge vectors (shifts along them are 0 anyway)
    return (
        structure.cell
        if structure.pbc.all()
        else np.where(structure.pbc[:, None], structure.cell, 0.0)
    )


# Engines return candidate pairs (src, dst, shift): a superset of the edges, searched slightly
# beyond the cutoff, so that the final cut below is made by one piece of arithmetic for both.
_SEARCH_MARGIN = 1e-9
# Engine distances and atomssl's |vec| agree far better than this (A); pairs whose engine
# distance is within _BAND of the cutoff are re-decided with atomssl's arithmetic.
_BAND = 1e-7


def _vesin_engine(structure: Structure, cutoff: float):
    search = _vesin_search_cutoff(structure, cutoff) * (1.0 + _SEARCH_MARGIN) + _SEARCH_MARGIN
    threads = (
        1 if structure.n_atoms < _LARGE else 0
    )  # below, thread start-up costs more than it saves
    pairs, shift, distance = vesin_pairs(
        structure.positions, _box(structure), structure.pbc, search, threads
    )
    pairs = pairs.view(np.int64)
    return pairs[:, 0], pairs[:, 1], shift, distance, False


_ALL_PERIODIC = np.ones(3, dtype=np.int64)


_find_points_in_spheres = None


def _pymatgen_engine(structure: Structure, cutoff: float):
    global _find_points_in_spheres
    if _find_points_in_spheres is None:
        from pymatgen.optimization.neighbors import find_points_in_spheres

        _find_points_in_spheres = find_points_in_spheres
    pos, cell = np.ascontiguousarray(structure.positions), np.ascontiguousarray(structure.cell)
    if cutoff < 1.0:  # find_points_in_spheres searches at least 1 A (its min_r), then filters
        check_search_size(structure, 1.0)
    plan = pymatgen_plan(pos, cell, cutoff)  # guards against pymatgen's slow/huge cases
    if plan == "vesin":
        return _vesin_engine(structure, cutoff)
    image = None
    if plan == "wrap":  # pymatgen would loop over every cell in between: wrap first
        image = np.floor(np.linalg.solve(cell.T, pos.T).T)
        pos = np.ascontiguousarray(pos - image @ cell)
    # Pairs with d^2 < r^2 + tol, grouped by source, self pairs included; image offsets as
    # integral floats.
    src, dst, offset, distance = _find_points_in_spheres(
        pos, pos, float(cutoff) * (1.0 + _SEARCH_MARGIN), _ALL_PERIODIC, cell, _SEARCH_MARGIN
    )
    if image is not None:  # offsets relative to the given (unwrapped) positions
        offset = offset - image.take(dst, axis=0) + image.take(src, axis=0)
    return src, dst, offset, distance, True


def _edges(structure: Structure, cutoff: float, engine: str):
    """``(src, dst, shift int64, distance, box)`` of the edges of one structure, grouped by source.

    Written for small arrays, where numpy's per-call overhead dominates the arithmetic
    (``.take`` rather than fancy indexing, few passes). Batching several structures into one
    set of array operations was measured and is not faster here.
    """
    check_search_size(
        structure, cutoff
    )  # refuse absurd searches (e.g. a cell far smaller than the cutoff)
    periodic = structure.pbc.all()
    # (auto: not pymatgen below 1 A, where it searches at 1 A anyway, a flood in tiny cells)
    if engine == "vesin" or (
        engine == "auto" and not (periodic and len(structure.numbers) < _LARGE and cutoff >= 1.0)
    ):
        src, dst, shift, dist, has_self = _vesin_engine(structure, cutoff)
    elif engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; use one of {ENGINES}")
    elif periodic:
        src, dst, shift, dist, has_self = _pymatgen_engine(structure, cutoff)
    else:
        raise ValueError("the pymatgen engine is used for fully periodic structures only")
    box = structure.cell if periodic else _box(structure)
    lo = cutoff - _BAND
    keep = dist < lo
    if has_self:
        # an atom's own image at zero shift is the only pair with src == dst and ~zero length
        keep &= (src != dst) | (dist > _BAND)
    if len(dist) and dist.max() > lo:
        near = np.flatnonzero((dist > lo) & (dist <= cutoff + _BAND))
        if len(near):
            # decide pairs at the cutoff with the same arithmetic as NeighborList.vec
            vec = _edge_vectors(
                structure.positions, box, src.take(near), dst.take(near), shift.take(near, axis=0)
            )
            d2 = np.square(vec) @ _ONES3
            keep[near] = (d2 < cutoff * cutoff) & ((src.take(near) != dst.take(near)) | (d2 > 0.0))
    # Both engines emit pairs grouped by source atom (pymatgen loops over centres, vesin is
    # asked to sort); the tests check it, so no re-sort here.
    idx = np.flatnonzero(keep)
    return (
        src.take(idx),
        dst.take(idx),
        shift.take(idx, axis=0).astype(np.int64),
        dist.take(idx),
        box,
    )


def _check(structure, validate: bool) -> Structure:
    structure = Structure.coerce(structure)
    if validate:
        structure.validate()
    return structure


# ---------------------------------------------------------------------------- public
def radius_graph(
    structure, cutoff: float, *, validate: bool = True, engine: str = "auto"
) -> NeighborList:
    """All directed pairs closer than ``cutoff`` (Angstrom), over periodic images.

    Self pairs with zero shift are excluded; an atom's own periodic images are neighbours.
    Edges are grouped by source atom (ascending); within a group the order is the engine's
    (deterministic; vesin: by destination and shift). Use :meth:`NeighborList.sorted` for
    distance order. ``engine``: ``"auto"``, ``"vesin"`` or ``"pymatgen"`` (fully periodic
    structures only); all give the same edges.
    """
    return radius_graphs([structure], cutoff, validate=validate, engine=engine)[0]


def radius_graphs(
    structures, cutoff: float, *, validate: bool = True, engine: str = "auto"
) -> list[NeighborList]:
    """:func:`radius_graph` of each of many structures."""
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    cutoff = float(cutoff)
    out: list[NeighborList] = []
    for s in structures:
        s = _check(s, validate)
        src, dst, shift, dist, box = _edges(s, cutoff, engine)
        out.append(
            NeighborList(
                src,
                dst,
                shift,
                None,
                len(s.numbers),
                cutoff,
                positions=s.positions,
                cell=box,
                distance=dist,
            )
        )
    return out


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
    structure,
    k: int,
    *,
    validate: bool = True,
    max_cutoff: float = 1e4,
    engine: str = "auto",
    ties: bool = False,
) -> NeighborList:
    """The ``k`` nearest neighbours of every atom (over periodic images), sorted by distance.

    Every atom gets exactly ``k`` edges, ordered by distance. Ties (distances equal to
    1e-10 A) are broken deterministically by (destination, shift). Raises
    :class:`StructureError` when a finite structure has fewer than ``k + 1`` atoms.

    ``ties=True``: an atom whose ``k``-th and ``k+1``-th neighbours are tied (within
    ``TIE_RTOL`` of the ``k``-th distance, as in rock salt or bcc) gets the whole tied shell,
    so more than ``k`` edges; which atoms are neighbours then no longer depends on atom order.
    :func:`atomssl.graph.tie_weights` gives the weights (summing to ``k``) that make models of
    such clouds exact functions of geometry.
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
        src, dst, shift, dist, box = _edges(structure, cutoff, engine)
        counts = np.bincount(src, minlength=n)
        if counts.min() >= k:
            order = _lexsort_edges(src, dst, shift, dist)
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            if not ties:
                break
            # the whole tied shell must lie inside the searched sphere (or be all there is)
            kth = dist.take(order.take(starts + k - 1))
            reach = kth * (1.0 + 2.0 * TIE_RTOL)
            if reach.max() < cutoff or (not structure.pbc.any() and counts.min() == n - 1):
                break
        if cutoff > max_cutoff:
            raise StructureError(
                f"could not find {k} neighbours within {max_cutoff} A",
                structure.source or structure.id,
                structure.index,
            )
        cutoff *= 1.5
    if ties:
        # sorted per atom: keep each atom's edges up to the end of its k-th shell
        sorted_dist = dist.take(order)
        keep = sorted_dist <= np.repeat(kth * (1.0 + TIE_RTOL), counts)
        take = order[keep]
        return NeighborList(
            src.take(take), dst.take(take), shift.take(take, axis=0), None, n, None, k,
            positions=structure.positions, cell=box, distance=dist.take(take),
        )  # fmt: skip
    take = order.take((starts[:, None] + np.arange(k)[None, :]).reshape(-1))
    return NeighborList(
        src.take(take),
        dst.take(take),
        shift.take(take, axis=0),
        None,
        n,
        None,
        k,
        positions=structure.positions,
        cell=box,
        distance=dist.take(take),
    )
