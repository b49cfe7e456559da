"""``atomssl motif`` in-process: train, sample, interpolate, inpaint, evaluate on tiny data; clean errors."""

import json

import numpy as np
import pytest
import torch
from ase.build import bulk

from atomssl.cli.main import main
from atomssl.data import Structure
from atomssl.motif import write_cells
from atomssl.motif._workflow import read_motifs, write_motifs


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    path = tmp_path_factory.mktemp("cells") / "cells.extxyz"
    atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat(2)
    out = []
    for seed in range(3):
        a = atoms.copy()
        a.positions += np.random.default_rng(seed).normal(scale=0.05, size=a.positions.shape)
        out.append(Structure.from_ase(a))
    write_cells(out, path)
    return path


def test_motif_cli_end_to_end(cells, tmp_path, capsys):
    run = tmp_path / "train"
    quick = [
        "inpaint.cases=4",
        "inpaint.fixed=[7]",
        "inpaint.restarts=2",
        "inpaint.steps=5",
        "sample.n=20",
    ]
    assert (
        main(
            [
                "motif",
                "train",
                "--cells",
                str(cells),
                "--out",
                str(run),
                "--no-progress",
                "train.epochs=3",
                "train.beta=1e-3",
            ]
        )
        == 0
    )
    ckpt = run / "checkpoints" / "model.pt"
    payload = torch.load(ckpt, weights_only=True)
    assert (
        payload["kind"] == "atomssl.motif.GramVAE"
        and payload["extra"]["config"]["train"]["epochs"] == 3
    )
    metrics = json.loads((run / "metrics.json").read_text())["reconstruction_heldout"]
    assert metrics["n"] == 64 and metrics["n_train"] == 128
    assert (run / "loss_curve.png").stat().st_size > 0 and (run / "history.csv").read_text().count(
        "\n"
    ) == 4

    assert (
        main(
            [
                "motif",
                "sample",
                "--checkpoint",
                str(ckpt),
                "--out",
                str(tmp_path / "s"),
                "sample.n=7",
            ]
        )
        == 0
    )
    samples = read_motifs(tmp_path / "s" / "samples.extxyz")
    assert samples.shape == (7, 8, 3)
    assert (tmp_path / "s" / "samples_vs_data.png").exists()

    assert (
        main(
            [
                "motif",
                "interpolate",
                "--checkpoint",
                str(ckpt),
                "--out",
                str(tmp_path / "i"),
                "interpolate.frames=5",
            ]
        )
        == 0
    )
    assert read_motifs(tmp_path / "i" / "frames.extxyz").shape == (5, 8, 3)

    # inpaint user-given partial motifs: 6 known neighbours each
    partial = read_motifs(tmp_path / "i" / "endpoints.extxyz")[:, :6]
    write_motifs(tmp_path / "partial.extxyz", partial)
    args = [
        "motif",
        "inpaint",
        "--checkpoint",
        str(ckpt),
        "--out",
        str(tmp_path / "p"),
        "--input",
        str(tmp_path / "partial.extxyz"),
    ]
    assert main(args + ["inpaint.restarts=2", "inpaint.steps=5"]) == 0
    filled = read_motifs(tmp_path / "p" / "inpainted.extxyz")
    assert filled.shape == (2, 8, 3)
    np.testing.assert_allclose(filled[:, :6], partial, atol=1e-6)

    assert (
        main(["motif", "evaluate", "--checkpoint", str(ckpt), "--out", str(tmp_path / "e"), *quick])
        == 0
    )
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert set(m) == {"structure", "reconstruction_heldout", "generation", "inpainting"}
    assert m["inpainting"]["7"]["cases"] == 4
    assert "inpainting, 7 fixed" in (tmp_path / "e" / "summary.md").read_text()
    assert (tmp_path / "e" / "inpaint_errors.png").exists()


def test_motif_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["motif", "sample"]) == 1
    assert "needs --checkpoint" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"junk")
    assert main(["motif", "sample", "--checkpoint", str(tmp_path / "bad.pt")]) == 1
    err = capsys.readouterr().err
    assert "bad.pt: not a torch checkpoint" in err and err.count("\n") == 1
    assert (
        main(
            [
                "motif",
                "train",
                "--cells",
                str(tmp_path / "none.extxyz"),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 1
    )
    assert "file not found" in capsys.readouterr().err
