"""Periodic neighbour lists against brute force over periodic images (numpy, no library)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ase.geometry import cellpar_to_cell

import atomssl.data._pair_search as pair_search_module
from atomssl.data import Structure
from atomssl.data._vesin import has_direct, vesin_pairs
from atomssl.errors import OverlapError, StructureError
from atomssl.graph import knn_graph, radius_graph, radius_graphs
from atomssl.testing import random_rotation, transform_structure

N_CASES = 60
MAX_IMAGES_PER_AXIS = 8  # cutoff / plane spacing, bounds the brute-force cost


# ---------------------------------------------------------------------------- brute force
def _frac_basis(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Cell whose zero rows (non-periodic axes) are replaced by unit vectors completing a basis."""
    full = np.array(cell, dtype=float)
    for a in np.where(np.linalg.norm(full, axis=1) < 1e-12)[0]:
        others = np.array(
            [full[b] for b in range(3) if b != a and np.linalg.norm(full[b]) > 1e-12]
        ).reshape(-1, 3)
        for cand in np.eye(3):
            v = cand - (
                others.T @ np.linalg.lstsq(others.T, cand, rcond=None)[0] if len(others) else 0.0
            )
            if np.linalg.norm(v) > 1e-6:
                full[a] = v / np.linalg.norm(v)
                break
    return full


def brute_force(positions, cell, pbc, cutoff):
    """All (src, dst, shift, vec) with |vec| < cutoff over every image that can reach the cutoff.

    The image range per periodic axis follows from the plane spacing ``1 / |b_a|`` (b_a the
    reciprocal vectors): a vector of length < cutoff has fractional component < cutoff / spacing.
    """
    pos = np.asarray(positions, dtype=float)
    pbc = np.asarray(pbc, dtype=bool)
    cell = np.asarray(cell, dtype=float)
    rec = np.linalg.inv(_frac_basis(cell, pbc))  # columns are reciprocal vectors
    frac = pos @ rec
    ranges = []
    for a in range(3):
        if not pbc[a]:
            ranges.append(np.array([0]))
            continue
        reach = cutoff * np.linalg.norm(rec[:, a])
        df = frac[None, :, a] - frac[:, None, a]  # f_j - f_i
        ranges.append(
            np.arange(int(np.floor(-df.max() - reach)) - 1, int(np.ceil(-df.min() + reach)) + 2)
        )
    shifts = np.array(list(itertools.product(*ranges)), dtype=np.int64)
    vec = (
        pos[None, :, None, :] + (shifts @ cell)[None, None] - pos[:, None, None, :]
    )  # (i, j, s, 3)
    dist = np.linalg.norm(vec, axis=-1)
    i, j, s = np.nonzero(dist < cutoff)
    not_self = ~((i == j) & (np.abs(shifts[s]).sum(axis=1) == 0))
    i, j, s = i[not_self], j[not_self], s[not_self]
    return i, j, shifts[s], vec[i, j, s]


def _keys(src, dst, shift):
    return [(int(a), int(b), *map(int, c)) for a, b, c in zip(src, dst, shift)]


# ---------------------------------------------------------------------------- random cases
def random_case(seed: int):
    """A seeded random triclinic structure with a cutoff; every 4th case is much smaller than
    the cutoff (many images), others have mixed or no periodicity, atoms not wrapped."""
    rng = np.random.default_rng(1000 + seed)
    small = seed % 4 == 0
    while True:
        lengths = rng.uniform(1.2, 2.5, 3) if small else rng.uniform(2.5, 9.0, 3)
        angles = rng.uniform(60, 120, 3)
        cell = cellpar_to_cell(np.concatenate([lengths, angles])) @ random_rotation(rng).T
        volume = abs(np.linalg.det(cell))
        if not np.isfinite(volume) or volume < 0.3 * np.prod(lengths):
            continue
        spacing = volume / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
        cutoff = rng.uniform(3.0, 6.0) if small else rng.uniform(1.5, 6.0)
        if (cutoff / spacing).max() <= MAX_IMAGES_PER_AXIS:
            break
    kind = seed % 5
    pbc = (
        np.ones(3, bool)
        if kind in (0, 1, 2)
        else (np.array([True, False, True]) if kind == 3 else np.zeros(3, bool))
    )
    if seed % 10 == 3:
        pbc = rng.random(3) < 0.5  # any mix
        cell = np.where(pbc[:, None], cell, 0.0)  # non-periodic rows given as zeros (ASE style)
    n = int(rng.integers(1, 9))
    frac = rng.uniform(-0.8, 1.8, (n, 3))  # partly outside the cell: not wrapped
    basis = _frac_basis(cell, pbc)
    positions = frac @ basis
    numbers = rng.integers(1, 90, n)
    return Structure(numbers, positions, cell, pbc), cutoff


