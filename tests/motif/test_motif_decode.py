"""Gram -> coordinates -> Gram round trips, Procrustes synchronisation, Hungarian assignment."""

import numpy as np
import pytest
from scipy.stats import ortho_group, special_ortho_group

from atomssl.graph import gram_matrices
from atomssl.motif import (
    aligned_rmsd,
    assign_and_align,
    gram_to_coords,
    nearest_psd,
    procrustes,
    rmsd,
)


@pytest.fixture
def clouds():
    return np.random.default_rng(0).normal(size=(50, 8, 3)) * 2.0


def test_gram_coords_gram_round_trip_is_exact(clouds):
    g = gram_matrices(clouds)
    x = gram_to_coords(g)
    np.testing.assert_allclose(gram_matrices(x), g, atol=1e-10)
    # the recovered cloud equals the original up to an orthogonal transform
    assert aligned_rmsd(x, clouds).max() < 1e-10


def test_nearest_psd_matches_eckart_young_and_clips_negative():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(8, 8))
    g = a + a.T
    p = nearest_psd(g)
    w = np.linalg.eigvalsh(p)
    assert w.min() > -1e-10 and np.sum(w > 1e-10) <= 3
    # brute force: best rank<=3 PSD approximation from the eigendecomposition
    w0, v0 = np.linalg.eigh(g)
    top = np.argsort(w0)[::-1][:3]
    ref = (v0[:, top] * np.clip(w0[top], 0, None)) @ v0[:, top].T
    np.testing.assert_allclose(p, ref, atol=1e-10)
    # it is never farther from g than other PSD rank-3 matrices drawn at random
    for _ in range(20):
        b = rng.normal(size=(8, 3))
        assert np.linalg.norm(g - p) <= np.linalg.norm(g - b @ b.T) + 1e-12


@pytest.mark.parametrize("proper", [True, False])
def test_procrustes_recovers_rotations_and_reflections(clouds, proper):
    qs = special_ortho_group.rvs(3, size=len(clouds), random_state=2)
    if not proper:
        qs = ortho_group.rvs(3, size=len(clouds), random_state=3)
    y = clouds @ qs
    q = procrustes(clouds, y, proper=proper)
    np.testing.assert_allclose(q, qs, atol=1e-9)


def test_proper_procrustes_cannot_undo_a_reflection(clouds):
    y = clouds * np.array([1, 1, -1.0])
    q = procrustes(clouds, y, proper=True)
    assert np.allclose(np.linalg.det(q), 1.0)
    assert rmsd(clouds @ q, y).min() > 1e-3
    assert aligned_rmsd(clouds, y, proper=False).max() < 1e-10


def test_assign_and_align_recovers_permutation_and_rotation():
    rng = np.random.default_rng(4)
    for trial in range(10):
        x = rng.normal(size=(8, 3)) * 2
        q = ortho_group.rvs(3, random_state=trial)
        perm = rng.permutation(8)[:6]
        y = x[perm] @ q + rng.normal(scale=1e-3, size=(6, 3))
        index, qq, err = assign_and_align(x, y)
        assert err < 5e-3
        np.testing.assert_array_equal(index, perm)


def test_metric_refinement_keeps_exact_clouds_and_undoes_blur_shrinkage(clouds):
    from atomssl.motif._decode import gram_to_distances, refine_coords

    g = gram_matrices(clouds[:5])
    x = refine_coords(g)
    assert aligned_rmsd(x, clouds[:5]).max() < 1e-6
    # brute-force distances of centre + neighbours
    pts = np.concatenate([np.zeros((5, 1, 3)), clouds[:5]], axis=1)
    np.testing.assert_allclose(
        gram_to_distances(g), np.linalg.norm(pts[:, :, None] - pts[:, None], axis=-1), atol=1e-9
    )
    # a blur (average of a cloud's Gram with a relabelled copy's) is high rank: its rank-3 truncation
    # shrinks the neighbour distances, the metric refinement keeps them (the diagonal is shared)
    blur = 0.5 * (
        g
        + gram_matrices(
            clouds[:5][:, ::-1][:, np.argsort(np.linalg.norm(clouds[0][::-1], axis=-1))]
        )
    )
    blur[:, np.arange(8), np.arange(8)] = g[:, np.arange(8), np.arange(8)]
    true = np.sqrt(np.diagonal(blur, axis1=1, axis2=2))
    err_eigen = np.abs(np.linalg.norm(gram_to_coords(blur), axis=-1) - true).mean()
    err_metric = np.abs(np.linalg.norm(refine_coords(blur), axis=-1) - true).mean()
    assert err_metric < 0.6 * err_eigen
