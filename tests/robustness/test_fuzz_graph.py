"""Neighbour lists on absurd but valid-looking structures: brute force, or a typed refusal, in time.

hypothesis draws cells from 1e-3 A to 1e4 A, skewed and nearly singular, any periodicity, atoms
up to 1e4 cells outside the cell, duplicated atoms, cutoffs 0.1-10 A. Each radius/kNN search runs
in a forked child with a time bound (``robust_helpers``). It must either equal a brute-force
search over periodic images, or raise a :class:`StructureError` (a cell far smaller than the
cutoff: :class:`TooManyNeighborsError`, whose size estimate must then really exceed the limit).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from robust_helpers import bounded

from atomssl.data import Structure, _limits
from atomssl.errors import OverlapError, SingularCellError, StructureError, TooManyNeighborsError
from atomssl.graph import knn_graph, radius_graph, to_graph

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a hang costs a full time bound per try
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
BRUTE_LIMIT = 3e6  # largest (pairs x images) the brute force below is asked to enumerate
FUZZ_LIMIT = 2e5  # atomssl.data._limits.MAX_PAIRS inside the fuzzed searches
BAND = 1e-7  # pairs this close to the cutoff may fall either way (rounding)


# ----------------------------------------------------------------------------- brute force
def _full_cell(s: Structure) -> np.ndarray:
    """The cell with non-periodic rows replaced by unit vectors orthogonal to the periodic ones."""
    cell = np.where(s.pbc[:, None], s.cell, 0.0)
    per = cell[s.pbc]
    if len(per) < 3:
        _, _, vt = np.linalg.svd(per) if len(per) else (None, None, np.eye(3))
        comp = vt[len(per) :]
        cell[~s.pbc] = comp
    return cell


def _image_ranges(s: Structure, radius: float) -> list[range]:
    cell = _full_cell(s)
    frac = np.linalg.solve(cell.T, s.positions.T).T
    h = 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)  # lattice-plane spacings
    out = []
    for i in range(3):
        if not s.pbc[i]:
            out.append(range(0, 1))
            continue
        m = int(np.ceil(radius / h[i] + np.ptp(frac[:, i]))) + 1
        out.append(range(-m, m + 1))
    return out


def brute_cost(s: Structure, radius: float) -> float:
    return float(s.n_atoms) ** 2 * float(np.prod([len(r) for r in _image_ranges(s, radius)]))


def brute_pairs(s: Structure, radius: float):
    """All (src, dst, shift) with |pos[dst] + shift @ cell - pos[src]| < radius, and the lengths."""
    cell = np.where(s.pbc[:, None], s.cell, 0.0)
    shifts = np.array(list(itertools.product(*_image_ranges(s, radius))), dtype=np.int64)
    pos = s.positions
    vec = (
        pos[None, None, :, :] + (shifts @ cell)[:, None, None, :] - pos[None, :, None, :]
    )  # (S, src, dst, 3)
    d = np.linalg.norm(vec, axis=-1)
    k, i, j = np.nonzero(d < radius + 2 * BAND)
    dist = d[k, i, j]
    keep = ~((i == j) & (shifts[k] == 0).all(axis=1))
    return i[keep], j[keep], shifts[k][keep], dist[keep]


def _edge_set(src, dst, shift, dist, cutoff, band=BAND):
    """Edges certainly inside the cutoff, and those within ``band`` of it (allowed either way)."""
    inside, edge = set(), set()
    for a, b, sh, d in zip(
        np.asarray(src).tolist(),
        np.asarray(dst).tolist(),
        np.asarray(shift).tolist(),
        np.asarray(dist).tolist(),
    ):
        (edge if abs(d - cutoff) <= band else inside).add((a, b, *sh))
    return inside, edge


def assert_same_as_brute(g, s: Structure, cutoff: float) -> None:
    """``g`` holds every brute-force edge, up to pairs within ``BAND`` of the cutoff."""
    b_in, b_edge = _edge_set(*brute_pairs(s, cutoff), cutoff)
    g_in, g_edge = _edge_set(g.src, g.dst, g.shift, g.distance, cutoff)
    assert g_in | g_edge >= b_in, f"missing edges {sorted(b_in - g_in - g_edge)[:5]}"
    assert g_in <= b_in | b_edge, f"extra edges {sorted(g_in - b_in - b_edge)[:5]}"


# ----------------------------------------------------------------------------- structures
@st.composite
def absurd_structures(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 6))
    scale = 10.0 ** draw(st.floats(-3.0, 4.0))
    cell = scale * (np.eye(3) + draw(st.floats(0.0, 0.6)) * rng.normal(size=(3, 3)))
    if draw(st.booleans()):  # nearly singular: c almost in the plane of a and b
        t = draw(st.floats(0.0, 1.0))
        cell[2] = t * cell[0] + (1 - t) * cell[1] + 10.0 ** -draw(st.floats(1.0, 7.0)) * cell[2]
    frac = rng.uniform(0.0, 1.0, size=(n, 3))
    if draw(st.booleans()):  # some atoms far outside the cell
        far = rng.integers(-1, 2, size=(n, 3)) * np.round(
            10.0 ** rng.uniform(0, draw(st.floats(0.0, 4.0)), size=(n, 1))
        )
        frac = frac + far
    pos = frac @ cell
    numbers = rng.integers(1, 95, size=n)
    if n > 1 and draw(st.booleans()):  # a duplicated atom
        pos[-1] = pos[0]
    pbc = np.array(draw(st.lists(st.booleans(), min_size=3, max_size=3)))
    cutoff = 10.0 ** draw(st.floats(-1.0, 1.0))
    return Structure(numbers, pos, cell, pbc), cutoff


def _search(s: Structure, cutoff: float, k: int, engine: str, validate: bool):
    """Runs in the child: the searches, and the brute force where it is affordable."""
    # A low limit (the default allows ~1e7-edge searches, seconds each): accepted searches stay
    # quick, and the refusal path is exercised often.
    _limits.MAX_PAIRS = FUZZ_LIMIT
    out = {}
    try:
        g = radius_graph(s, cutoff, validate=validate, engine=engine)
        out["radius"] = (g.src, g.dst, g.shift, g.distance, np.linalg.norm(g.vec, axis=1))
    except StructureError as err:  # (class names, message): typed errors only, others propagate
        out["radius"] = Refusal([c.__name__ for c in type(err).__mro__], str(err))
    try:
        g = knn_graph(s, k, validate=validate, engine=engine)
        out["knn"] = (g.src, g.dst, g.shift, g.distance)
    except StructureError as err:
        out["knn"] = Refusal([c.__name__ for c in type(err).__mro__], str(err))
    if brute_cost(s, cutoff) <= BRUTE_LIMIT:
        out["brute"] = brute_pairs(s, cutoff)
    knn = out["knn"]
    if not isinstance(knn, Refusal) and len(knn[3]):
        r = float(knn[3].max()) + 1e-6
        if brute_cost(s, r) <= BRUTE_LIMIT:
            out["brute_knn"] = brute_pairs(s, r)
    return out


@dataclass
class Refusal:
    types: list[str]
    message: str


def _check_refusal(err: Refusal, s: Structure, cutoff: float | None) -> None:
    assert "StructureError" in err.types and "\n" not in err.message, err
    if cutoff is not None and "TooManyNeighborsError" in err.types:
        edges, images = _limits.search_size(s.positions, s.cell, s.pbc, cutoff)
        assert max(edges, images) > FUZZ_LIMIT, (edges, images)


def _check_structure(s: Structure, cutoff: float, engine: str, validate: bool) -> None:
    k = 3
    outcome = bounded(_search, s, cutoff, k, engine, validate)
    assert outcome.kind == "ok", f"{s}\ncutoff={cutoff}\n{outcome.describe()}"
    res = outcome.value
    radius = res["radius"]
    event(
        "radius: "
        + (
            "refused: " + radius.types[0]
            if isinstance(radius, Refusal)
            else "brute-checked"
            if "brute" in res
            else "ok"
        )
    )
    if isinstance(radius, Refusal):
        _check_refusal(radius, s, cutoff)
    else:
        src, dst, shift, dist, vec_len = radius
        np.testing.assert_allclose(vec_len, dist, rtol=1e-9, atol=1e-9 * max(1.0, cutoff))
        assert (dist < cutoff).all()
        if "brute" in res:
            b_in, b_edge = _edge_set(*res["brute"], cutoff)
            g_in, g_edge = _edge_set(src, dst, shift, dist, cutoff)
            assert g_in | g_edge >= b_in, f"missing edges {sorted(b_in - g_in - g_edge)[:5]}\n{s}"
            assert g_in <= b_in | b_edge, f"extra edges {sorted(g_in - b_in - b_edge)[:5]}\n{s}"
            assert len(b_in) == 0 or len(g_in) > 0
    knn = res["knn"]
    event(
        "knn: "
        + (
            "refused: " + knn.types[0]
            if isinstance(knn, Refusal)
            else "brute-checked"
            if "brute_knn" in res
            else "ok"
        )
    )
    if isinstance(knn, Refusal):
        _check_refusal(knn, s, None)
    else:
        src, dst, shift, dist = knn
        assert (np.bincount(src, minlength=s.n_atoms) == k).all()
        if "brute_knn" in res:
            bs, _, _, bd = res["brute_knn"]
            for i in range(s.n_atoms):
                ref = np.sort(bd[bs == i])[:k]
                np.testing.assert_allclose(np.sort(dist[src == i]), ref, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- hypothesis
@FUZZ
@given(case=absurd_structures(), engine=st.sampled_from(["auto", "vesin", "pymatgen"]))
def test_absurd_structures_brute_force_or_typed_error(case, engine):
    s, cutoff = case
    if engine == "pymatgen" and not s.pbc.all():
        engine = "auto"
    _check_structure(s, cutoff, engine, validate=False)


@settings(FUZZ, max_examples=30)
@given(case=absurd_structures())
def test_absurd_structures_with_validation(case):
    """With validation (the default) a bad structure is refused with its typed error first."""
    s, cutoff = case
    _check_structure(s, cutoff, "auto", validate=True)


# ----------------------------------------------------------------------------- named cases
def _one_atom(a: float, pbc=True) -> Structure:
    return Structure([14], [[0.0, 0.0, 0.0]], np.eye(3) * a, pbc)


def test_tiny_cell_is_refused_fast_not_built():
    """A 1e-3 A cell with pbc and a 5 A cutoff: ~5e11 edges. Refused in well under a second
    (before the guard, this ran for minutes and exhausted memory)."""
    s = _one_atom(1e-3)
    for engine in ("auto", "vesin", "pymatgen"):
        t0 = time.perf_counter()
        with pytest.raises(
            TooManyNeighborsError, match=r"5 A cutoff.*0\.001 A.*5\.2e\+11 neighbour pairs"
        ):
            radius_graph(s, 5.0, validate=False, engine=engine)
        assert time.perf_counter() - t0 < 1.0
    with pytest.raises(OverlapError, match="0.001 A from its own periodic image"):
        radius_graph(s, 5.0)  # validation names the real problem
    with pytest.raises((OverlapError, TooManyNeighborsError)):  # the training-graph path too
        to_graph(s, cutoff=5.0)
    s2 = Structure(
        [14, 8], [[0, 0, 0], [0.5, 0.5, 0.5]], np.eye(3) * 1e-2, True, source="tiny.cif", index=3
    )
    with pytest.raises(TooManyNeighborsError, match=r"^tiny\.cif \[index 3\]: too many neighbours"):
        radius_graph(s2, 5.0, validate=False)


def test_tiny_cell_along_one_axis_only():
    """Wire: only the periodic axes count. A 1e-3 A period at 5 A is 4e4 edges, computed exactly;
    1e-7 A is 4e8, refused; the same tiny vector along a non-periodic axis is harmless."""
    cell = np.diag([1e-3, 10.0, 10.0])
    s = Structure([6, 6], [[0, 0, 0], [0, 1.4, 0]], cell, [True, False, False])
    g = radius_graph(s, 5.0, validate=False)
    assert len(g) > 30_000
    assert_same_as_brute(g, s, 5.0)
    with pytest.raises(TooManyNeighborsError, match="1e-07 A"):
        radius_graph(s.copy(cell=np.diag([1e-7, 10.0, 10.0])), 5.0, validate=False)
    ok = Structure([6, 6], [[0, 0, 0], [0, 1.4, 0]], cell, [False, True, True])
    g = radius_graph(ok, 5.0)
    assert sorted(zip(g.src.tolist(), g.dst.tolist())) == [(0, 1), (1, 0)]


def test_small_cells_below_the_limit_still_match_brute_force():
    """The guard only refuses absurd searches: a 0.3 A cell at 5 A (~2e4 images) is computed."""
    s = _one_atom(0.3)
    g = radius_graph(s, 5.0)
    assert len(g) > 10_000
    assert_same_as_brute(g, s, 5.0)


def test_huge_cell_tiny_cutoff_and_huge_cell_knn():
    s = Structure([1, 1, 8], [[0, 0, 0], [0.7, 0.0, 0.0], [5e5, 5e5, 5e5]], np.eye(3) * 1e6, True)
    g = radius_graph(s, 1.0)
    assert sorted(zip(g.src.tolist(), g.dst.tolist())) == [(0, 1), (1, 0)]
    with pytest.raises(
        StructureError, match=r"^<structure>: .*could not find 1 neighbours within 10000"
    ):
        knn_graph(s, 1)  # the O atom's nearest neighbour is 8.7e5 A away
    nl = knn_graph(s, 2, max_cutoff=2e6)
    assert (np.bincount(nl.src, minlength=3) == 2).all()
    np.testing.assert_allclose(
        nl.distance[nl.src == 0], [0.7, np.linalg.norm([5e5, 5e5, 5e5])], rtol=1e-12
    )


def test_huge_coordinates_are_refused_not_rounded_into_wrong_graphs():
    s = Structure([14, 14], [[0, 0, 0], [1.2, 1.1, 0.3]], np.eye(3) * 4, True)
    far = s.copy(positions=s.positions + 1e300)
    with pytest.raises(StructureError, match="too large to resolve atomic distances"):
        radius_graph(far, 5.0)
    with pytest.raises(StructureError, match="too large"):
        s.copy(cell=np.eye(3) * 1e12).validate()


def test_nearly_singular_cell():
    """Volume / product of lengths = 1e-9: refused as singular; 1e-6: computed (vs brute force)."""
    base = np.array([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0]])
    for eps, expect in [(1e-9, SingularCellError), (1e-3, None)]:
        cell = base.copy()
        cell[2] = 0.5 * base[0] + 0.5 * base[1] + eps * base[2]
        s = Structure([14, 8], [[0, 0, 0], [1.0, 1.0, 0.0]], cell, True)
        if expect is not None:
            with pytest.raises(expect):
                radius_graph(s, 3.0)
            continue
        outcome = bounded(lambda s=s: radius_graph(s, 3.0, validate=False))
        assert outcome.kind in ("ok", "error"), outcome.describe()
        if outcome.kind == "error":
            assert outcome.is_error(TooManyNeighborsError), outcome.describe()
        else:
            assert_same_as_brute(outcome.value, s, 3.0)


def test_limit_is_adjustable(monkeypatch):
    s = _one_atom(2.0)
    assert len(radius_graph(s, 5.0)) > 0
    monkeypatch.setattr(_limits, "MAX_PAIRS", 10)
    with pytest.raises(TooManyNeighborsError, match="limit 10"):
        radius_graph(s, 5.0)