def _engines(structure):
    return ["auto", "vesin", "pymatgen"] if structure.pbc.all() else ["auto", "vesin"]


@pytest.mark.parametrize("seed", range(N_CASES))
def test_radius_graph_matches_brute_force(seed):
    s, cutoff = random_case(seed)
    bi, bj, bs, bv = brute_force(s.positions, s.cell, s.pbc, cutoff)
    expected = dict(zip(_keys(bi, bj, bs), bv))
    for engine in _engines(s):
        nl = radius_graph(s, cutoff, validate=False, engine=engine)
        keys = _keys(nl.src, nl.dst, nl.shift)
        assert len(keys) == len(set(keys)), f"{engine}: duplicate edges"
        assert set(keys) == set(expected), f"{engine}: edge sets differ"
        np.testing.assert_allclose(
            nl.vec, np.array([expected[k] for k in keys]).reshape(-1, 3), atol=1e-10
        )
        # the documented convention, and distances
        conv = s.positions[nl.dst] + nl.shift @ s.cell - s.positions[nl.src]
        np.testing.assert_allclose(nl.vec, conv, atol=1e-10)
        np.testing.assert_allclose(nl.distance, np.linalg.norm(conv, axis=1), atol=1e-10)
        assert (nl.distance < cutoff).all()
        assert (np.diff(nl.src) >= 0).all(), "edges are grouped by source atom"
        assert nl.src.dtype == nl.dst.dtype == nl.shift.dtype == np.int64
        assert (nl.shift[:, ~s.pbc] == 0).all(), "no images along non-periodic axes"


@pytest.mark.parametrize("seed", range(N_CASES))
def test_knn_graph_matches_brute_force(seed):
    s, cutoff = random_case(seed)
    k = int(np.random.default_rng(seed).integers(1, 9))
    if not s.pbc.any() and s.n_atoms <= k:
        with pytest.raises(StructureError, match="non-periodic structure has only"):
            knn_graph(s, k, validate=False)
        return
    # brute force with a cutoff large enough to hold k neighbours of every atom
    r = cutoff
    while True:
        bi, bj, bs, bv = brute_force(s.positions, s.cell, s.pbc, r)
        if np.bincount(bi, minlength=s.n_atoms).min() >= k:
            break
        r *= 1.5
    bd = np.linalg.norm(bv, axis=1)
    for engine in _engines(s):
        nl = knn_graph(s, k, validate=False, engine=engine)
        assert len(nl) == s.n_atoms * k
        np.testing.assert_array_equal(nl.src, np.repeat(np.arange(s.n_atoms), k))
        d = nl.distance.reshape(s.n_atoms, k)
        assert (np.diff(d, axis=1) >= -1e-12).all(), "sorted by distance"
        for atom in range(s.n_atoms):
            np.testing.assert_allclose(d[atom], np.sort(bd[bi == atom])[:k], atol=1e-10)
        conv = s.positions[nl.dst] + nl.shift @ s.cell - s.positions[nl.src]
        np.testing.assert_allclose(nl.vec, conv, atol=1e-10)


