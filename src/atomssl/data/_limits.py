"""Refuse neighbour searches that would exhaust memory (absurd cells, absurd cutoffs).

A periodic cell much smaller than the cutoff has enormously many images inside the cutoff
sphere: a 1e-3 A cube with a 5 A cutoff gives ~5e11 edges per atom, and both neighbour
engines would try to build them (minutes of CPU, then the memory is gone). Before searching,
:func:`check_search_size` estimates (i) the number of edges, from the atom density of the
periodic lattice, and (ii) the number of periodic images the engines enumerate, and raises a
:class:`~atomssl.errors.TooManyNeighborsError` naming the structure when either exceeds
:data:`MAX_PAIRS`. Hand-written because neither vesin nor pymatgen bound their output size.

:func:`pymatgen_plan` guards pymatgen's search against its own slow/huge cases (atoms far
outside the cell, sparse boxes); the vesin engine handles both itself.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import TooManyNeighborsError

#: Largest estimated number of edges (or of atom images enumerated) a search may produce.
#: At ~100 bytes per candidate pair in the engines this is ~5 GB; real structures stay far
#: below (a 100k-atom snapshot at 5 A has ~5e6 edges). Raise it for larger systems.
MAX_PAIRS = 50_000_000


def _ball(dim: int, r: float) -> float:
    return {1: 2.0 * r, 2: math.pi * r * r, 3: 4.0 / 3.0 * math.pi * r**3}[dim]


def _measure(vectors: np.ndarray) -> float:
    """Length, area or volume spanned by the rows of ``vectors``."""
    if len(vectors) == 0:
        return 1.0
    return float(math.sqrt(max(np.linalg.det(vectors @ vectors.T), 0.0)))


def search_size(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[float, float]:
    """``(edges, images)``: estimated edge count and number of atom images enumerated.

    ``edges`` assumes atoms spread uniformly: n^2 x (cutoff ball in the periodic dimensions)
    / (periodic cell measure), times the fraction of each non-periodic extent the cutoff
    covers. ``images`` is n x the number of lattice translations within the cutoff along
    each periodic axis (plane spacing h_i: ``2 ceil(cutoff / h_i) + 1`` per axis).
    """
    n = len(positions)
    pbc = np.asarray(pbc, dtype=bool)
    vecs = np.asarray(cell, dtype=np.float64)[pbc]
    dim = len(vecs)
    measure = _measure(vecs)
    if dim and not measure > 0:
        return math.inf, math.inf
    per_atom_images = 1.0
    for i in range(dim):
        h = measure / _measure(np.delete(vecs, i, axis=0))  # spacing of the lattice planes
        per_atom_images *= 2.0 * math.ceil(min(cutoff / h, 1e18)) + 1.0 if h > 0 else math.inf
    # non-periodic directions: the orthogonal complement of the periodic vectors
    if dim < 3:
        if dim:
            _, _, vt = np.linalg.svd(vecs)
            complement = vt[dim:]
        else:
            complement = np.eye(3)
        extent = np.ptp(positions @ complement.T, axis=0) if n else np.zeros(3 - dim)
        fraction = float(np.prod(np.minimum(1.0, 2.0 * cutoff / np.maximum(extent, 1e-300))))
    else:
        fraction = 1.0
    density_term = _ball(dim, cutoff) / measure if dim else 1.0
    edges = float(n) * float(n) * density_term * fraction
    return edges, float(n) * per_atom_images


def _periodic_size(cell: list[list[float]], n: int, cutoff: float) -> tuple[float, float]:
    """:func:`search_size` of a fully periodic cell in plain float arithmetic (~2 us, vs ~50 us
    with numpy: this runs before every neighbour search, including thousands of tiny crystals)."""
    (a1, a2, a3), (b1, b2, b3), (c1, c2, c3) = cell
    bc = (b2 * c3 - b3 * c2, b3 * c1 - b1 * c3, b1 * c2 - b2 * c1)
    ca = (c2 * a3 - c3 * a2, c3 * a1 - c1 * a3, c1 * a2 - c2 * a1)
    ab = (a2 * b3 - a3 * b2, a3 * b1 - a1 * b3, a1 * b2 - a2 * b1)
    volume = abs(a1 * bc[0] + a2 * bc[1] + a3 * bc[2])
    if not volume > 0:
        return math.inf, math.inf
    images = float(n)
    for x, y, z in (bc, ca, ab):
        h = volume / math.sqrt(x * x + y * y + z * z)  # spacing of the lattice planes
        images *= 2.0 * math.ceil(min(cutoff / h, 1e18)) + 1.0
    return float(n) * float(n) * _ball(3, cutoff) / volume, images


def check_search_size(structure, cutoff: float, limit: float | None = None) -> None:
    """Raise :class:`TooManyNeighborsError` when a ``cutoff`` search over ``structure`` is absurd."""
    limit = MAX_PAIRS if limit is None else limit
    pbc = structure.pbc
    if pbc[0] and pbc[1] and pbc[2]:
        edges, images = _periodic_size(structure.cell.tolist(), len(structure.numbers), cutoff)
    else:
        edges, images = search_size(structure.positions, structure.cell, pbc, cutoff)
    if edges <= limit and images <= limit:
        return
    pbc = np.asarray(structure.pbc, dtype=bool)
    spacing = ""
    if pbc.any():
        vecs = structure.cell[pbc]
        lengths = np.linalg.norm(vecs, axis=1)
        spacing = f" (shortest periodic lattice vector {lengths.min():.3g} A)"
    what = (
        f"~{edges:.2g} neighbour pairs" if edges > limit else f"~{images:.2g} atom images to search"
    )
    raise TooManyNeighborsError(
        f"a {cutoff:g} A cutoff over this cell{spacing} with {structure.n_atoms} atom(s) would give {what} "
        f"(limit {limit:.2g}, atomssl.data._limits.MAX_PAIRS): "
        + (
            "the cell is far too small for the cutoff"
            if pbc.any()
            else "too many atoms within the cutoff"
        ),
        structure.source or structure.id or None,
        structure.index,
    )


#: Largest cell-list grid (cubes) pymatgen's search may allocate (27 int64 per cube): past it,
#: a sparse box (a few atoms spread over 1000 A) would need gigabytes, so vesin is used instead.
PYMATGEN_MAX_CUBES = 200_000


def pymatgen_plan(
    positions: np.ndarray, cell: np.ndarray, cutoff: float, margin: float = 2.0
) -> str:
    """How to run pymatgen's ``find_points_in_spheres`` safely on a periodic structure.

    ``"ok"``: as is; ``"wrap"``: wrap the atoms into the cell first (some lie more than
    ``margin`` cells outside: pymatgen loops over every lattice translation between them, ~forever
    for an atom 1e10 A away); ``"vesin"``: do not use pymatgen (its cube grid spans the atoms'
    bounding box in steps of the cutoff, ~(extent / cutoff)^3 cubes: gigabytes for a sparse box).
    Cheap (bounding box + plain float arithmetic): it runs before every pymatgen search.
    """
    if len(positions) == 0:
        return "ok"
    m = cell.tolist()
    (a1, a2, a3), (b1, b2, b3), (c1, c2, c3) = m
    rows = (
        (b2 * c3 - b3 * c2, b3 * c1 - b1 * c3, b1 * c2 - b2 * c1),
        (c2 * a3 - c3 * a2, c3 * a1 - c1 * a3, c1 * a2 - c2 * a1),
        (a2 * b3 - a3 * b2, a3 * b1 - a1 * b3, a1 * b2 - a2 * b1),
    )
    volume = a1 * rows[0][0] + a2 * rows[0][1] + a3 * rows[0][2]
    if volume == 0.0:
        return "vesin"
    edge = max(cutoff, 1.0)  # pymatgen searches at least 1 A, with cubes as large as that
    # Fast path (99% of matbench crystals, ~3 us): |fractional coordinate i| <= max|x| |r_i|_1 / |V|;
    # up to 10 cells out, pymatgen's loop over translations costs little more than usual.
    big = float(np.abs(positions).max())
    (p1, p2, p3), (q1, q2, q3), (s1, s2, s3) = rows
    r1 = max(abs(p1) + abs(p2) + abs(p3), abs(q1) + abs(q2) + abs(q3), abs(s1) + abs(s2) + abs(s3))
    if (
        big * r1 <= 10.0 * abs(volume)
        and math.ceil(2.0 * (big + edge) / edge) ** 3 <= PYMATGEN_MAX_CUBES
    ):
        return "ok"
    lo, hi = positions.min(axis=0).tolist(), positions.max(axis=0).tolist()
    wrap = False
    for r in rows:  # fractional coordinate i = position . r_i / volume
        f_hi = sum(x * (h if x > 0 else l) for x, l, h in zip(r, lo, hi)) / volume
        f_lo = sum(x * (l if x > 0 else h) for x, l, h in zip(r, lo, hi)) / volume
        if volume < 0:
            f_lo, f_hi = f_hi, f_lo
        if f_lo < -margin or f_hi > 1.0 + margin:
            wrap = True
            break
    if wrap:  # after wrapping the atoms span at most the cell's bounding box
        extent = [abs(m[0][c]) + abs(m[1][c]) + abs(m[2][c]) for c in range(3)]
    else:
        extent = [h - l for l, h in zip(lo, hi)]
    cubes = 1.0
    for e in extent:
        cubes *= math.ceil((e + 2.0 * edge) / edge)
    if cubes > PYMATGEN_MAX_CUBES:
        return "vesin"
    return "wrap" if wrap else "ok"
