"""benchmarks/motif_bounds.py: the TwoNN estimator and the batched aligned RMSD it relies on."""

import sys
from pathlib import Path

import numpy as np
from scipy.stats import ortho_group

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from motif_bounds import pairwise_aligned_rmsd, twonn  # noqa: E402

from atomssl.motif import aligned_rmsd  # noqa: E402


def test_twonn_recovers_dimension_of_curved_manifolds():
    rng = np.random.default_rng(0)
    # swiss roll: a 2-d manifold curled up in 3-d
    t = 1.5 * np.pi * (1 + 2 * rng.random(2000))
    roll = np.stack([t * np.cos(t), 20 * rng.random(2000), t * np.sin(t)], axis=1)
    assert abs(twonn(roll) - 2.0) < 0.3
    # a 6-d Gaussian sheet bent by a smooth map into 18-d and rotated into 30-d; clearly apart from 3 and 12
    z = rng.normal(size=(2000, 6))
    emb = (
        np.concatenate([z, np.sin(z), 0.3 * z**2], axis=1)
        @ ortho_group.rvs(30, random_state=1)[:18]
    )
    assert abs(twonn(emb) - 6.0) < 0.7
    assert (
        twonn(rng.normal(size=(2000, 3)))
        < 4.0
        < twonn(emb)
        < 8.0
        < twonn(rng.normal(size=(2000, 12)))
    )
    # the precomputed-distance path agrees with the coordinate path
    d = np.linalg.norm(roll[:, None] - roll[None], axis=-1)
    assert abs(twonn(distances=d) - twonn(roll)) < 1e-6


def test_pairwise_aligned_rmsd_matches_procrustes_alignment():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 8, 3)), rng.normal(size=(7, 8, 3))
    d = pairwise_aligned_rmsd(a, b, chunk=2)
    ref = np.array([[aligned_rmsd(x, y) for y in b] for x in a])
    np.testing.assert_allclose(d, ref, atol=1e-10)
    # a rotated and reflected copy is at distance zero
    q = ortho_group.rvs(3, random_state=3)
    assert pairwise_aligned_rmsd(a, a @ q).diagonal().max() < 1e-6
