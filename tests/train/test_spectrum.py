"""Vector-valued targets: the spectrum head, its labels (QM9 vDOS, ASE db data field, npz) and
fine-tuning in full, frozen and linear-probe modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from atomssl.data import broaden, grid_edges, load_qm9, vibrational_dos
from atomssl.errors import ConfigError
from atomssl.evaluate import finetune
from atomssl.representation import build_backbone
from atomssl.task import build_task
from atomssl.task.spectrum import moments, wasserstein
from atomssl.train._spectrum import spectrum_scores


# ------------------------------------------------------------------------------ broadening
def test_broaden_is_the_exact_bin_integral():
    edges = grid_edges(0.0, 100.0, 20)
    freqs = [30.0, 47.3, 47.3, 70.0]
    dos = broaden(freqs, edges, sigma=3.0)
    expected = sum(np.diff(norm.cdf(edges, loc=f, scale=3.0)) for f in freqs)
    np.testing.assert_allclose(dos, expected, atol=1e-12)
    assert dos.sum() == pytest.approx(4.0, abs=1e-6)  # every mode well inside the grid


def test_imaginary_modes_fall_off_the_grid():
    dos = vibrational_dos([-300.0, 1500.0])
    assert dos.sum() == pytest.approx(1.0, abs=1e-6)


def test_qm9_vdos_sums_to_the_number_of_modes():
    mols = load_qm9(40, vdos=True)
    freqs = [m.labels["frequencies"] for m in load_qm9(40, frequencies=True)]
    for m, f in zip(mols, freqs):
        v = m.labels["vdos"]
        assert v.shape == (200,) and (v >= 0).all()
        assert "frequencies" not in m.labels
        assert len(f) in (3 * m.n_atoms - 6, 3 * m.n_atoms - 5)  # 3N-5: linear (acetylene, HCN)
        tails = norm.cdf(0.0, loc=f, scale=20.0) + norm.sf(
            4000.0, loc=f, scale=20.0
        )  # mass off the grid
        assert v.sum() == pytest.approx(len(f) - tails.sum(), abs=1e-9)


# ------------------------------------------------------------------------------ head
@pytest.fixture(scope="module")
def megnet():
    torch.manual_seed(0)
    return build_backbone({"name": "megnet", "cutoff": 4.0})


def test_wasserstein_and_moments_on_deltas():
    a = torch.zeros(1, 10, dtype=torch.float64)
    b = torch.zeros(1, 10, dtype=torch.float64)
    a[0, 2], b[0, 5] = 1.0, 3.0  # shapes only: totals differ
    assert float(wasserstein(a, b)) == pytest.approx(3.0)
    assert float(wasserstein(a, a)) == 0.0
    mean, std = moments(b)
    assert float(mean) == pytest.approx(5.0) and float(std) == pytest.approx(0.0)
    s = spectrum_scores(a.numpy(), b.numpy())
    assert s["wasserstein"] == pytest.approx(3.0) and s["mean_error"] == pytest.approx(3.0)
    assert s["total_error"] == pytest.approx(2.0)


def test_softmax_head_with_label_total_keeps_the_integral(megnet):
    task = build_task(
        {"name": "spectrum", "n_bins": 8, "output": "softmax", "total": "label", "scale": 0.5},
        megnet,
    )
    raw = torch.randn(3, 8)
    totals = torch.tensor([1.0, 7.0, 12.0])
    spec = task.spectrum(raw, totals)
    assert (spec >= 0).all()
    torch.testing.assert_close(spec.sum(-1), totals)
    with pytest.raises(ConfigError, match="total"):
        task.spectrum(raw)


def test_softplus_head_is_non_negative(megnet):
    task = build_task({"name": "spectrum", "n_bins": 5, "scale": 2.0}, megnet)
    assert (task.spectrum(torch.randn(4, 5) * 50) >= 0).all()


@pytest.mark.parametrize(
    "options, match",
    [
        ({"n_bins": 1}, "n_bins >= 2"),
        ({"n_bins": 5, "output": "sigmoid"}, "output"),
        ({"n_bins": 5, "total": "guess"}, "total"),
        ({"n_bins": 5, "loss": "huber"}, "loss"),
        ({"n_bins": 5, "transform": "log"}, "transform"),
        ({"n_bins": 5, "mean_spectrum": [1.0, 2.0]}, "mean_spectrum"),
    ],
)
def test_head_refuses_bad_options(megnet, options, match):
    with pytest.raises(ConfigError, match=match):
        build_task({"name": "spectrum", **options}, megnet)


# ------------------------------------------------------------------------------ fine-tuning
QM9 = {"name": "qm9", "limit": 60, "vdos": True, "vdos_bins": 40}


def _cfg(mode, tmp_path, **task):
    return {
        "mode": mode,
        "data": {"sources": [QM9], "label": "vdos", "batch_size": 16},
        "backbone": {"name": "megnet", "pretrained": False, "cutoff": 4.0},
        "task": {"name": "spectrum", **task},
        "trainer": {"max_epochs": 2, "patience": 0},
        "run": {"root": str(tmp_path)},
    }


@pytest.mark.parametrize("mode, task", [
    ("full", {}),
    ("frozen", {"output": "softmax", "total": "label", "wasserstein": 1.0}),
    ("linear_probe", {}),
])  # fmt: skip
def test_finetune_spectrum_modes(tmp_path, mode, task):
    summary = finetune(_cfg(mode, tmp_path, **task), run_dir=tmp_path / mode, progress=False)
    run = tmp_path / mode
    scores = summary["scores"]["test"]
    assert set(scores) == {"mae", "wasserstein", "mean_error", "std_error", "total_error"}
    assert summary["scores"]["test_baseline"]["wasserstein"] > 0
    with np.load(run / "predictions.npz") as z:
        assert z["test_prediction"].shape == z["test_target"].shape == (6, 40)
        assert (z["test_prediction"] >= 0).all()
        if task.get("total") == "label":
            np.testing.assert_allclose(
                z["test_prediction"].sum(1), z["test_target"].sum(1), rtol=1e-5
            )
    assert (run / "spectra.png").stat().st_size > 0
    assert not (run / "parity.png").exists()


def test_spectrum_from_ase_db_data_field(tmp_path):
    from ase.db import connect

    mols = load_qm9(30, vdos=True, vdos_bins=20)
    db = tmp_path / "mols.db"
    with connect(db) as con:
        for m in mols:
            con.write(m.to_ase(), data={"dos": m.labels["vdos"]})
    cfg = _cfg("linear_probe", tmp_path)
    cfg["data"].update(sources=[str(db)], label="dos")
    summary = finetune(cfg, run_dir=tmp_path / "run", progress=False)
    assert summary["sizes"]["train"] + summary["sizes"]["val"] + summary["sizes"]["test"] == 30


def test_spectrum_from_npz_labels(tmp_path):
    from ase.io import write

    mols = load_qm9(30, vdos=True, vdos_bins=20)
    folder = tmp_path / "xyz"
    folder.mkdir()
    for m in mols:
        write(folder / f"{m.id}.xyz", m.to_ase())
    np.savez(
        tmp_path / "spectra.npz",
        id=np.array([m.id for m in mols]),
        dos=np.stack([m.labels["vdos"] for m in mols]),
    )
    cfg = _cfg("linear_probe", tmp_path)
    cfg["data"].update(sources=[str(folder)], label="dos", labels=str(tmp_path / "spectra.npz"))
    summary = finetune(cfg, run_dir=tmp_path / "run", progress=False)
    assert summary["scores"]["test"]["mae"] >= 0


def test_npz_labels_need_a_key_array(tmp_path):
    np.savez(tmp_path / "bad.npz", dos=np.ones((3, 4)))
    cfg = _cfg("linear_probe", tmp_path)
    cfg["data"]["labels"] = str(tmp_path / "bad.npz")
    with pytest.raises(ConfigError, match="no key array"):
        finetune(cfg, run_dir=tmp_path / "run", progress=False)


@pytest.mark.parametrize("arrays, match", [
    ([np.ones(10)] * 3 + [np.ones(11)], "has 11 values, the first structure's has 10"),
    ([np.array([1.0, -0.5, 2.0])] * 3, "negative"),
    ([np.array([1.0, np.nan, 2.0])] * 3, "not a finite number"),
])  # fmt: skip
def test_bad_spectra_are_refused(tmp_path, arrays, match):
    from ase.db import connect

    db = tmp_path / "mols.db"
    with connect(db) as con:
        for m, a in zip(load_qm9(len(arrays)), arrays):
            con.write(m.to_ase(), data={"dos": a})
    cfg = _cfg("linear_probe", tmp_path)
    cfg["data"].update(sources=[str(db)], label="dos")
    with pytest.raises(ConfigError, match=match):
        finetune(cfg, run_dir=tmp_path / "run", progress=False)
