"""``atomssl data`` sub-verbs, called in-process through the real argument parser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest

from atomssl.cli import data as data_cli
from atomssl.cli.main import main
from atomssl.data import StructureStore


@pytest.fixture
def files(tmp_path, small_atoms):
    d = tmp_path / "in"
    d.mkdir()
    ase.io.write(d / "good.extxyz", [small_atoms["si"], small_atoms["water"]])
    ase.io.write(d / "nacl.cif", small_atoms["nacl"])
    (d / "overlap.xyz").write_text("2\n\nAr 0 0 0\nAr 0 0 0.02\n")
    (d / "garbled.cif").write_bytes(b"\x00\x01 nonsense {{{")
    return d


def _run(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json_lists_every_entry_and_fails_on_bad(capsys, files):
    code, out, _ = _run(capsys, "data", "info", files, "--json")
    assert code == 1
    entries = json.loads(out)
    assert all(
        set(e) == {"source", "index", "formula", "n_atoms", "error", "warnings"} for e in entries
    )
    by = {(Path(e["source"]).name, e["index"]): e for e in entries}
    assert set(by) == {
        ("garbled.cif", None),
        ("good.extxyz", 0),
        ("good.extxyz", 1),
        ("nacl.cif", 0),
        ("overlap.xyz", 0),
    }
    assert by[("good.extxyz", 1)] == {
        "source": str(files / "good.extxyz"),
        "index": 1,
        "formula": "H2O",
        "n_atoms": 3,
        "error": None,
        "warnings": [],
    }
    assert by[("nacl.cif", 0)]["formula"] == "Cl4Na4" and by[("nacl.cif", 0)]["error"] is None
    # a file that cannot be read at all: one entry, index null
    g = by[("garbled.cif", None)]
    assert (
        g["formula"] is None
        and g["n_atoms"] is None
        and "garbled.cif" in g["error"]
        and "unreadable" in g["error"]
    )
    # a bad structure still shows what it is
    o = by[("overlap.xyz", 0)]
    assert o["formula"] == "Ar2" and o["n_atoms"] == 2 and "overlapping atoms" in o["error"]


def test_info_exit_zero_when_all_fine_and_table(capsys, files):
    code, out, _ = _run(capsys, "data", "info", files / "good.extxyz", files / "nacl.cif", "--json")
    assert code == 0 and [e["error"] for e in json.loads(out)] == [None, None, None]
    code, out, _ = _run(
        capsys, "data", "info", files / "good.extxyz", files / "overlap.xyz", files / "missing.xyz"
    )
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["source", "index", "formula", "n_atoms", "status"]
    assert any("H2O" in ln and ln.rstrip().endswith("ok") for ln in lines)
    assert any("missing.xyz: file not found" in ln for ln in lines)
    assert lines[-1] == "2 fine, 2 with errors"


def test_info_shows_reader_warnings_in_json_and_table(capsys, tmp_path, small_atoms):
    """Warnings a reader attached to a structure (kept in a store) are part of ``data info``."""
    from atomssl.data import Structure

    warned = Structure.from_ase(small_atoms["si"], source="si.cif", index=0)
    warned.warnings = ["merged 12 symmetry-duplicate sites"]
    store = tmp_path / "store.db"
    StructureStore(store, mode="w").write([warned, Structure.from_ase(small_atoms["water"])])
    code, out, _ = _run(capsys, "data", "info", store, "--json")
    assert code == 0
    assert [e["warnings"] for e in json.loads(out)] == [["merged 12 symmetry-duplicate sites"], []]
    code, out, _ = _run(capsys, "data", "info", store)
    lines = out.splitlines()
    assert code == 0
    i = next(k for k, ln in enumerate(lines) if "Si2" in ln)
    assert (
        lines[i].split()[-1] == "ok*"
        and lines[i + 1] == "    warning: merged 12 symmetry-duplicate sites"
    )
    assert any("H2O" in ln and ln.split()[-1] == "ok" for ln in lines)


def test_import_stops_and_writes_nothing_without_skip_bad(capsys, files, tmp_path):
    out = tmp_path / "store.db"
    code, stdout, err = _run(capsys, "data", "import", files, "--out", out)
    assert code == 1 and not out.exists()
    assert "garbled.cif" in err and "nothing was written" in err and "Traceback" not in err


def test_import_skip_bad_summary_and_store(capsys, files, tmp_path):
    out = tmp_path / "store.db"
    code, stdout, _ = _run(capsys, "data", "import", files, "--out", out, "--skip-bad")
    assert code == 0
    assert "wrote 3 structure(s) from 4 source(s)" in stdout
    assert "skipped 2 bad entries (1 unreadable file, 1 overlapping atoms)" in stdout
    assert [s.formula for s in StructureStore(out)] == ["Si2", "H2O", "Cl4Na4"]
    code, stdout, _ = _run(
        capsys, "data", "import", files / "nacl.cif", "--out", out, "--append", "--json"
    )
    assert code == 0 and json.loads(stdout)["n_written"] == 1
    assert len(StructureStore(out)) == 4
    # the store itself can be inspected
    code, stdout, _ = _run(capsys, "data", "info", out, "--json")
    assert code == 0 and [e["index"] for e in json.loads(stdout)] == [0, 1, 2, 3]


def _brute_force_pairs(pos, cell, cutoff, reach=3):
    """All (i, j, shift) with |pos[j] + shift @ cell - pos[i]| < cutoff, over a block of images."""
    out = set()
    rng = range(-reach, reach + 1)
    for s in np.array(np.meshgrid(rng, rng, rng, indexing="ij")).reshape(3, -1).T:
        d = pos[None, :, :] + (s @ cell)[None, None, :] - pos[:, None, :]
        for i, j in zip(*np.nonzero(np.linalg.norm(d, axis=-1) < cutoff)):
            if not (i == j and not s.any()):
                out.add((int(i), int(j), tuple(int(x) for x in s)))
    return out


def test_graph_radius_matches_brute_force(capsys, tmp_path, small_atoms):
    path = tmp_path / "t.extxyz"
    ase.io.write(path, [small_atoms["si"], small_atoms["triclinic"]])
    npz = tmp_path / "g.npz"
    code, stdout, _ = _run(
        capsys, "data", "graph", path, "--index", 1, "--cutoff", 3.5, "--out", npz
    )
    assert code == 0 and "MgO2" in stdout
    g = np.load(npz)
    assert {"src", "dst", "shift", "vec", "cell", "positions"} <= set(g.files)
    assert g["shift"].dtype.kind == "i" and g["src"].dtype.kind == "i"
    atoms = small_atoms["triclinic"]
    np.testing.assert_allclose(g["positions"], atoms.positions)
    np.testing.assert_allclose(g["cell"], atoms.cell[:])
    np.testing.assert_allclose(
        g["vec"],
        g["positions"][g["dst"]] + g["shift"] @ g["cell"] - g["positions"][g["src"]],
        atol=1e-10,
    )
    got = {(int(i), int(j), tuple(map(int, s))) for i, j, s in zip(g["src"], g["dst"], g["shift"])}
    assert len(got) == len(g["src"])
    assert got == _brute_force_pairs(atoms.positions, atoms.cell[:], 3.5)


def test_graph_knn(capsys, tmp_path, small_atoms):
    path = tmp_path / "POSCAR"
    ase.io.write(path, small_atoms["nacl"], format="vasp")
    npz = tmp_path / "k.npz"
    code, _, _ = _run(capsys, "data", "graph", path, "--k", 6, "--out", npz)
    assert code == 0
    g = np.load(npz)
    assert np.bincount(g["src"]).tolist() == [6] * 8
    d = np.linalg.norm(g["vec"], axis=1)
    assert d.max() < 3.2  # rocksalt: the 6 nearest are the ~2.82 A cation-anion bonds
    code, _, _ = _run(capsys, "data", "graph", path, "--k", 6, "--cutoff", 2.0, "--out", npz)
    assert code == 0 and len(np.load(npz)["src"]) == 0


def test_graph_errors_are_clean(capsys, tmp_path, small_atoms):
    path = tmp_path / "one.xyz"
    ase.io.write(path, small_atoms["water"])
    code, _, err = _run(
        capsys, "data", "graph", path, "--index", 3, "--cutoff", 2, "--out", tmp_path / "x.npz"
    )
    assert code == 1 and "one.xyz" in err and "frame 3" in err and "Traceback" not in err
    code, _, err = _run(capsys, "data", "graph", path, "--out", tmp_path / "x.npz")
    assert code == 2 and "--cutoff" in err
    assert not (tmp_path / "x.npz").exists()


def test_help_lists_subverbs_and_plugins_can_register(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    out = capsys.readouterr().out
    for verb in ("import", "info", "graph"):
        assert verb in out

    calls = []

    def register_echo(sub):
        p = sub.add_parser("echo", help="test sub-verb")
        p.add_argument("word")
        p.set_defaults(func=lambda args: calls.append(args.word) or 0)

    data_cli.add_data_subcommand("echo", register_echo)
    try:
        assert main(["data", "echo", "hello"]) == 0
        assert calls == ["hello"]
    finally:
        del data_cli.DATA_SUBCOMMANDS["echo"]
    assert main(["data"]) == 2  # no sub-verb: help


def test_installed_entry_point(tmp_path, small_atoms):
    """The console script works end to end (one subprocess test; the others run in-process)."""
    exe = Path(sys.executable).with_name("atomssl")
    if not exe.exists():
        pytest.skip("atomssl console script not installed next to this Python")
    ase.io.write(tmp_path / "si.cif", small_atoms["si"])
    proc = subprocess.run(
        [str(exe), "data", "info", str(tmp_path / "si.cif"), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    (entry,) = json.loads(proc.stdout)
    assert (
        entry["formula"] == "Si2"
        and entry["n_atoms"] == 2
        and entry["error"] is None
        and entry["index"] == 0
    )


def test_info_reads_lammps_dump_with_species_flag(capsys, tmp_path):
    dump = tmp_path / "melt.lammpstrj"
    dump.write_text(
        "ITEM: TIMESTEP\n0\nITEM: NUMBER OF ATOMS\n2\nITEM: BOX BOUNDS pp pp pp\n0 5\n0 5\n0 5\n"
        "ITEM: ATOMS id type x y z\n1 1 0.5 0.5 0.5\n2 2 2.5 2.5 2.5\n"
    )
    code, out, _ = _run(capsys, "data", "info", dump, "--species", "1=Cu,2=Zr", "--json")
    assert code == 0 and json.loads(out)[0]["formula"] == "CuZr"
    code, out, _ = _run(capsys, "data", "info", dump, "--species", "Ni,Al", "--json")
    assert json.loads(out)[0]["formula"] == "AlNi"
