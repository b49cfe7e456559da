"""matbench protocol: validation carved from training rows only, per-fold resume, record format."""

import json

import numpy as np
import pytest

import atomssl.evaluate._matbench as ev
from atomssl.evaluate import evaluate_matbench
from atomssl.evaluate._matbench import carve_validation, parse_folds
from atomssl.graph import to_graph
from atomssl.train import LabelledGraphs, synthetic_crystals

TINY = {
    "name": "megnet",
    "n_blocks": 1,
    "dense": [8, 8],
    "conv": [8, 8, 8],
    "n_gaussians": 12,
    "cutoff": 3.5,
}
REG_METRICS = ["mae", "rmse", "mape", "max_error"]  # matbench.constants.REG_METRICS


@pytest.fixture(scope="module")
def dataset():
    """30 labelled crystals split into 3 folds the way matbench does (test parts partition the rows)."""
    from sklearn.model_selection import KFold

    structures = synthetic_crystals(30, seed=11)
    graphs = [to_graph(s, cutoff=3.5) for s in structures]
    y = np.array([abs(np.linalg.det(s.cell)) / s.n_atoms for s in structures])
    ids = [f"mb-test-{i + 1:04d}" for i in range(30)]
    folds = [
        (np.sort(a), np.sort(b))
        for a, b in KFold(3, shuffle=True, random_state=0).split(np.arange(30))
    ]
    return LabelledGraphs(graphs, y, ids), folds


def _config():
    return {
        "backbone": dict(TINY),
        "task": {"hidden": [8]},
        "data": {"batch_size": 8, "val_fraction": 0.2},
        "trainer": {"max_epochs": 1, "accelerator": "cpu"},
    }


def test_carve_validation_uses_training_rows_only():
    train = np.arange(100, 200)
    tr, va = carve_validation(train, 0.1, seed=3)
    assert len(va) == 10 and len(tr) == 90
    assert set(tr) | set(va) == set(train) and not set(tr) & set(va)
    assert np.array_equal(carve_validation(train, 0.1, seed=3)[1], va)  # seeded
    assert parse_folds("2,0", 5) == [0, 2] and parse_folds(None, 5) == list(range(5))
    with pytest.raises(Exception, match="out of range"):
        parse_folds("5", 5)


def test_resume_per_fold_and_record_format(dataset, tmp_path, monkeypatch):
    calls = []
    real = ev.train_and_predict

    def counting(config, train, val, sets, run_dir, progress=False, backbone=None, **kw):
        calls.append(run_dir.name)
        test_ids = set(sets["test"].ids)
        assert not test_ids & set(train.ids) and not test_ids & set(val.ids)  # test rows never seen
        return real(config, train, val, sets, run_dir, progress, backbone, **kw)

    monkeypatch.setattr(ev, "train_and_predict", counting)
    s1 = evaluate_matbench(
        "matbench_test", _config(), out=tmp_path, folds="0,1", progress=False, dataset=dataset
    )
    assert calls == ["fold_0", "fold_1"] and s1["folds_done"] == [0, 1]
    before = (tmp_path / "fold_0" / "fold_result.json").read_text()
    s2 = evaluate_matbench(
        "matbench_test", _config(), out=tmp_path, folds=None, progress=False, dataset=dataset
    )
    assert calls == ["fold_0", "fold_1", "fold_2"]  # folds done before are skipped
    assert (tmp_path / "fold_0" / "fold_result.json").read_text() == before
    assert s2["folds_done"] == [0, 1, 2]

    # matbench record format (MatbenchBenchmark.as_dict): predictions keyed by each fold's test ids
    rec = json.loads((tmp_path / "results.json").read_text())
    assert rec["@class"] == "MatbenchBenchmark" and rec["benchmark_name"] == "matbench_v0.1"
    task = rec["tasks"]["matbench_test"]
    assert task["dataset_name"] == "matbench_test" and sorted(task["results"]) == [
        "fold_0",
        "fold_1",
        "fold_2",
    ]
    data, folds = dataset
    maes = []
    for k, (_, test_idx) in enumerate(folds):
        fold = task["results"][f"fold_{k}"]
        assert set(fold) == {"data", "parameters", "scores"}
        assert sorted(fold["data"]) == sorted(data.ids[i] for i in test_idx)
        assert set(fold["scores"]) == set(REG_METRICS)
        truth = {data.ids[i]: data.y[i] for i in test_idx}
        err = np.array([fold["data"][i] - truth[i] for i in fold["data"]])
        assert fold["scores"]["mae"] == pytest.approx(np.abs(err).mean(), rel=1e-9)
        assert fold["scores"]["max_error"] == pytest.approx(np.abs(err).max(), rel=1e-9)
        assert fold["scores"]["rmse"] == pytest.approx(np.sqrt((err**2).mean()), rel=1e-9)
        assert fold["parameters"]["chosen_on_validation"]["epoch"] == 0
        maes.append(fold["scores"]["mae"])
    assert s2["mean"]["mae"] == pytest.approx(np.mean(maes))
    table = (tmp_path / "summary.md").read_text()
    assert "mean (3 folds)" in table and (tmp_path / "scores.csv").read_text().count("\n") == 4


def test_real_matbench_folds_are_used(monkeypatch):
    """The bundled task uses the official splits: fold k's test rows are matbench's (checked on ids)."""
    from atomssl.data import matbench_folds

    folds = matbench_folds("matbench_dielectric")
    assert len(folds) == 5 and sum(len(t) for _, t in folds) == 4764


def test_cli_errors_are_clean(tmp_path, capsys):
    from atomssl.cli.main import main

    assert main(["evaluate", "curves", "--out", str(tmp_path)]) == 1
    assert "give --checkpoint" in capsys.readouterr().err
    assert (
        main(["evaluate", "matbench_dielectric", "--folds", "7", "--out", str(tmp_path / "x")]) == 1
    )
    assert "out of range" in capsys.readouterr().err
    # overrides may follow options (one positional list: target, then KEY=VALUE)
    assert (
        main(
            [
                "evaluate",
                "matbench_dielectric",
                "--folds",
                "9",
                "--out",
                str(tmp_path / "y"),
                "mode=frozen",
            ]
        )
        == 1
    )
    assert "out of range" in capsys.readouterr().err
    assert (
        main(["evaluate", "nonsense"]) == 1 and "unknown evaluate target" in capsys.readouterr().err
    )