def test_knn_ties_are_broken_by_destination_and_shift():
    # simple cubic, one atom: 6 neighbours at exactly a, 12 at a*sqrt(2); k=4 and k=9 cut through ties
    s = Structure([29], [[0.3, 0.1, 0.2]], np.eye(3) * 3.0, True)
    for k in (4, 9):
        for engine in ("vesin", "pymatgen"):
            nl = knn_graph(s, k, validate=False, engine=engine)
            shifts = [tuple(x) for x in nl.shift.tolist()]
            d = np.round(nl.distance, 10)
            # within one distance, (dst, shift) ascending; and the first shell is taken by the same rule
            for a, b in zip(range(k - 1), range(1, k)):
                if d[a] == d[b]:
                    assert (nl.dst[a], shifts[a]) < (nl.dst[b], shifts[b])
            expected = sorted(
                (round(float(np.linalg.norm(np.array(sh) * 3.0)), 10), 0, sh)
                for sh in itertools.product(range(-2, 3), repeat=3)
                if sh != (0, 0, 0)
            )[:k]
            assert shifts == [e[2] for e in expected]
    # and identical across runs and engines
    a = knn_graph(s, 9, validate=False, engine="vesin")
    b = knn_graph(s, 9, validate=False, engine="pymatgen")
    np.testing.assert_array_equal(a.shift, b.shift)


def test_pairs_exactly_at_the_cutoff_are_excluded_by_every_engine():
    # cutoff equal to the lattice constant: the 6 images at exactly 4.0 A are not neighbours
    s = Structure([14, 14], [[0, 0, 0], [2.0, 2.0, 2.0]], np.eye(3) * 4.0, True)
    results = {
        e: _keys(
            *(lambda g: (g.src, g.dst, g.shift))(radius_graph(s, 4.0, validate=False, engine=e))
        )
        for e in ("vesin", "pymatgen")
    }
    assert set(results["vesin"]) == set(results["pymatgen"])
    bi, bj, bs, _ = brute_force(s.positions, s.cell, s.pbc, 4.0)
    assert set(results["vesin"]) == set(_keys(bi, bj, bs))
    assert len(results["vesin"]) == 16  # each atom: 8 body-centre neighbours at 3.46 A


def test_radius_graphs_equals_radius_graph():
    cases = [random_case(seed) for seed in range(20)]
    structures = [s for s, _ in cases]
    batched = radius_graphs(structures, 4.0, validate=False)
    for s, nl in zip(structures, batched):
        single = radius_graph(s, 4.0, validate=False)
        np.testing.assert_array_equal(single.src, nl.src)
        np.testing.assert_array_equal(single.dst, nl.dst)
        np.testing.assert_array_equal(single.shift, nl.shift)
        np.testing.assert_array_equal(single.vec, nl.vec)


def test_auto_engine_switch_gives_same_edges(monkeypatch):
    s, cutoff = random_case(1)
    before = radius_graph(s, cutoff, validate=False)
    monkeypatch.setattr(pair_search_module, "_LARGE", 1)  # "large" structures go to vesin
    after = radius_graph(s, cutoff, validate=False)
    assert set(_keys(before.src, before.dst, before.shift)) == set(
        _keys(after.src, after.dst, after.shift)
    )


def test_larger_crystal_engines_agree():
    # 4x4x4 rocksalt-like supercell with noise: engines agree edge for edge
    rng = np.random.default_rng(7)
    base = np.array([[0, 0, 0], [0.5, 0.5, 0.5]])
    frac = (base[None] + np.array(list(itertools.product(range(4), repeat=3)))[:, None]).reshape(
        -1, 3
    ) / 4.0
    cell = np.array([[11.0, 0.4, 0.0], [0.0, 11.5, 0.3], [0.2, 0.0, 10.8]])
    s = Structure(
        np.full(len(frac), 11),
        frac @ cell + rng.normal(scale=0.05, size=(len(frac), 3)),
        cell,
        True,
    )
    a = radius_graph(s, 5.0, validate=False, engine="vesin")
    b = radius_graph(s, 5.0, validate=False, engine="pymatgen")
    assert set(_keys(a.src, a.dst, a.shift)) == set(_keys(b.src, b.dst, b.shift))
    assert len(a) > 20 * s.n_atoms
    assert (np.diff(a.src) >= 0).all() and (np.diff(b.src) >= 0).all(), "grouped by source"


@pytest.mark.skipif(not has_direct(), reason="vesin version without the known C ABI")
def test_vesin_direct_path_equals_public_api():
    for seed in range(10):
        s, cutoff = random_case(seed)
        box = np.where(s.pbc[:, None], s.cell, 0.0)
        direct = vesin_pairs(s.positions, box, s.pbc, cutoff, 1, direct=True)
        public = vesin_pairs(s.positions, box, s.pbc, cutoff, 1, direct=False)
        for x, y in zip(direct, public):
            np.testing.assert_array_equal(x, y)


