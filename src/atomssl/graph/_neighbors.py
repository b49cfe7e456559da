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
        return np.sqrt(np.square(self.vec) @ _ONES3)

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


_ONES3 = np.ones(3)


def _engine_for(structure: Structure, engine: str) -> str:
    if engine == "auto":
        return "pymatgen" if structure.n_atoms < _LARGE and structure.pbc.all() else "vesin"
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; use one of {ENGINES}")
    return engine


def _edges(structures: list[Structure], cutoff: float, engine: str):
    """Edges of several structures: one engine call each, then one vectorised cut for all.

    Returns ``src, dst`` (indices local to each structure), ``shift`` (int64), ``vec``,
    ``d2`` (squared lengths) for the kept edges, grouped by structure then source atom, and
    ``counts`` (edges per structure). Batching matters because for small crystals numpy's
    per-call overhead, not arithmetic, dominates; the result for a structure does not depend
    on the batch it is in (same element-wise arithmetic).
    """
    n = len(structures)
    srcs, dsts, shifts, boxes = [], [], [], []
    counts = np.empty(n, dtype=np.int64)
    has_self = False
    for b, s in enumerate(structures):
        if _engine_for(s, engine) == "vesin":
            src, dst, shift, self_pairs = _vesin_engine(s, cutoff)
        else:
            src, dst, shift, self_pairs = _pymatgen_engine(s, cutoff)
        has_self |= self_pairs
        srcs.append(src)
        dsts.append(dst)
        shifts.append(shift)
        boxes.append(s.cell if s.pbc.all() else _box(s))
        counts[b] = len(src)
    if n == 1:
        src, dst, shift, cell = srcs[0], dsts[0], shifts[0], boxes[0]
        pos = structures[0].positions
        base = None
    else:
        sizes = np.fromiter((s.n_atoms for s in structures), dtype=np.int64, count=n)
        graph = np.repeat(np.arange(n), counts)
        base = np.repeat(np.cumsum(sizes) - sizes, counts)
        src, dst = np.concatenate(srcs), np.concatenate(dsts)
        shift = np.concatenate([np.asarray(x, dtype=np.float64) for x in shifts])
        cell = np.stack(boxes).take(graph, axis=0)  # (E, 3, 3)
        pos = np.concatenate([s.positions for s in structures])
    gsrc = src if base is None else src + base
    gdst = dst if base is None else dst + base
    # vec = pos[dst] + shift @ cell - pos[src], written element-wise so that it is bit-identical
    # whether cell is one (3, 3) box or a per-edge (E, 3, 3) stack
    fshift = shift.astype(np.float64, copy=False)
    vec = pos.take(gdst, axis=0)
    vec -= pos.take(gsrc, axis=0)
    vec += fshift[:, 0:1] * cell[..., 0, :]
    vec += fshift[:, 1:2] * cell[..., 1, :]
    vec += fshift[:, 2:3] * cell[..., 2, :]
    d2 = np.square(vec) @ _ONES3
    keep = d2 < cutoff * cutoff
    if has_self:
        # an atom's own image at zero shift is the only pair with src == dst and zero length
        keep &= (src != dst) | (d2 > 0.0)
    idx = np.flatnonzero(keep)
    gsrc = gsrc.take(idx)
    if not (gsrc[:-1] <= gsrc[1:]).all():  # both engines emit pairs grouped by source already
        idx = idx.take(np.argsort(gsrc, kind="stable"))
    if n > 1:
        edge_end = np.cumsum(counts)
        kept_before = np.concatenate([[0], np.cumsum(keep)])
        counts = kept_before[edge_end] - kept_before[edge_end - counts]
    else:
        counts = np.array([len(idx)])
    return (
        src.take(idx),
        dst.take(idx),
        shift.take(idx, axis=0).astype(np.int64),
        vec.take(idx, axis=0),
        d2.take(idx),
        counts,
    )


def _check(structure, validate: bool) -> Structure:
    structure = Structure.coerce(structure)
    if validate:
        structure.validate()
    return structure


# ---------------------------------------------------------------------------- public
def radius_graph(structure, cutoff: float, *, validate: bool = True, engine: str = "auto") -> NeighborList:
    """All directed pairs closer than ``cutoff`` (Angstrom), over periodic images.

    Self pairs with zero shift are excluded; an atom's own periodic images are neighbours.
    Edges are grouped by source atom (ascending); within a group the order is the engine's
    (deterministic; vesin: by destination and shift). Use :meth:`NeighborList.sorted` for
    distance order. ``engine``: ``"auto"``, ``"vesin"`` or ``"pymatgen"`` (fully periodic
    structures only); all give the same edges.
    """
    return radius_graphs([structure], cutoff, validate=validate, engine=engine)[0]


def radius_graphs(
    structures, cutoff: float, *, validate: bool = True, engine: str = "auto", chunk: int = 256
) -> list[NeighborList]:
    """:func:`radius_graph` of many structures; same result, several times faster for small crystals."""
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    cutoff = float(cutoff)
    structures = [_check(s, validate) for s in structures]
    out: list[NeighborList] = []
    for start in range(0, len(structures), chunk):
        part = structures[start : start + chunk]
        src, dst, shift, vec, _, counts = _edges(part, cutoff, engine)
        end = 0
        for s, c in zip(part, counts.tolist()):
            begin, end = end, end + c
            out.append(NeighborList(src[begin:end], dst[begin:end], shift[begin:end], vec[begin:end], s.n_atoms, cutoff))
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
        src, dst, shift, vec, d2, _ = _edges([structure], cutoff, engine)
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
    return NeighborList(src.take(take), dst.take(take), shift.take(take, axis=0), vec.take(take, axis=0), n, None, k)
