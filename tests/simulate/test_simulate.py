"""LAMMPS crystallisation runner: tabulated potentials, frames, metadata, energies vs numpy."""

import json

import numpy as np
import pytest

from atomssl.data import read
from atomssl.simulate import CrystallisationConfig, PairPotential, SimulationError, crystallise


@pytest.mark.parametrize(
    "pot",
    [
        PairPotential("lj", cutoff=2.5),
        PairPotential("ipl", {"n": 6}, cutoff=2.2),
        PairPotential("opp", {"k": 7.0, "phi": 0.5, "r0": 1.25}, cutoff=2.6, r_min=0.6),
    ],
)
def test_force_is_minus_energy_derivative_and_energy_vanishes_at_cutoff(pot):
    e, f = pot.functions()
    r = np.linspace(pot.r_min + 0.05, pot.cutoff - 0.05, 200)
    h = 1e-6
    np.testing.assert_allclose(f(r), -(e(r + h) - e(r - h)) / (2 * h), rtol=1e-5, atol=1e-6)
    assert pot.energy(pot.cutoff) == 0.0 and pot.energy(pot.cutoff + 1) == 0.0


def test_bad_potentials_are_typed_errors():
    with pytest.raises(SimulationError, match="unknown pair potential"):
        PairPotential("morse")
    with pytest.raises(SimulationError, match="needs params k and phi"):
        PairPotential("opp", {"k": 7.0})
    with pytest.raises(SimulationError, match="unknown simulation settings"):
        CrystallisationConfig.from_dict({"temperature": 1.0})


def _pair_energy(frame, pot):
    """Brute-force potential energy per particle (minimum image in an orthorhombic box)."""
    x, L = frame.positions, np.diag(frame.cell)
    d = x[:, None, :] - x[None, :, :]
    d -= L * np.round(d / L)
    r = np.linalg.norm(d, axis=-1)[np.triu_indices(len(x), 1)]
    return pot.energy(r).sum() / len(x)


@pytest.mark.parametrize("kind", ["lj", "ipl"])
def test_tiny_crystallisation_run_writes_frames_with_metadata(tmp_path, kind):
    pot = (
        PairPotential("lj", cutoff=2.5)
        if kind == "lj"
        else PairPotential("ipl", {"n": 6}, cutoff=2.2)
    )
    cfg = CrystallisationConfig(
        name=f"tiny_{kind}",
        potential=pot,
        n_cells=4,
        ensemble="npt" if kind == "lj" else "nvt",
        t_melt=1.5,
        t_final=0.8,
        melt_steps=50,
        cool_steps=100,
        hold_steps=50,
        n_frames=5,
        seed=3,
    )
    path = tmp_path / "traj.extxyz"
    frames = crystallise(cfg, path)
    assert len(frames) == 5 and all(f.n_atoms == 256 for f in frames)
    back = read(path)
    assert len(back) == 5
    info = back[-1].labels
    assert info["seed"] == 3 and info["stage"] == "hold" and info["step"] == 200
    assert json.loads(info["potential"])["kind"] == kind
    assert json.loads(info["schedule"])["t_final"] == 0.8
    np.testing.assert_allclose(back[-1].positions, frames[-1].positions, atol=1e-6)
    # LAMMPS' potential energy equals the brute-force pair sum of the written frame
    assert _pair_energy(frames[-1], pot) == pytest.approx(
        info["potential_energy"], rel=2e-4, abs=2e-4
    )
    # same seed, same trajectory
    again = crystallise(cfg)
    np.testing.assert_allclose(again[-1].positions, frames[-1].positions, atol=1e-8)


def test_data_simulate_cli_from_config_with_overrides(tmp_path, capsys):
    from pathlib import Path

    from atomssl.cli.main import main

    cfg = Path(__file__).parents[2] / "src" / "atomssl" / "configs" / "simulate_lj_fcc.yaml"
    out = tmp_path / "t.extxyz"
    rc = main(
        [
            "data",
            "simulate",
            str(cfg),
            "n_cells=3",
            "melt_steps=20",
            "cool_steps=40",
            "hold_steps=20",
            "n_frames=3",
            "seed=5",
            "--out",
            str(out),
            "-q",
        ]
    )
    assert rc == 0
    frames = read(out)
    assert len(frames) == 3 and frames[0].n_atoms == 108 and frames[0].labels["seed"] == 5
    assert main(["data", "simulate", str(cfg), "ensemble=npx", "--out", str(out), "-q"]) == 1
    assert "ensemble" in capsys.readouterr().err
