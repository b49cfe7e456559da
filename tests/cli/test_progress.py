"""Long loops show progress on stderr (and nothing with ``--no-progress``): motif inpaint and
sample, evaluate folds, learning-curve runs, embed, data simulate, the demo's graphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.build import bulk

from atomssl.cli.main import main
from atomssl.data import Structure
from atomssl.graph import to_graph
from atomssl.representation import build_backbone
from atomssl.train import LabelledGraphs, save_checkpoint, synthetic_crystals

TINY = {"name": "megnet", "n_blocks": 1, "dense": [8, 8], "conv": [8, 8, 8], "n_gaussians": 12,
        "cutoff": 3.5}  # fmt: skip


@pytest.fixture
def bars(monkeypatch):
    """Bars drawn at once and at every count (normally only once a loop has run a couple of
    seconds, and at most twice a second)."""
    monkeypatch.setattr("atomssl.utils._progress.DELAY", 0.0)
    monkeypatch.setattr("atomssl.utils._progress.MININTERVAL", 0.0)


@pytest.fixture(scope="module")
def tiny_task():
    """30 labelled crystals in 3 folds: stands in for a matbench task."""
    structures = synthetic_crystals(30, seed=11)
    graphs = [to_graph(s, cutoff=3.5) for s in structures]
    y = np.array([abs(np.linalg.det(s.cell)) / s.n_atoms for s in structures])
    rows = np.random.default_rng(0).permutation(30)
    folds = [(np.sort(np.setdiff1d(rows, t)), np.sort(t)) for t in np.array_split(rows, 3)]
    return LabelledGraphs(graphs, y, [f"mb-{i}" for i in range(30)]), folds


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, build_backbone(TINY), config={"note": "test"})
    return path


def _eval_config(tmp_path: Path) -> Path:
    cfg = {"backbone": TINY, "task": {"hidden": [8]}, "data": {"batch_size": 8},
           "trainer": {"max_epochs": 1, "accelerator": "cpu"}}  # fmt: skip
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_evaluate_shows_each_fold_with_its_epochs(tiny_task, tmp_path, monkeypatch, capsys, bars):
    monkeypatch.setattr("atomssl.evaluate._matbench._load_task", lambda task, config: tiny_task)
    argv = ["evaluate", "matbench_dielectric", "--config", str(_eval_config(tmp_path)),
            "--folds", "0,1", "trainer.max_epochs=2"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "on")]) == 0
    err = capsys.readouterr().err
    assert "matbench_dielectric folds" in err and "2/2" in err  # fold i/n
    assert "fold 0: epoch 1/2" in err and "fold 1: epoch 2/2, val mae" in err
    assert "Epoch 0" not in err  # Lightning's own per-epoch bar stays off

    assert main([*argv, "--out", str(tmp_path / "off"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "folds" not in err and "epoch" not in err
    done = json.loads((tmp_path / "off" / "fold_1" / "fold_result.json").read_text())
    assert done["parameters"]["chosen_on_validation"]["epochs_run"] == 2  # the override applied


def test_fold_scores_are_logged_with_their_rank(tiny_task, tmp_path, caplog):
    from atomssl.evaluate import evaluate_matbench

    cfg = yaml.safe_load(_eval_config(tmp_path).read_text())
    caplog.set_level("INFO")
    evaluate_matbench("t", cfg, out=tmp_path, folds="1,2", progress=False, dataset=tiny_task)
    lines = [r.getMessage() for r in caplog.records if "test MAE" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["fold 1 (1/2)", "fold 2 (2/2)"]


def test_learning_curve_runs_show_progress(tiny_task, tiny_checkpoint, tmp_path, monkeypatch,
                                           capsys, bars):  # fmt: skip
    from atomssl.evaluate._curves import learning_curves

    monkeypatch.setattr("atomssl.evaluate._curves._load_task", lambda task, config: tiny_task)
    cfg = yaml.safe_load(_eval_config(tmp_path).read_text())
    learning_curves(cfg, tiny_checkpoint, tmp_path / "on", sizes="8", seeds="0", progress=True)
    err = capsys.readouterr().err
    assert "learning-curve runs" in err and "2/2" in err
    assert "size 8 seed 0 scratch: epoch 1/1" in err and "size 8 seed 0 pretrained: test MAE" in err
    learning_curves(cfg, tiny_checkpoint, tmp_path / "off", sizes="8", seeds="0", progress=False)
    assert "runs" not in capsys.readouterr().err


@pytest.mark.slow
def test_learning_curve_runs_in_parallel_processes_give_the_same_rows(tiny_checkpoint, tmp_path):
    """``workers=2``: the runs go to two spawned processes (one torch thread each); each run is
    seeded on its own, so the rows equal those of the runs one after another."""
    import csv

    from atomssl.evaluate._curves import learning_curves

    cfg = yaml.safe_load(_eval_config(tmp_path).read_text())
    rows = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        s = learning_curves(cfg, tiny_checkpoint, out, sizes="8,12", seeds="0", test_limit=10,
                            workers=workers)  # fmt: skip
        assert s["settings"] == 2
        with open(out / "runs.csv") as fh:
            rows[workers] = {(r["size"], r["variant"]): float(r["mae"]) for r in csv.DictReader(fh)}
    assert sorted(rows[2]) == sorted(rows[1]) and len(rows[1]) == 4
    for key, mae in rows[1].items():
        assert rows[2][key] == pytest.approx(mae, rel=1e-3), key


@pytest.fixture(scope="module")
def motif_model(tmp_path_factory):
    from atomssl.motif import write_cells

    root = tmp_path_factory.mktemp("motif")
    atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat(2)
    cells = []
    for seed in range(3):
        a = atoms.copy()
        a.positions += np.random.default_rng(seed).normal(scale=0.05, size=a.positions.shape)
        cells.append(Structure.from_ase(a))
    write_cells(cells, root / "cells.extxyz")
    argv = ["motif", "train", "--cells", str(root / "cells.extxyz"), "--out", str(root / "train"),
            "--no-progress", "train.epochs=2"]  # fmt: skip
    assert main(argv) == 0
    return root / "cells.extxyz", root / "train" / "checkpoints" / "model.pt"


def test_motif_inpaint_and_sample_show_progress(motif_model, tmp_path, capsys, bars):
    cells, ckpt = motif_model
    quick = ["inpaint.cases=3", "inpaint.fixed=[7]", "inpaint.restarts=2", "inpaint.steps=4"]
    base = ["--checkpoint", str(ckpt), "--cells", str(cells)]
    assert main(["motif", "inpaint", *base, "--out", str(tmp_path / "a"), *quick]) == 0
    err = capsys.readouterr().err
    assert "inpaint 7 of 8 fixed, 3 motifs" in err and "4/4" in err
    assert main(["motif", "inpaint", *base, "--out", str(tmp_path / "b"), *quick,
                 "--no-progress"]) == 0  # fmt: skip
    assert "inpaint 7" not in capsys.readouterr().err

    sample = ["motif", "sample", *base, "sample.n=5", "sample.decoding=metric"]
    assert main([*sample, "--out", str(tmp_path / "c")]) == 0
    assert "decode 5 samples" in capsys.readouterr().err
    assert main([*sample, "--out", str(tmp_path / "d"), "--no-progress"]) == 0
    assert "decode" not in capsys.readouterr().err


def test_embed_shows_progress_over_structures(tiny_checkpoint, tmp_path, capsys, bars):
    from ase.io import write

    for s in synthetic_crystals(3, seed=2):
        write(tmp_path / f"{s.id}.extxyz", s.to_ase())
    argv = ["embed", str(tmp_path), "--checkpoint", str(tiny_checkpoint)]
    assert main([*argv, "--out", str(tmp_path / "e.npz")]) == 0
    err = capsys.readouterr().err
    assert "embed: " in err and "struct [" in err  # a count: the total is not known ahead
    assert main([*argv, "--out", str(tmp_path / "g.npz"), "--no-progress"]) == 0
    assert "struct" not in capsys.readouterr().err


def test_data_simulate_shows_md_steps_on_stderr(tmp_path, capsys, bars):
    argv = ["data", "simulate", "simulate_lj_fcc", "n_cells=3", "melt_steps=20",
            "cool_steps=40", "hold_steps=20", "n_frames=3"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "a.extxyz")]) == 0
    out = capsys.readouterr()
    assert "lj_fcc: 100%" in out.err and "step/s" in out.err and "step" not in out.out
    assert "a.extxyz: 3 frames" in out.out
    assert main([*argv, "--out", str(tmp_path / "b.extxyz"), "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "step" not in out.err and "b.extxyz: 3 frames" in out.out


def test_demo_dataset_stage_shows_graph_progress_and_its_time(tmp_path, capsys, bars):
    argv = ["demo", "--limit", "20", "--skip-transfer"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr()
    assert "graphs @ 5 A" in out.err
    assert "demo done in" in out.out and "wall" in out.out
    timings = json.loads((tmp_path / "a" / "timings.json").read_text())
    assert timings["total"] >= timings["dataset"] > 0
    assert main([*argv, "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert "graphs @" not in capsys.readouterr().err


def test_data_import_bar_on_a_terminal_unless_no_progress(tmp_path, capsys, monkeypatch):
    import sys

    from ase.io import write

    for s in synthetic_crystals(2, seed=4):
        write(tmp_path / f"{s.id}.extxyz", s.to_ase())
    files = sorted(str(p) for p in tmp_path.glob("*.extxyz"))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # as on a terminal
    assert main(["data", "import", *files, "--out", str(tmp_path / "a.db")]) == 0
    assert "import -> a.db" in capsys.readouterr().err
    assert main(["data", "import", *files, "--out", str(tmp_path / "b.db"), "--no-progress"]) == 0
    assert "import ->" not in capsys.readouterr().err
