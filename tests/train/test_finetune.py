"""Fine-tuning: the three modes end to end, frozen really frozen, linear probe == scikit-learn, labels."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.db import connect
from ase.io import write

from atomssl.cli.main import main
from atomssl.errors import ConfigError
from atomssl.evaluate import finetune
from atomssl.representation import build_backbone
from atomssl.train import (
    embed_structures,
    load_checkpoint,
    save_checkpoint,
    synthetic_crystals,
)

TINY = {
    "name": "megnet",
    "n_blocks": 1,
    "dense": [8, 8],
    "conv": [8, 8, 8],
    "n_gaussians": 12,
    "cutoff": 3.5,
}


def _volume_per_atom(s):
    return abs(np.linalg.det(s.cell)) / s.n_atoms


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """40 crystals as extxyz files + labels.csv (file, label = volume per atom: learnable, positive)."""
    root = tmp_path_factory.mktemp("labelled")
    rows = []
    for s in synthetic_crystals(40, seed=3):
        name = f"{s.id}.extxyz"
        write(root / name, s.to_ase())
        rows.append((name, _volume_per_atom(s)))
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "volume"])
        w.writerows(rows)
    return root


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A checkpoint in the pretraining format (weights random but fixed: stands in for a pretrained one)."""
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("ckpt") / "pretrained.pt"
    save_checkpoint(path, build_backbone(TINY), config={"note": "test"})
    return path


def _config(folder, mode, **extra):
    cfg = {
        "mode": mode,
        "data": {
            "sources": [str(folder)],
            "labels": "labels.csv",
            "label": "volume",
            "batch_size": 8,
            "val_fraction": 0.2,
            "test_fraction": 0.2,
        },
        "backbone": dict(TINY),
        "task": {"name": "regression", "transform": "log", "hidden": [16]},
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "patience": 5, "log_every_n_steps": 1},
    }
    for k, v in extra.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg


