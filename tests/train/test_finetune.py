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
from atomssl.representation import build_backbone
from atomssl.train import embed_structures, finetune, load_checkpoint, save_checkpoint, synthetic_crystals

TINY = {"name": "megnet", "n_blocks": 1, "dense": [8, 8], "conv": [8, 8, 8], "n_gaussians": 12, "cutoff": 3.5}


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
        "data": {"sources": [str(folder)], "labels": "labels.csv", "label": "volume", "batch_size": 8,
                 "val_fraction": 0.2, "test_fraction": 0.2},
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
    assert all(np.isfinite(float(r["prediction"])) and float(r["prediction"]) > 0 for r in rows)  # log transform
    # targets in the predictions file are the labels of the CSV, matched by file name
    labels = {r["file"]: float(r["volume"]) for r in csv.DictReader(open(folder / "labels.csv"))}
    assert sorted(float(r["target"]) for r in rows) == pytest.approx(sorted(labels.values()), rel=1e-6)
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
        assert head_trainable and all(torch.isfinite(v).all() for v in last["tasks"]["head"].values())


def test_linear_probe_matches_sklearn(folder, pretrained, tmp_path):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from atomssl.data import iter_structures
    from atomssl.train import load_backbone

    alphas = [0.01, 1.0, 100.0]
    cfg = _config(folder, "linear_probe", backbone={"checkpoint": str(pretrained)}, probe={"alphas": alphas})
    s = finetune(cfg, run_dir=tmp_path / "p", progress=False)
    preds = {r["id"]: r for r in csv.DictReader(open(tmp_path / "p" / "predictions.csv"))}
    # independent path: embed_structures (builds its own graphs) + sklearn directly
    structures = {st.id: st for st in iter_structures(folder)}
    labels = {r["file"]: float(r["volume"]) for r in csv.DictReader(open(folder / "labels.csv"))}

    def split(name):
        keys = sorted(k for k, r in preds.items() if r["split"] == name)
        emb = embed_structures([structures[k] for k in keys], load_backbone(pretrained))["structure"].astype(np.float64)
        return keys, emb, np.array([labels[Path(structures[k].source).name] for k in keys])

    (ktr, xtr, ytr), (kva, xva, yva), (kte, xte, yte) = split("train"), split("val"), split("test")
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
        "data": {"sources": [str(db)], "label": "phase", "batch_size": 8, "val_fraction": 0.2, "test_fraction": 0.2},
        "backbone": {"checkpoint": str(pretrained)},
        "task": {"name": "classification", "hidden": [16]},
        "trainer": {"max_epochs": 2, "accelerator": "cpu"},
    }
    s = finetune(cfg, run_dir=tmp_path / "c", progress=False)
    assert s["classes"] == ["dense", "open"]
    assert {"accuracy", "balanced_accuracy", "f1_macro", "log_loss"} <= set(s["scores"]["test"])
    rows = list(csv.DictReader(open(tmp_path / "c" / "predictions.csv")))
    assert {r["prediction"] for r in rows} <= {"dense", "open"} and {"p_dense", "p_open"} <= set(rows[0])
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
    rc = main(["finetune", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "cli"), "--mode", "frozen",
               "--no-progress", "trainer.max_epochs=1"])
    assert rc == 0
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["mode"] == "frozen"
    assert main(["finetune", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "bad"), "mode=nope"]) == 1


def test_frozen_module_trains_only_the_head(pretrained):
    from atomssl.train import FinetuneModule
    from atomssl.train._finetune import prepare_config

    cfg = prepare_config({"mode": "frozen", "backbone": {"checkpoint": str(pretrained)}, "task": {"hidden": [8]}})
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
        task = build_task({"name": "regression", "transform": "log", "mean": 1.0, "std": 0.5, "readout": readout}, bb).double()
        y = torch.tensor([0.5, 1.0, 7.0], dtype=torch.float64)
        torch.testing.assert_close(task.inverse_transform(task.forward_transform(y)), y)
        s = synthetic_crystals(1, seed=2)[0]
        perm = np.random.default_rng(0).permutation(s.n_atoms)
        shuffled = s.copy(numbers=s.numbers[perm], positions=s.positions[perm])
        batch = collate([to_graph(s, cutoff=3.5, dtype=torch.float64), to_graph(shuffled, cutoff=3.5, dtype=torch.float64)])
        with torch.no_grad():
            p = task.predict(batch, bb)
        assert p.shape == (2,) and bool((p > 0).all())
        torch.testing.assert_close(p[0], p[1], rtol=1e-9, atol=1e-12)  # atom order does not matter
    with pytest.raises(ConfigError, match="transform"):
        build_task({"name": "regression", "transform": "sqrt"}, bb)
    with pytest.raises(ConfigError, match="n_classes"):
        build_task({"name": "classification", "n_classes": 1}, bb)
