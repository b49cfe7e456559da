"""Environments: k nearest within the cutoff, Gram features, normalisation, permutation augmentation."""

import numpy as np
import pytest
from ase.build import bulk

from atomssl.data import Structure
from atomssl.errors import StructureError
from atomssl.graph import gram_matrices, upper_triangle
from atomssl.motif import (
    GramNormalizer,
    augment_permutations,
    extract_environments,
    permute_grams,
    permute_vectors,
    random_permutations,
    triangle_to_gram,
)


def diamond_si(jitter=0.0, seed=0):
    atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat(2)
    atoms.positions += np.random.default_rng(seed).normal(scale=jitter, size=atoms.positions.shape)
    return Structure.from_ase(atoms)


def test_environments_of_diamond_si_are_4_plus_4_and_match_brute_force():
    s = diamond_si(jitter=0.02)
    env = extract_environments(s, k=8, cutoff=4.0)
    assert len(env) == s.n_atoms and env.vectors.shape == (s.n_atoms, 8, 3)
    d = np.linalg.norm(env.vectors, axis=-1)
    assert np.all(np.diff(d, axis=1) >= -1e-12)
    assert np.allclose(d[:, :4], 2.35, atol=0.1) and np.allclose(d[:, 4:], 3.84, atol=0.15)
    # brute force over the 27 neighbouring images (cell is 10.9 A, much larger than 4 A)
    shifts = np.array(np.meshgrid(*[[-1, 0, 1]] * 3)).reshape(3, -1).T @ s.cell
    for i in [0, 17, 63]:
        v = (s.positions[None, :, :] + shifts[:, None, :] - s.positions[i]).reshape(-1, 3)
        r = np.sort(np.linalg.norm(v, axis=1))[1:9]
        np.testing.assert_allclose(d[i], r, atol=1e-10)
    feats = env.features()
    assert feats.shape == (s.n_atoms, 36)
    np.testing.assert_allclose(triangle_to_gram(feats), gram_matrices(env.vectors))


def test_far_neighbours_are_dropped_or_refused():
    s = diamond_si()
    # stretch the cell so second-shell neighbours lie beyond 4 A
    stretched = Structure(s.numbers, s.positions * 1.1, s.cell * 1.1, s.pbc)
    assert len(extract_environments(stretched, cutoff=4.0)) == 0
    assert len(extract_environments(stretched, cutoff=4.0, on_far="keep")) == s.n_atoms
    with pytest.raises(StructureError, match="beyond 4.0 A"):
        extract_environments(stretched, cutoff=4.0, on_far="raise")


def test_normaliser_separates_diagonal_and_round_trips():
    rng = np.random.default_rng(0)
    g = gram_matrices(rng.normal(size=(200, 8, 3)) * 3 + 1)
    f = upper_triangle(g)
    norm = GramNormalizer.fit(f, 8)
    t = norm.transform(f)
    iu = np.triu_indices(8)
    diag = iu[0] == iu[1]
    assert abs(t[:, diag].mean()) < 1e-9 and abs(t[:, diag].std() - 1) < 1e-6
    assert abs(t[:, ~diag].mean()) < 1e-9 and abs(t[:, ~diag].std() - 1) < 1e-6
    np.testing.assert_allclose(norm.inverse(t), f)
    assert GramNormalizer.from_dict(norm.to_dict()) == norm


def test_permutation_augmentation_is_consistent_with_relabelled_clouds():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(30, 8, 3))
    perms = random_permutations(30, 8, rng)
    assert all(sorted(p) == list(range(8)) for p in perms)
    # permuting the cloud then taking the Gram matrix == permuting rows and columns of the Gram matrix
    np.testing.assert_allclose(
        gram_matrices(permute_vectors(v, perms)), permute_grams(gram_matrices(v), perms)
    )
    aug = augment_permutations(gram_matrices(v), 3, rng)
    assert aug.shape == (120, 8, 8)
    np.testing.assert_allclose(aug[:30], gram_matrices(v))
    # every copy has the same spectrum (same cloud, new labels)
    for c in range(1, 4):
        np.testing.assert_allclose(
            np.linalg.eigvalsh(aug[30 * c : 30 * (c + 1)]), np.linalg.eigvalsh(aug[:30]), atol=1e-9
        )
    shell = random_permutations(100, 8, rng, within=[[0, 1, 2, 3], [4, 5, 6, 7]])
    assert np.all(np.sort(shell[:, :4], axis=1) == np.arange(4)) and np.all(
        np.sort(shell[:, 4:], axis=1) == np.arange(4, 8)
    )


def test_bundled_a_si_cells_are_realistic():
    from atomssl.motif import bundled_cells, structure_summary

    cells = bundled_cells()
    assert len(cells) >= 2 and all(c.n_atoms == 512 and c.pbc.all() for c in cells)
    s = structure_summary(cells)
    assert 3.95 < s["mean_coordination"] < 4.05 and s["fraction_fourfold"] > 0.93
    assert abs(s["rdf_first_peak"] - 2.35) < 0.05 and abs(s["bond_angle_mean"] - 109.3) < 1.5
    env = extract_environments(cells)
    assert len(env) > 0.95 * sum(c.n_atoms for c in cells)
    assert np.linalg.norm(env.vectors, axis=-1).max() <= 4.0
