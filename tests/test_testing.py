"""The symmetry helper itself: it passes on symmetric functions and catches broken ones."""

import numpy as np
import pytest
from ase.build import bulk

from atomssl.data import Structure
from atomssl.graph import radius_graph
from atomssl.testing import ALL_CHECKS, assert_equivariant, random_rotation, transform_structure


def _structure():
    atoms = bulk("NaCl", "rocksalt", a=5.6, cubic=True)
    atoms.cell = atoms.cell.array + np.array([[0, 0.4, 0.2], [0.3, 0, 0.1], [0.2, 0.5, 0]])
    atoms.rattle(0.05, seed=1)
    return Structure.from_ase(atoms)


def _fn(s):
    nl = radius_graph(s, 4.0, validate=False)
    d = nl.distance
    node = np.bincount(nl.src, weights=d, minlength=s.n_atoms)
    vec = np.zeros((s.n_atoms, 3))
    np.add.at(vec, nl.src, nl.vec * np.exp(-d)[:, None])
    return {
        "graph": np.array([d.sum()]),
        "node": node,
        "vector": vec[:, None, :],
        "edge": d,
        "_edge_index": np.stack([nl.src, nl.dst]),
        "_shift": nl.shift,
    }


def test_random_rotation_is_orthogonal():
    rng = np.random.default_rng(0)
    for improper in (False, True):
        R = random_rotation(rng, improper)
        assert np.allclose(R @ R.T, np.eye(3))
        assert np.isclose(np.linalg.det(R), -1.0 if improper else 1.0)


def test_transform_preserves_distances_set():
    s = _structure()
    new, tr = transform_structure(s, np.random.default_rng(3), ALL_CHECKS)
    a = np.sort(radius_graph(s, 4.0).distance)
    b = np.sort(radius_graph(new, 4.0).distance)
    assert np.allclose(a, b)


def test_helper_accepts_symmetric_function():
    assert_equivariant(
        _fn, _structure(), {"graph": "graph", "node": "node", "vector": "vector", "edge": "edge"}
    )


def test_helper_catches_non_invariant_output():
    def bad(s):
        out = _fn(s)
        out["node"] = out["node"] + s.positions[:, 0]  # depends on absolute position
        return out

    with pytest.raises(AssertionError, match="node"):
        assert_equivariant(bad, _structure(), {"node": "node"})


def test_helper_catches_non_covariant_vector():
    def bad(s):
        out = _fn(s)
        out["vector"] = np.abs(out["vector"])  # not rotated with the structure
        return out

    with pytest.raises(AssertionError, match="vector"):
        assert_equivariant(bad, _structure(), {"vector": "vector"}, checks=("rotation",))