def _per_atom_distances(nl, n):
    d = nl.distance
    return [np.sort(d[nl.src == a]) for a in range(n)]


@pytest.mark.parametrize("seed", range(8))
def test_graph_invariant_under_rotation_translation_permutation_and_rewrapping(seed):
    s, cutoff = random_case(seed * 5 + (seed % 3))  # periodic, slab and finite cases
    rng = np.random.default_rng(seed)
    checks = ("rotation", "reflection", "translation", "permutation", "image", "origin")
    new, tr = transform_structure(s, rng, checks)
    for graph in (
        lambda x: radius_graph(x, cutoff, validate=False),
        lambda x: knn_graph(x, 3, validate=False),
    ):
        if not s.pbc.any() and s.n_atoms <= 3:
            continue
        old_nl, new_nl = graph(s), graph(new)
        old_d, new_d = (
            _per_atom_distances(old_nl, s.n_atoms),
            _per_atom_distances(new_nl, s.n_atoms),
        )
        for a in range(s.n_atoms):  # new atom a is old atom perm[a]
            np.testing.assert_allclose(new_d[a], old_d[tr.perm[a]], atol=1e-8)
    # radius graph: the same edges once atoms and images are mapped back
    old_nl, new_nl = (
        radius_graph(s, cutoff, validate=False),
        radius_graph(new, cutoff, validate=False),
    )
    mapped_shift = new_nl.shift + tr.image[new_nl.dst] - tr.image[new_nl.src]
    assert set(_keys(tr.perm[new_nl.src], tr.perm[new_nl.dst], mapped_shift)) == set(
        _keys(old_nl.src, old_nl.dst, old_nl.shift)
    )
    np.testing.assert_allclose(np.sort(new_nl.distance), np.sort(old_nl.distance), atol=1e-8)


def test_tiny_cutoff_overlap_check_is_correct_and_cheap():
    # a 20 A cell: a 0.1 A cutoff would mean 200^3 vesin cells if searched directly
    rng = np.random.default_rng(3)
    cell = np.diag([20.0, 21.0, 19.0])
    pos = rng.uniform(0, 19, (30, 3))
    pos[7] = pos[3] + [0.03, 0.04, 0.0]  # 0.05 A apart
    s = Structure(np.full(30, 6), pos, cell, True)
    for engine in ("vesin", "pymatgen"):
        nl = radius_graph(s, 0.1, validate=False, engine=engine)
        assert sorted(_keys(nl.src, nl.dst, nl.shift)) == [(3, 7, 0, 0, 0), (7, 3, 0, 0, 0)]
        np.testing.assert_allclose(nl.distance, [0.05, 0.05], atol=1e-12)
    with pytest.raises(OverlapError, match="atoms 3 and 7 are 0.0500 A apart"):
        s.validate()
    # exact duplicates (distance 0) are found, not mistaken for self pairs
    pos[7] = pos[3]
    dup = Structure(np.full(30, 6), pos, cell, True)
    for engine in ("vesin", "pymatgen"):
        assert len(radius_graph(dup, 0.1, validate=False, engine=engine)) == 2


def test_bad_arguments():
    s, _ = random_case(1)
    with pytest.raises(ValueError, match="cutoff must be positive"):
        radius_graph(s, 0.0)
    with pytest.raises(ValueError, match="k must be >= 1"):
        knn_graph(s, 0)
    with pytest.raises(ValueError, match="unknown engine"):
        radius_graph(s, 3.0, engine="nope")
    finite, _ = random_case(4)
    with pytest.raises(ValueError, match="fully periodic"):
        radius_graph(finite, 3.0, validate=False, engine="pymatgen")


def test_accepts_ase_and_pymatgen_objects():
    s, cutoff = random_case(2)
    wrapped = s.wrapped()
    for obj in (wrapped.to_ase(), wrapped.to_pymatgen()):
        nl = radius_graph(obj, cutoff, validate=False)
        ref = radius_graph(wrapped, cutoff, validate=False)
        np.testing.assert_allclose(np.sort(nl.distance), np.sort(ref.distance), atol=1e-8)
