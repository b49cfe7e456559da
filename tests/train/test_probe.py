"""The linear probe on frozen embeddings, used directly from Python."""

import numpy as np
import pytest

from atomssl.errors import ConfigError
from atomssl.evaluate import LinearProbe


def _blobs(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 4)) + 3.0 * np.eye(3, 4)[y]
    return x, y


def test_classification_probe_fits_and_predicts_without_outside_setup():
    x, y = _blobs(300, 0)
    xv, yv = _blobs(100, 1)
    probe = LinearProbe("classification").fit(x[:200], y[:200], xv, yv, grid=[0.1, 1.0])
    out = probe.predict(x[200:])
    assert probe.n_classes == 3
    assert out["proba"].shape == (100, 3)
    np.testing.assert_allclose(out["proba"].sum(1), 1.0)
    assert (out["prediction"] == y[200:]).mean() > 0.9


def test_classification_probe_keeps_absent_classes_when_told():
    x, y = _blobs(200, 2)
    keep = y < 2
    probe = LinearProbe("classification", n_classes=3).fit(
        x[keep], y[keep], x[:0], y[:0], grid=[1.0]
    )
    assert probe.predict(x[:5])["proba"].shape == (5, 3)


def test_classification_probe_refuses_labels_beyond_n_classes():
    x, y = _blobs(100, 3)
    with pytest.raises(ConfigError, match="outside 0..1"):
        LinearProbe("classification", n_classes=2).fit(x, y, x[:0], y[:0], grid=[1.0])


def test_probe_refuses_unknown_kind():
    with pytest.raises(ConfigError, match="LinearProbe kind must be one of"):
        LinearProbe("ranking")