@pytest.mark.parametrize("mode", ["full", "frozen", "linear_probe"])
def test_modes_end_to_end(folder, pretrained, tmp_path, mode):
    cfg = _config(folder, mode, backbone={"checkpoint": str(pretrained)})
    s = finetune(cfg, run_dir=tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert s["sizes"] == {"train": 24, "val": 8, "test": 8}
    for name in ("config.yaml", "predictions.csv", "parity.png", "summary.json", "summary.md"):
        assert (run / name).is_file(), name
    assert (run / "parity.png").read_bytes()[:4] == b"\x89PNG"
    with open(run / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 40 and {r["split"] for r in rows} == {"train", "val", "test"}
    assert all(
        np.isfinite(float(r["prediction"])) and float(r["prediction"]) > 0 for r in rows
    )  # log transform
    # targets in the predictions file are the labels of the CSV, matched by file name
    labels = {r["file"]: float(r["volume"]) for r in csv.DictReader(open(folder / "labels.csv"))}
    assert sorted(float(r["target"]) for r in rows) == pytest.approx(
        sorted(labels.values()), rel=1e-6
    )
    test = s["scores"]["test"]
    assert set(test) == {"mae", "rmse", "mape", "max_error"} and test["rmse"] >= test["mae"]
    if mode == "linear_probe":
        assert (run / "probe.json").is_file() and "alpha" in s["chosen"]
    else:
        assert (run / "checkpoints" / "best.pt").is_file() and (run / "metrics.csv").is_file()
        ck = load_checkpoint(run / "checkpoints" / "best.pt")
        assert set(ck["tasks"]) == {"head"} and ck["task_configs"]["head"]["name"] == "regression"
        assert 0 <= s["chosen"]["epoch"] < 2
        # frozen really freezes: the backbone leaves training bit-identical; full fine-tuning changes it
        start = load_checkpoint(pretrained)["backbone"]
        last = load_checkpoint(run / "checkpoints" / "last.pt")
        same = all(torch.equal(start[k], last["backbone"][k]) for k in start)
        assert same == (mode == "frozen")
        head_trainable = {k for k in last["tasks"]["head"] if "readout" in k or "mlp" in k}
        assert head_trainable and all(
            torch.isfinite(v).all() for v in last["tasks"]["head"].values()
        )


def test_linear_probe_matches_sklearn(folder, pretrained, tmp_path):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from atomssl.data import iter_structures
    from atomssl.train import load_backbone

    alphas = [0.01, 1.0, 100.0]
    cfg = _config(
        folder, "linear_probe", backbone={"checkpoint": str(pretrained)}, probe={"alphas": alphas}
    )
    s = finetune(cfg, run_dir=tmp_path / "p", progress=False)
    preds = {r["id"]: r for r in csv.DictReader(open(tmp_path / "p" / "predictions.csv"))}
    # independent path: embed_structures (builds its own graphs) + sklearn directly
    structures = {st.id: st for st in iter_structures(folder)}
    labels = {r["file"]: float(r["volume"]) for r in csv.DictReader(open(folder / "labels.csv"))}

    def split(name):
        keys = sorted(k for k, r in preds.items() if r["split"] == name)
        emb = embed_structures([structures[k] for k in keys], load_backbone(pretrained))[
            "structure"
        ].astype(np.float64)
        return keys, emb, np.array([labels[Path(structures[k].source).name] for k in keys])

    (_, xtr, ytr), (_, xva, yva), (kte, xte, _) = split("train"), split("val"), split("test")
    lo, hi = np.log(ytr).min(), np.log(ytr).max()  # predictions are kept within the training range
    val_mae = {}
    for a in alphas:
        m = make_pipeline(StandardScaler(), Ridge(alpha=a)).fit(xtr, np.log(ytr))
        val_mae[a] = np.abs(np.exp(np.clip(m.predict(xva), lo, hi)) - yva).mean()
    best = min(val_mae, key=val_mae.get)
    assert s["chosen"]["alpha"] == best
    ref = make_pipeline(StandardScaler(), Ridge(alpha=best)).fit(xtr, np.log(ytr))
    ours = np.array([float(preds[k]["prediction"]) for k in kte])
    np.testing.assert_allclose(ours, np.exp(np.clip(ref.predict(xte), lo, hi)), rtol=1e-5)
    probe = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert probe["alpha"] == best and len(probe["coef"]) == xtr.shape[1]


def test_classification_from_ase_db_key(tmp_path, pretrained):
    db = tmp_path / "s.db"
    with connect(db) as con:
        for s in synthetic_crystals(30, seed=5):
            kind = "dense" if _volume_per_atom(s) < 16 else "open"
            con.write(s.to_ase(), phase=kind)
    cfg = {
        "mode": "full",
        "data": {
            "sources": [str(db)],
            "label": "phase",
            "batch_size": 8,
            "val_fraction": 0.2,
            "test_fraction": 0.2,
        },
        "backbone": {"checkpoint": str(pretrained)},
        "task": {"name": "classification", "hidden": [16]},
        "trainer": {"max_epochs": 2, "accelerator": "cpu"},
    }
    s = finetune(cfg, run_dir=tmp_path / "c", progress=False)
    assert s["classes"] == ["dense", "open"]
    assert {"accuracy", "balanced_accuracy", "f1_macro", "log_loss"} <= set(s["scores"]["test"])
    rows = list(csv.DictReader(open(tmp_path / "c" / "predictions.csv")))
    assert {r["prediction"] for r in rows} <= {"dense", "open"} and {"p_dense", "p_open"} <= set(
        rows[0]
    )
    assert all(abs(float(r["p_dense"]) + float(r["p_open"]) - 1) < 1e-5 for r in rows)
    # the same task as a linear probe: logistic regression with C chosen on validation
    cfg["mode"] = "linear_probe"
    s = finetune(cfg, run_dir=tmp_path / "l", progress=False)
    assert "C" in s["chosen"] and 0 <= s["scores"]["test"]["accuracy"] <= 1


def test_json_labels_missing_labels_and_cli(folder, tmp_path):
    labels = {r["file"]: float(r["volume"]) for r in csv.DictReader(open(folder / "labels.csv"))}
    partial = dict(list(labels.items())[:30])
    (tmp_path / "labels.json").write_text(json.dumps(partial))
    cfg = _config(folder, "full", data={"labels": str(tmp_path / "labels.json")})
    with pytest.raises(ConfigError, match=r"10 structure\(s\) have no value .*labels.json"):
        finetune(cfg, run_dir=tmp_path / "x", progress=False)
    cfg["data"]["skip_unlabelled"] = True
    cfg["mode"] = "linear_probe"
    s = finetune(cfg, run_dir=tmp_path / "x", progress=False)
    assert sum(s["sizes"].values()) == 30
    # the command line: YAML + overrides + shortcuts
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(_config(folder, "full")))
    rc = main(
        [
            "finetune",
            "--config",
            str(tmp_path / "c.yaml"),
            "--out",
            str(tmp_path / "cli"),
            "--mode",
            "frozen",
            "--no-progress",
            "trainer.max_epochs=1",
        ]
    )
    assert rc == 0
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["mode"] == "frozen"
    assert (
        main(
            [
                "finetune",
                "--config",
                str(tmp_path / "c.yaml"),
                "--out",
                str(tmp_path / "bad"),
                "mode=nope",
            ]
        )
        == 1
    )


def test_resuming_an_early_stopped_run_trains_no_further(folder, tmp_path, caplog):
    """last.pt of the epoch that stopped the run holds early stopping's verdict: --resume (the
    run's own config.yaml) ends at once, with the same weights, best epoch and predictions."""
    import logging

    fast = {"lr": 0.05, "scheduler": "constant"}
    cfg = _config(folder, "full", optim=fast, trainer={"max_epochs": 10, "patience": 1})
    run = tmp_path / "run"
    first = finetune(cfg, run_dir=run, progress=False)
    assert first["chosen"]["epochs_run"] < 10  # stopped early
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    predictions = (run / "predictions.csv").read_text()
    caplog.set_level(logging.INFO)
    assert main(["finetune", "--resume", str(run), "--no-progress"]) == 0
    assert f"resuming from {run / 'checkpoints' / 'last.pt'}" in caplog.text
    again = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert again["global_step"] == last["global_step"]
    assert all(torch.equal(last["backbone"][k], again["backbone"][k]) for k in last["backbone"])
    second = json.loads((run / "summary.json").read_text())
    assert second["chosen"] == first["chosen"]
    assert (run / "predictions.csv").read_text() == predictions
    assert main(["finetune", "--resume", str(tmp_path / "nowhere")]) == 1


def test_frozen_module_trains_only_the_head(pretrained):
    from atomssl.train import FinetuneModule
    from atomssl.train._finetune import prepare_config

    cfg = prepare_config(
        {"mode": "frozen", "backbone": {"checkpoint": str(pretrained)}, "task": {"hidden": [8]}}
    )
    m = FinetuneModule(cfg, {"mean": 0.0, "std": 1.0})
    assert not any(p.requires_grad for p in m.backbone.parameters())
    head = [p for p in m.task.parameters() if p.requires_grad]
    assert head and len(head) == len(list(m.task.parameters()))
    # the head owns its own Set2Set readouts (trainable although the backbone is frozen)
    assert any(n.startswith("readout.node_s2s") for n, _ in m.task.named_parameters())
    m.train()
    assert m.task.training and not m.backbone.training  # frozen backbone stays in eval mode


def test_heads_transform_round_trip_and_invariance():
    from atomssl.graph import collate, to_graph
    from atomssl.task import build_task

    torch.manual_seed(0)
    bb = build_backbone(TINY).double().eval()
    for readout in ("set2set", "graph", "mean"):
        task = build_task(
            {"name": "regression", "transform": "log", "mean": 1.0, "std": 0.5, "readout": readout},
            bb,
        ).double()
        y = torch.tensor([0.5, 1.0, 7.0], dtype=torch.float64)
        torch.testing.assert_close(task.inverse_transform(task.forward_transform(y)), y)
        s = synthetic_crystals(1, seed=2)[0]
        perm = np.random.default_rng(0).permutation(s.n_atoms)
        shuffled = s.copy(numbers=s.numbers[perm], positions=s.positions[perm])
        batch = collate(
            [
                to_graph(s, cutoff=3.5, dtype=torch.float64),
                to_graph(shuffled, cutoff=3.5, dtype=torch.float64),
            ]
        )
        with torch.no_grad():
            p = task.predict(batch, bb)
        assert p.shape == (2,) and bool((p > 0).all())
        torch.testing.assert_close(p[0], p[1], rtol=1e-9, atol=1e-12)  # atom order does not matter
    with pytest.raises(ConfigError, match="transform"):
        build_task({"name": "regression", "transform": "sqrt"}, bb)
    with pytest.raises(ConfigError, match="n_classes"):
        build_task({"name": "classification", "n_classes": 1}, bb)


# ------------------------------------------------------------------ label columns: right or refused
def _write_csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_a_csv_label_column_that_does_not_exist_is_refused(folder, tmp_path, capsys):
    """``data.label=bandgap`` with a CSV holding ``band_gap``: an error naming the columns, through
    the Python API and the command line, never the table's second column."""
    rows = list(csv.reader(open(folder / "labels.csv")))[1:]
    table = _write_csv(
        tmp_path / "labels.csv", ["file", "band_gap", "volume"], [(f, 1.0, v) for f, v in rows]
    )
    cfg = _config(folder, "linear_probe", data={"labels": str(table), "label": "bandgap"})
    with pytest.raises(
        ConfigError,
        match=r"label 'bandgap' not found in .*labels.csv; available columns: file, band_gap, volume",
    ):
        finetune(cfg, run_dir=tmp_path / "api", progress=False)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rc = main(
        [
            "finetune",
            "--config",
            str(tmp_path / "c.yaml"),
            "--out",
            str(tmp_path / "cli"),
            "--no-progress",
            "data.label=bandgap",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert (
        "label 'bandgap' not found in" in err and "available columns: file, band_gap, volume" in err
    )
    assert not (tmp_path / "cli" / "summary.json").exists()
    # several value columns and no label named: the name is required
    cfg["data"]["label"] = None
    with pytest.raises(
        ConfigError,
        match=r"2 value columns \(band_gap, volume\): name the one to learn with data.label",
    ):
        finetune(cfg, run_dir=tmp_path / "api", progress=False)


def test_a_csv_with_one_value_column_is_used_and_named(folder, caplog):
    import logging

    from atomssl.evaluate._finetune import load_labelled

    cfg = _config(folder, "linear_probe", data={"label": None})
    with caplog.at_level(logging.INFO, logger="atomssl"):
        data, _, _ = load_labelled(cfg)
    assert len(data) == 40
    assert any(
        "column 'volume'" in r.getMessage() and "labels.csv" in r.getMessage()
        for r in caplog.records
    )


def test_csv_rows_ids_and_values_are_checked(folder, tmp_path):
    from atomssl.data import load_structures
    from atomssl.data._labels import read_labels_file, resolve_labels

    structures = load_structures(folder)
    rows = list(csv.reader(open(folder / "labels.csv")))[1:]

    def resolve(header, body, **dcfg):
        path = _write_csv(tmp_path / "t.csv", header, body)
        return resolve_labels(
            structures, {"labels": str(path), "label": "volume", **dcfg}, "regression"
        )

    values, kept, _ = resolve(["file", "volume"], rows)  # the good table
    assert len(values) == 40 and np.isfinite(values).all()
    # a value that is not a number names its line and key
    bad = [list(r) for r in rows]
    bad[4][1] = "n/a"
    with pytest.raises(
        ConfigError, match=rf"line 6 \(file '{bad[4][0]}'\): 'volume' is 'n/a', not a number"
    ):
        resolve(["file", "volume"], bad)
    bad[4][1] = "nan"
    with pytest.raises(ConfigError, match=r"line 6 .*not a finite number"):
        resolve(["file", "volume"], bad)
    # an id given twice
    with pytest.raises(ConfigError, match=rf"file '{rows[0][0]}' appears twice \(lines 2 and 42\)"):
        resolve(["file", "volume"], rows + [rows[0]])
    # an id column that does not match the structures: names what is there
    with pytest.raises(
        ConfigError, match=r"no structure matches a key of .*t.csv \(first keys there: mp-1, mp-2"
    ):
        resolve(["id", "volume"], [(f"mp-{i}", 1.0) for i in range(1, 41)])
    # some structures missing: the first ones are named
    with pytest.raises(
        ConfigError,
        match=rf"2 structure\(s\) have no value in file .*\(first: .*{Path(rows[38][0]).stem}",
    ):
        resolve(["file", "volume"], rows[:38])
    # one key matching several structures: every frame of a file would get the file's label
    traj = tmp_path / "frames" / "traj.extxyz"
    traj.parent.mkdir()
    write(traj, [s.to_ase() for s in synthetic_crystals(3, seed=1)])
    frames = load_structures(traj)
    one = _write_csv(tmp_path / "u.csv", ["file", "x"], [("traj.extxyz", "1")])
    assert read_labels_file(one, None) == {"traj.extxyz": "1"}
    with pytest.raises(
        ConfigError, match=r"key 'traj.extxyz' of .*u.csv matches 3 structures .*name@frame"
    ):
        resolve_labels(frames, {"labels": str(one)}, "regression")
    per_frame = _write_csv(
        tmp_path / "v.csv", ["file", "x"], [(f"traj.extxyz@{i}", str(i)) for i in range(3)]
    )
    assert resolve_labels(frames, {"labels": str(per_frame)}, "regression")[0].tolist() == [
        0.0,
        1.0,
        2.0,
    ]


def test_json_label_fields_are_checked(folder, tmp_path):
    from atomssl.train._finetune import read_labels_file

    records = [
        {"file": f, "band_gap": 1.0, "volume": float(v)}
        for f, v in list(csv.reader(open(folder / "labels.csv")))[1:]
    ]
    path = tmp_path / "l.json"
    path.write_text(json.dumps(records))
    assert len(read_labels_file(path, "volume", numeric=True)) == 40
    with pytest.raises(
        ConfigError,
        match=r"label 'bandgap' not found in .*l.json; available fields: band_gap, volume",
    ):
        read_labels_file(path, "bandgap")
    with pytest.raises(ConfigError, match=r"2 value columns"):
        read_labels_file(path, None)
    path.write_text(json.dumps(records + records[:1]))
    with pytest.raises(ConfigError, match=r"appears twice \(record 0 .* and record 40"):
        read_labels_file(path, "volume")
    path.write_text('{"a": 1.0, "a": 2.0}')
    with pytest.raises(ConfigError, match=r"key 'a' appears twice"):
        read_labels_file(path, None)


def test_an_ase_db_label_that_does_not_exist_is_refused(tmp_path):
    db = tmp_path / "s.db"
    with connect(db) as con:
        for s in synthetic_crystals(12, seed=5):
            con.write(s.to_ase(), band_gap=float(s.n_atoms))
    cfg = {
        "mode": "linear_probe",
        "data": {
            "sources": [str(db)],
            "label": "bandgap",
            "val_fraction": 0.2,
            "test_fraction": 0.2,
        },
        "backbone": dict(TINY),
        "trainer": {"max_epochs": 1, "accelerator": "cpu"},
    }
    with pytest.raises(
        ConfigError, match=r"label 'bandgap' not found in .*s.db; available labels: band_gap"
    ):
        finetune(cfg, run_dir=tmp_path / "r", progress=False)


def test_a_built_in_dataset_label_that_does_not_exist_is_refused(tmp_path, caplog):
    """matbench_dielectric's label is ``n``: another name is refused; no name takes ``n`` (logged)."""
    import logging

    from atomssl.evaluate._finetune import load_labelled

    cfg = {
        "mode": "linear_probe",
        "data": {"sources": [{"name": "matbench_dielectric", "limit": 12}], "label": "bandgap"},
        "backbone": dict(TINY),
    }
    with pytest.raises(
        ConfigError, match=r"label 'bandgap' not found in matbench_dielectric; available labels: n$"
    ):
        finetune(cfg, run_dir=tmp_path / "r", progress=False)
    cfg["data"]["label"] = None
    with caplog.at_level(logging.INFO, logger="atomssl"):
        data, _, structures = load_labelled(cfg)
    assert np.allclose(data.y, [s.labels["n"] for s in structures])
    assert any("'n'" in r.getMessage() for r in caplog.records)
