"""Per-particle neighbour clouds and Gram matrices."""

from __future__ import annotations

import numpy as np
import pytest

from atomssl.data import Structure
from atomssl.graph import gram_matrices, knn_graph, neighbor_clouds, upper_triangle
from atomssl.testing import random_rotation, transform_structure


def _random_crystal(seed: int, n: int = 12) -> Structure:
    rng = np.random.default_rng(seed)
    cell = np.array([[6.0, 0.0, 0.0], [1.1, 5.5, 0.0], [0.7, -0.8, 6.3]]) @ random_rotation(rng).T
    frac = rng.uniform(0, 1, (n, 3))
    return Structure(rng.integers(1, 30, n), frac @ cell, cell, True)


def _brute_cloud(s: Structure, atom: int, k: int) -> np.ndarray:
    """The k nearest neighbour vectors of one atom, by enumerating images in numpy."""
    images = np.array(np.meshgrid(*[np.arange(-3, 4)] * 3, indexing="ij")).reshape(3, -1).T
    vec = (s.positions[None, :, :] + (images @ s.cell)[:, None, :] - s.positions[atom]).reshape(
        -1, 3
    )
    d = np.linalg.norm(vec, axis=1)
    vec, d = vec[d > 1e-9], d[d > 1e-9]
    return vec[np.argsort(d, kind="stable")[:k]]


def test_cloud_shape_centred_sorted_and_matches_brute_force():
    s = _random_crystal(0)
    k = 8
    vectors, neighbors = neighbor_clouds(s, k, validate=False)
    assert vectors.shape == (s.n_atoms, k, 3) and neighbors.shape == (s.n_atoms, k)
    r = np.linalg.norm(vectors, axis=-1)
    assert (r > 0).all(), "the centre atom itself is not in its cloud"
    assert (np.diff(r, axis=1) >= -1e-12).all(), "sorted by distance"
    nl = knn_graph(s, k, validate=False)
    for atom in range(s.n_atoms):
        ref = _brute_cloud(s, atom, k)
        np.testing.assert_allclose(r[atom], np.linalg.norm(ref, axis=1), atol=1e-10)
        # centred: vectors point from the atom to (an image of) its neighbours
        rows = slice(atom * k, (atom + 1) * k)
        expected = s.positions[neighbors[atom]] + nl.shift[rows] @ s.cell - s.positions[atom]
        np.testing.assert_allclose(vectors[atom], expected, atol=1e-10)


def test_normalize_min_distance():
    s = _random_crystal(1)
    raw, _ = neighbor_clouds(s, 6, validate=False)
    scaled, _ = neighbor_clouds(s, 6, normalize="min_distance", validate=False)
    dmin = np.linalg.norm(raw[:, 0], axis=-1).min()
    np.testing.assert_allclose(scaled, raw / dmin)
    assert np.isclose(np.linalg.norm(scaled[:, 0], axis=-1).min(), 1.0)
    with pytest.raises(ValueError, match="unknown normalize"):
        neighbor_clouds(s, 6, normalize="max")


def test_gram_matrices_values_and_invariance():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(5, 8, 3))
    g = gram_matrices(v)
    assert g.shape == (5, 8, 8)
    np.testing.assert_allclose(g[2, 3, 5], v[2, 3] @ v[2, 5])
    np.testing.assert_allclose(g, np.swapaxes(g, -1, -2))
    for improper in (False, True):
        q = random_rotation(rng, improper=improper)
        np.testing.assert_allclose(gram_matrices(v @ q.T), g, atol=1e-12)
    perm = rng.permutation(8)
    np.testing.assert_allclose(gram_matrices(v[:, perm]), g[:, perm][:, :, perm])
    tri = upper_triangle(g)
    assert tri.shape == (5, 36)
    iu = np.triu_indices(8)
    np.testing.assert_allclose(tri, g[:, iu[0], iu[1]])


def test_cloud_gram_invariant_under_rigid_motion_permutation_and_rewrapping():
    s = _random_crystal(3)
    new, tr = transform_structure(s, np.random.default_rng(4))
    g_old = gram_matrices(neighbor_clouds(s, 8, validate=False)[0])
    g_new = gram_matrices(neighbor_clouds(new, 8, validate=False)[0])
    # new atom a is old atom perm[a]; a random crystal has no distance ties, so orders agree
    np.testing.assert_allclose(g_new, g_old[tr.perm], atol=1e-8)
