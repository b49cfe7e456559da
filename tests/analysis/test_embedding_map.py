"""Embedding map: density, 2D projection (PCA fallback == scikit-learn), neighbour agreement, figure."""

import numpy as np
import pytest
from ase.build import bulk

from atomssl.analysis import density, embedding_map, neighbour_agreement, project_2d
from atomssl.data import Structure


def test_density_of_rocksalt_nacl():
    s = Structure.from_ase(bulk("NaCl", "rocksalt", a=5.64, cubic=True))
    # 4 formula units of 58.443 amu in (5.64 A)^3: 2.163 g/cm^3 (handbook value 2.165 at 5.640 A)
    assert density(s) == pytest.approx(4 * 58.443 * 1.66053906660 / 5.64**3, rel=1e-4)
    assert density(s) == pytest.approx(2.16, abs=0.01)


def test_pca_projection_matches_sklearn_and_agreement(tmp_path):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) * np.array([5, 3, 1, 1, 1, 1])
    xy, method = project_2d(x, method="pca")
    ref = PCA(2).fit_transform(StandardScaler().fit_transform(x))
    assert method == "pca"
    np.testing.assert_allclose(np.abs(xy), np.abs(ref), atol=1e-10)  # up to the sign of each axis
    smooth = x[:, 0] + 0.01 * rng.normal(
        size=200
    )  # a property that varies smoothly over the embedding
    assert neighbour_agreement(x[:, :1], smooth) > 0.95
    assert (
        abs(neighbour_agreement(x, rng.normal(size=200))) < 0.3
    )  # unrelated property: no agreement
    res = embedding_map(x, smooth, tmp_path / "map.png", method="auto")
    assert (tmp_path / "map.png").read_bytes()[:4] == b"\x89PNG" and res["xy"].shape == (200, 2)
    with pytest.raises(ValueError, match="values"):
        embedding_map(x, smooth[:10], tmp_path / "bad.png")
