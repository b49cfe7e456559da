"""The pair search behind every neighbour list: candidate pairs within a cutoff.

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
cutoff``, self pairs with zero shift excluded) is made in :func:`_edges`, and pairs within
``_BAND`` of the cutoff are decided with atomssl's own arithmetic for ``vec``, so the engines
return the same edges even for pairs exactly at the cutoff (e.g. cutoff = lattice constant).

It lives in :mod:`atomssl.data` (not :mod:`atomssl.graph`, which re-exports the public
neighbour lists) because :meth:`Structure.validate` needs it for its overlap check.
"""

from __future__ import annotations

import numpy as np

from ._limits import check_search_size, pymatgen_plan
from ._structure import Structure
from ._vesin import vesin_pairs

# From this many atoms on, "auto" uses vesin with several threads.
_LARGE = 5000
ENGINES = ("auto", "vesin", "pymatgen")

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
