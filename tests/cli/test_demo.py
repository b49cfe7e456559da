"""``atomssl demo`` on the first 50 matbench_dielectric structures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from atomssl.cli.main import main
from atomssl.data import MATBENCH_DIELECTRIC_MAD, load_matbench_dielectric
from atomssl.graph import radius_graph


def test_demo_limit_50_writes_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(["demo", "--out", str(run), "--limit", "50", "--no-progress", "--skip-transfer"]) == 0
    )
    printed = capsys.readouterr().out
    assert "matbench_dielectric (50 of 4764 structures)" in printed
    assert "MAD check" in printed and "OK" in printed

    summary = json.loads((run / "summary.json").read_text())
    structures = load_matbench_dielectric(limit=50)
    assert summary["count"] == 50
    assert (
        summary["mad_check"]["ok"]
        and abs(summary["mad_check"]["full_dataset"] - MATBENCH_DIELECTRIC_MAD) < 1e-6
    )
    n = np.array([s.labels["n"] for s in structures])
    assert summary["label_n"]["mean"] == np.float64(n.mean()).item()
    assert summary["atoms_per_structure"]["total"] == sum(s.n_atoms for s in structures)
    assert sum(f["test"] for f in summary["folds"]) == 50  # test folds partition the loaded rows
    assert all(f["train"] + f["test"] == 50 for f in summary["folds"])
    # edge count equals an independent neighbour-list pass at the same cutoff
    assert summary["graphs"]["count"] == 50
    assert summary["graphs"]["edges"] == sum(len(radius_graph(s, 5.0)) for s in structures)

    png = (run / "histograms.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert (run / "summary.txt").read_text().startswith("dataset")
    assert "cutoff: 5.0" in (run / "config.yaml").read_text()


def test_demo_rejects_bad_limit(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "r"), "--limit", "0"]) == 1
    assert "--limit must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_transfer_stage_with_shipped_backbone(tmp_path, capsys):
    """The transfer stage end to end (tiny budget): pretrained vs scratch table, curve and map."""
    from atomssl.cli.demo import run_transfer
    from atomssl.train import default_checkpoint

    if default_checkpoint() is None:
        pytest.fail("the shipped backbone atomssl/weights/default.pt is missing")
    res = run_transfer(tmp_path, sizes="20", seeds="0", epochs=1, test_limit=20, progress=False)
    assert res["learning_curves"]["settings"] == 1
    assert (tmp_path / "transfer" / "learning_curves.png").stat().st_size > 0
    assert (tmp_path / "embedding_map.png").stat().st_size > 0
    assert "pretrained beats scratch in" in capsys.readouterr().out
