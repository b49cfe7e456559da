"""Train on some groups, score each group: data.train_where / data.group_by (finetune and evaluate)."""

from __future__ import annotations

import numpy as np
import pytest

from atomssl.data import load_matbench_dielectric
from atomssl.errors import ConfigError
from atomssl.evaluate import finetune
from atomssl.evaluate._groups import parse_where, where_mask
from atomssl.evaluate._matbench import evaluate_matbench
from atomssl.train._finetune import LabelledGraphs


def test_parse_where():
    assert parse_where("crystal_sys==cubic") == ("crystal_sys", "==", ("cubic",))
    assert parse_where("crystal_sys == cubic, tetragonal") == (
        "crystal_sys",
        "==",
        ("cubic", "tetragonal"),
    )
    assert parse_where("crystal_sys!=cubic") == ("crystal_sys", "!=", ("cubic",))
    for bad in ("crystal_sys=cubic", "==cubic", "crystal_sys==", ""):
        with pytest.raises(ConfigError, match="LABEL==VALUE"):
            parse_where(bad)


def test_where_mask_and_unknown_values():
    meta = {"crystal_sys": np.array(["cubic", "hexagonal", "cubic"], dtype=object)}
    assert where_mask(meta, "crystal_sys==cubic", 3).tolist() == [True, False, True]
    assert where_mask(meta, "crystal_sys!=cubic", 3).tolist() == [False, True, False]
    assert where_mask(meta, None, 3).all()
    with pytest.raises(ConfigError, match="no structure has crystal_sys = cubik"):
        where_mask(meta, "crystal_sys==cubik", 3)
    with pytest.raises(ConfigError, match="no label 'lattice'"):
        where_mask(meta, "lattice==cubic", 3)


def test_crystal_systems_agree_with_spglib():
    """The table's crystal_sys column is what spglib finds (symprec 0.01) on the structures as read."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    for s in load_matbench_dielectric(60, metadata=True):
        assert (
            SpacegroupAnalyzer(s.to_pymatgen(), symprec=0.01).get_crystal_system()
            == s.labels["crystal_sys"]
        ), s.id


def test_finetune_trains_on_chosen_groups_and_scores_all(tmp_path):
    cfg = {
        "mode": "linear_probe",
        "data": {"sources": [{"name": "matbench_dielectric", "limit": 120, "metadata": True}], "label": "n",
                 "train_where": "crystal_sys!=cubic", "group_by": "crystal_sys"},
        "backbone": {"name": "megnet", "pretrained": False},
        "task": {"name": "regression"},
    }  # fmt: skip
    summary = finetune(cfg, run_dir=tmp_path / "run", progress=False)
    from atomssl.train._finetune import split_three

    structures = load_matbench_dielectric(120, metadata=True)
    systems = np.array([s.labels["crystal_sys"] for s in structures])
    tr, va, te = split_three(120, 0.1, 0.1, 0)
    assert (systems[np.concatenate([tr, va])] == "cubic").any()  # the check below can fail
    assert summary["sizes"]["train"] == int((systems[tr] != "cubic").sum())
    assert summary["sizes"]["val"] == int((systems[va] != "cubic").sum())
    assert summary["sizes"]["test"] == len(te)
    groups = summary["group_scores"]
    assert sum(g["n"] for g in groups.values()) == summary["sizes"]["test"]
    assert set(groups) <= {s.labels["crystal_sys"] for s in structures}
    assert (
        "test rows by crystal_sys, trained on crystal_sys!=cubic"
        in (tmp_path / "run" / "summary.md").read_text()
    )


def test_group_labels_must_exist(tmp_path):
    cfg = {"mode": "linear_probe", "data": {"sources": [{"name": "matbench_dielectric", "limit": 20}], "label": "n",
                                            "group_by": "crystal_sys"},
           "backbone": {"name": "megnet", "pretrained": False}}  # fmt: skip
    with pytest.raises(ConfigError, match="have no label 'crystal_sys'"):
        finetune(cfg, run_dir=tmp_path / "run", progress=False)


def test_evaluate_folds_with_groups(tmp_path):
    from atomssl.graph import to_graph

    structures = load_matbench_dielectric(40, metadata=True)
    graphs = [to_graph(s, cutoff=4.0) for s in structures]
    meta = {"crystal_sys": np.array([s.labels["crystal_sys"] for s in structures], dtype=object)}
    data = LabelledGraphs(
        graphs, np.array([s.labels["n"] for s in structures]), [s.id for s in structures], meta
    )
    rows = np.arange(40)
    folds = [(rows[:30], rows[30:]), (rows[10:], rows[:10])]
    cfg = {"mode": "linear_probe", "backbone": {"name": "megnet", "pretrained": False},
           "data": {"train_where": "crystal_sys!=cubic", "group_by": "crystal_sys"}, "task": {"transform": "none"}}  # fmt: skip
    summary = evaluate_matbench(
        "toy", cfg, out=tmp_path / "ev", dataset=(data, folds), progress=False
    )
    assert sum(g["n"] for g in summary["groups"].values()) == 20
    r0 = __import__("json").loads((tmp_path / "ev" / "fold_0" / "fold_result.json").read_text())
    train_rows = r0["parameters"]["n_train"] + r0["parameters"]["n_val"]
    assert train_rows == int((meta["crystal_sys"][:30] != "cubic").sum())
