"""Periodic neighbour lists by radius cutoff and by k nearest neighbours.

Edge convention (used everywhere in atomssl): an edge ``e`` goes from ``src[e]`` to the
periodic image ``shift[e]`` of ``dst[e]``, and
``vec[e] = positions[dst] + shift[e] @ cell - positions[src]``.

The search itself (two engines, vesin and pymatgen, giving the same edges) is in
:mod:`._pair_search`. Edge vectors are computed on first use (training recomputes them in
torch anyway). Public as :mod:`atomssl.graph` (``radius_graph``, ``knn_graph``, ...); kept in
:mod:`atomssl.data` because :meth:`Structure.validate` and the prototype generators need it.
"""

from __future__ import annotations

import numpy as np

from ..errors import StructureError
from ._pair_search import _ONES3, _edge_vectors, _edges
from ._structure import Structure

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


def _lexsort_edges(src, dst, shift, distance) -> np.ndarray:
    d = np.round(distance, 10)
    return np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], dst, d, src))


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
