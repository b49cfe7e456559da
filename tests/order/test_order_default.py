"""``atomssl order`` is right by default on trajectories it never saw (issue #24, item 4).

Three melt-quench trajectories are made here by plain LAMMPS (``dump custom``), each differing from the
development runs of ``benchmarks/order_default.py`` (LJ N = 500 / 384 hcp, IPL n = 6 bcc N = 432, IPL
n = 12 N = 500) in N, potential or protocol:

- LJ, N = 864, rho = 1.0, 2.0 -> 0.55 in 10,000 steps then held (the issue's case);
- LJ, N = 1372, rho = 1.0, slower cooling 2.0 -> 0.6 in 15,000 steps then held;
- Morse (alpha = 6, r0 = 1), N = 500, rho = 1.4, 2.0 -> 0.4 in 10,000 steps then held (a potential never used).

On each, with the shipped checkpoint and the default decision, against freud's ten Wolde solid fraction
computed in the same run: liquid frames (before the ten Wolde onset) have <= 5 % SSL-crystalline
particles; the final frame's SSL fraction is within 0.1 of ten Wolde's; the SSL onset is within 3 frames.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

LJ = ["pair_style lj/cut 2.5", "pair_coeff 1 1 1.0 1.0 2.5", "pair_modify shift yes"]
MORSE = ["pair_style morse 2.0", "pair_coeff 1 1 1.0 6.0 1.0", "pair_modify shift yes"]


def _melt_quench(
    path: Path,
    pair,
    rho: float,
    cells: int,
    t_melt: float,
    t_final: float,
    cool: int,
    hold: int,
    seed: int,
    every: int = 1000,
) -> Path:
    """Plain LAMMPS: fcc lattice -> melt at t_melt -> linear NVT cooling -> hold; ``dump custom`` frames."""
    from atomssl.simulate import run_lammps

    lines = [
        "units lj",
        "atom_style atomic",
        f"lattice fcc {rho}",
        f"region box block 0 {cells} 0 {cells} 0 {cells}",
        "create_box 1 box",
        "create_atoms 1 box",
        "mass 1 1.0",
        *pair,
        "neighbor 0.3 bin",
        "timestep 0.005",
        f"velocity all create {t_melt} {seed} dist gaussian",
        f"fix 1 all nvt temp {t_melt} {t_melt} 0.5",
        "run 2000",
        "unfix 1",
        f"dump d all custom {every} {path} id type x y z",
        "dump_modify d sort id",
        f"fix 1 all nvt temp {t_melt} {t_final} 0.5",
        f"run {cool}",
        "unfix 1",
        f"fix 1 all nvt temp {t_final} {t_final} 0.5",
        f"run {hold}",
    ]
    run_lammps(lines)
    return path


TRAJECTORIES = {
    "lj_N864_quench": dict(
        pair=LJ, rho=1.0, cells=6, t_melt=2.0, t_final=0.55, cool=10000, hold=30000, seed=4242
    ),
    "lj_N1372_slow_cooling": dict(
        pair=LJ, rho=1.0, cells=7, t_melt=2.0, t_final=0.6, cool=15000, hold=25000, seed=1234
    ),
    "morse_N500_rho1.4": dict(
        pair=MORSE, rho=1.4, cells=5, t_melt=2.0, t_final=0.4, cool=10000, hold=30000, seed=99
    ),
}


@pytest.fixture(scope="module")
def shipped():
    from atomssl.order._classify import default_order_checkpoint, load_order_backbone

    path = default_order_checkpoint()
    assert path is not None, "atomssl ships no atomssl/weights/order_default.pt"
    return path, load_order_backbone()


@pytest.fixture(scope="module")
def morse_dump(tmp_path_factory):
    return _melt_quench(
        tmp_path_factory.mktemp("morse") / "morse.dump", **TRAJECTORIES["morse_N500_rho1.4"]
    )


def _criteria(summary: dict, out: Path) -> dict:
    import csv

    rows = list(csv.DictReader((out / "frames.csv").read_text().splitlines()))
    ssl = np.array([float(r["ssl_crystalline_fraction"]) for r in rows])
    tw = np.array([float(r["steinhardt_solid_fraction"]) for r in rows])
    on = summary["onset_frame"]
    frames = [int(r["frame"]) for r in rows]
    assert on["steinhardt_solid_fraction"] is not None, (
        "the trajectory did not crystallise (ten Wolde)"
    )
    liquid = np.array(frames) < on["steinhardt_solid_fraction"]
    return {
        "liquid_ssl_max": float(ssl[liquid].max()),
        "liquid_ten_wolde_max": float(tw[liquid].max()),
        "final_ssl": float(ssl[-1]),
        "final_ten_wolde": float(tw[-1]),
        "onset_ssl": on["ssl_crystalline_fraction"],
        "onset_ten_wolde": on["steinhardt_solid_fraction"],
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TRAJECTORIES))
def test_default_decision_agrees_with_ten_wolde_on_unseen_lammps_trajectories(
    name, tmp_path, shipped, morse_dump, one_thread
):
    from atomssl.order import analyse_trajectory

    path = (
        morse_dump
        if name.startswith("morse")
        else _melt_quench(tmp_path / f"{name}.dump", **TRAJECTORIES[name])
    )
    out = tmp_path / "out"
    summary = analyse_trajectory(
        path,
        shipped[1],
        out,
        per_crystal=32,
        reference_n_min=256,
        format="lammps-dump-text",
        species={1: "Ar"},
    )
    assert summary["threshold_mode"] == "classifier"
    c = _criteria(summary, out)
    print(name, json.dumps(c))
    assert c["liquid_ssl_max"] <= 0.05, c
    assert abs(c["final_ssl"] - c["final_ten_wolde"]) <= 0.1, c
    assert c["onset_ssl"] is not None and abs(c["onset_ssl"] - c["onset_ten_wolde"]) <= 3, c
    z = np.load(out / "order.npz")
    assert z["p_crystalline"].shape == z["distance"].shape
    np.testing.assert_allclose(
        (z["p_crystalline"] > z["threshold"]).mean(axis=1)[-1], c["final_ssl"], atol=1e-6
    )


def test_subset_of_particles_gets_the_same_decision_as_the_whole_frame(
    tmp_path, shipped, one_thread
):
    """With --particles, neighbours (two hops) outside the subset are embedded too: same probabilities."""
    from atomssl.data import idealized_crystal
    from atomssl.order import embed_clouds, frame_clouds

    backbone = shipped[1]
    clf = backbone.order_classifier
    s = idealized_crystal("cF4-Cu", n_min=256, sigma=0.08, seed=1)
    clouds = frame_clouds(s)
    full = clf.frame_probability(s, np.arange(s.n_atoms), embed_clouds(backbone, clouds), None)
    sub = np.sort(np.random.default_rng(0).choice(s.n_atoms, 20, replace=False))
    part = clf.frame_probability(
        s, sub, embed_clouds(backbone, clouds[sub]), lambda i: embed_clouds(backbone, clouds[i])
    )
    np.testing.assert_allclose(part, full[sub], atol=1e-5)


def test_shipped_order_checkpoint_is_small_safe_and_documented(shipped):
    path, backbone = shipped
    assert 0 < path.stat().st_size <= 5 * 1024 * 1024
    ck = torch.load(path, map_location="cpu", weights_only=True)  # no pickled objects
    assert ck["backbone_config"]["name"] == "gaa" and ck.get("trainer") is None
    assert ck["order_classifier"]["format"] == "atomssl-order-classifier"
    doc = json.loads(path.with_suffix(".json").read_text())
    assert doc["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "benchmarks/order_default.py" in doc["command"]
    assert all(v["accuracy"] >= 0.95 for v in doc["validation"]["held_out_runs"].values())
    assert (
        backbone.order_classifier is not None
        and backbone.order_classifier.cut == ck["order_classifier"]["cut"]
    )


def test_cli_order_refuses_a_megnet_checkpoint_with_one_line(tmp_path, capsys):
    from ase.io import write

    from atomssl.cli.main import main
    from atomssl.data import idealized_crystal
    from atomssl.train import default_checkpoint

    traj = tmp_path / "t.extxyz"
    write(traj, idealized_crystal("cF4-Cu", n_min=108, sigma=0.05, seed=0).to_ase())
    assert (
        main(["order", str(traj), "-k", str(default_checkpoint()), "-o", str(tmp_path / "o"), "-q"])
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "megnet" in err and "per-particle" in err and "default.pt" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_cli_order_works_without_a_checkpoint(morse_dump, tmp_path, capsys, one_thread):
    from atomssl.cli.main import main

    out = tmp_path / "run"
    assert (
        main(["order", str(morse_dump), "--species", "1=Ar", "--stride", "4", "-o", str(out), "-q"])
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["threshold_mode"] == "classifier" and summary["frames"] == 11
    import csv

    rows = list(csv.DictReader((out / "frames.csv").read_text().splitlines()))
    assert {"ssl_crystalline_fraction", "steinhardt_solid_fraction"} <= set(rows[0])
    assert (
        float(rows[0]["ssl_crystalline_fraction"]) <= 0.05
        and float(rows[-1]["ssl_crystalline_fraction"]) >= 0.9
    )
    # the old decisions stay available
    assert (
        main(
            [
                "order",
                str(morse_dump),
                "--species",
                "1=Ar",
                "--stride",
                "4",
                "--threshold",
                "reference",
                "-o",
                str(tmp_path / "ref"),
                "-q",
            ]
        )
        == 0
    )
    assert (
        json.loads((tmp_path / "ref" / "summary.json").read_text())["threshold_mode"] == "reference"
    )


def test_a_checkpoint_without_a_head_falls_back_to_reference_and_refuses_classifier(
    tmp_path, capsys
):
    from ase.io import write

    from atomssl.cli.main import main
    from atomssl.data import idealized_crystal
    from atomssl.representation import build_backbone
    from atomssl.train._checkpoint import save_checkpoint

    torch.manual_seed(0)
    from atomssl.testing import tiny_gaa_config

    tiny = build_backbone(tiny_gaa_config(chiral=True))
    ckpt = save_checkpoint(tmp_path / "tiny.ckpt", tiny)
    traj = tmp_path / "t.extxyz"
    write(
        traj,
        [idealized_crystal("cF4-Cu", n_min=108, sigma=0.05, seed=i).to_ase() for i in range(2)],
    )
    assert (
        main(
            [
                "order",
                str(traj),
                "-k",
                str(ckpt),
                "--threshold",
                "classifier",
                "-o",
                str(tmp_path / "a"),
                "-q",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no order classifier" in err and "Traceback" not in err
    assert (
        main(["order", str(traj), "-k", str(ckpt), "-o", str(tmp_path / "b"), "--no-progress"]) == 0
    )
    assert "using --threshold reference" in capsys.readouterr().err
    assert (
        json.loads((tmp_path / "b" / "summary.json").read_text())["threshold_mode"] == "reference"
    )


@pytest.mark.slow
def test_default_decision_on_a_melt_quench_that_stays_amorphous(tmp_path, shipped, one_thread):
    """Blind check, added after the decision was fixed and passed unchanged: a Morse (alpha = 5) melt-quench
    at rho = 1.3 that does not crystallise within the run (ten Wolde stays below 1 %); the default
    decision calls at most 5 % of the particles crystalline in every frame."""
    from atomssl.order import analyse_trajectory

    morse5 = ["pair_style morse 2.0", "pair_coeff 1 1 1.0 5.0 1.0", "pair_modify shift yes"]
    path = _melt_quench(tmp_path / "m5.dump", pair=morse5, rho=1.3, cells=6, t_melt=2.0, t_final=0.45, cool=12000,
                        hold=30000, seed=7)  # fmt: skip
    out = tmp_path / "out"
    analyse_trajectory(path, shipped[1], out, per_crystal=32, reference_n_min=256, format="lammps-dump-text",
                       species={1: "Ar"})  # fmt: skip
    import csv

    rows = list(csv.DictReader((out / "frames.csv").read_text().splitlines()))
    assert (
        max(float(r["steinhardt_solid_fraction"]) for r in rows) < 0.01
    )  # amorphous by ten Wolde too
    assert max(float(r["ssl_crystalline_fraction"]) for r in rows) <= 0.05
