"""``atomssl data info/import/graph`` on bad inputs: one clear line, a non-zero exit, no traceback.

Each case runs the real console command in a subprocess (as a user would), so that nothing
(logging set-up, argparse, the error handler in ``cli/main.py``) is bypassed. Many bad files go
through one ``data info`` call to keep the number of interpreter starts small.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk

ATOMSSL = [sys.executable, "-m", "atomssl.cli.main"]
TIMEOUT = 300  # s per command: starting the CLI imports a lot; the machine may be shared


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [*ATOMSSL, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        env=env,
    )


def assert_clean_failure(res: subprocess.CompletedProcess, *needles: str) -> None:
    """Non-zero exit, no traceback, an error line, and each of ``needles`` (``data info``
    reports on stdout, the other verbs on stderr)."""
    assert res.returncode != 0, res
    text = res.stderr + res.stdout
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert errors, text
    for needle in needles:
        assert needle in text, (needle, text)


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A folder of bad files (name -> what is wrong) next to one good file."""
    d = tmp_path_factory.mktemp("bad")
    nacl = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    rnd = random.Random(0)
    ase.io.write(d / "good.cif", nacl)
    bad = {}
    (d / "random.cif").write_bytes(bytes(rnd.getrandbits(8) for _ in range(500)))
    bad["random.cif"] = "unreadable"
    (d / "empty.extxyz").write_text("")
    bad["empty.extxyz"] = "unreadable"
    text = (d / "good.cif").read_text()
    (d / "cut.cif").write_text(text[: len(text) // 3])
    bad["cut.cif"] = "unreadable"
    ase.io.write(d / "POSCAR", nacl, format="vasp")
    lines = (d / "POSCAR").read_text().splitlines()
    lines[3] = "  nan 0 0"
    (d / "POSCAR").write_text("\n".join(lines) + "\n")
    bad["POSCAR"] = "non-finite"
    dup = nacl + nacl[:1]
    ase.io.write(d / "dup.extxyz", dup)
    bad["dup.extxyz"] = "overlapping"
    (d / "notes.json").write_text('{"hello": [1, 2, 3]}')
    bad["notes.json"] = "unreadable"
    (d / "garbage.db").write_bytes(
        b"SQLite format 3\x00" + bytes(rnd.getrandbits(8) for _ in range(3000))
    )
    bad["garbage.db"] = "unreadable"
    tiny = ase.Atoms("Si", positions=[[0, 0, 0]], cell=np.eye(3) * 1e-3, pbc=True)
    ase.io.write(d / "tiny.extxyz", tiny)
    bad["tiny.extxyz"] = "overlapping"
    (d / "dump.lammpstrj").write_text(
        "ITEM: TIMESTEP\n0\nITEM: NUMBER OF ATOMS\n8\nITEM: BOX BOUNDS pp pp pp\n0 5\n0 5\n0 5\n"
        "ITEM: ATOMS id type element x y z\n1 1 Na 0 0 0\n2 2 Cl 2.5 0 0\n"
    )
    bad["dump.lammpstrj"] = "declares 8 atoms but holds 2"
    return d, bad


def test_info_lists_every_bad_file_with_its_reason(bad_folder):
    d, bad = bad_folder
    res = run("data", "info", "--json", d, cwd=d)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    entries = json.loads(res.stdout)
    by_name = {}
    for e in entries:
        by_name.setdefault(Path(e["source"]).name, []).append(e)
    assert set(by_name) == set(bad) | {"good.cif"}
    assert all(e["error"] is None for e in by_name["good.cif"])
    for name, reason in bad.items():
        errs = [e["error"] for e in by_name[name] if e["error"]]
        assert errs, name
        assert any(str(d / name) in err and reason in err for err in errs), (name, errs)


def test_import_stops_at_the_first_bad_entry_with_one_line_and_writes_nothing(bad_folder, tmp_path):
    d, bad = bad_folder
    out = tmp_path / "store.db"
    res = run("data", "import", d, "--out", out, cwd=tmp_path)
    assert_clean_failure(res, "nothing was written")
    assert not out.exists() and not list(tmp_path.glob(".store.db*"))
    ok = run("data", "import", d, "--out", out, "--skip-bad", "--json", cwd=tmp_path)
    assert ok.returncode == 0 and "Traceback" not in ok.stderr, ok.stderr
    report = json.loads(ok.stdout)
    assert report["n_written"] == 1 and report["n_bad"] >= len(bad)
    assert {Path(e["source"]).name for e in report["errors"]} == set(bad)


@pytest.mark.parametrize(
    "args, needles",
    [
        (["data", "info", "missing.cif"], ["missing.cif", "file not found"]),
        (
            ["data", "graph", "random.cif", "--cutoff", "5", "--out", "g.npz"],
            ["random.cif", "unreadable file"],
        ),
        (
            ["data", "graph", "tiny.extxyz", "--cutoff", "5", "--out", "g.npz"],
            ["tiny.extxyz", "own periodic image"],
        ),
        (
            ["data", "graph", "good.cif", "--cutoff", "-1", "--out", "g.npz"],
            ["--cutoff must be positive"],
        ),
        (
            ["data", "graph", "good.cif", "--index", "7", "--cutoff", "5", "--out", "g.npz"],
            ["good.cif", "frame 7"],
        ),
        (
            [
                "data",
                "graph",
                "good.cif",
                "--format",
                "nonsense",
                "--cutoff",
                "5",
                "--out",
                "g.npz",
            ],
            ["nonsense"],
        ),
        (
            ["data", "import", "good.cif", "--out", "x.db", "--species", "a=Si"],
            ["bad species entry"],
        ),
        (
            ["data", "import", "missing_folder", "--out", "x.db"],
            ["missing_folder", "file not found"],
        ),
        (["data", "info", "garbage.db", "notes.json"], ["garbage.db", "notes.json"]),
    ],
    ids=[
        "missing",
        "garbled",
        "tiny-cell",
        "bad-cutoff",
        "bad-index",
        "bad-format",
        "bad-species",
        "missing-src",
        "bad-db",
    ],
)
def test_bad_arguments_and_inputs_are_one_clean_line(
    bad_folder, args, needles, capsys, monkeypatch
):
    """In-process (the same ``main`` the console script calls; an interpreter start per case
    would cost seconds): non-zero exit, the reason on stderr, no traceback, no output file."""
    from atomssl.cli.main import main

    d, _ = bad_folder
    monkeypatch.chdir(d)
    try:
        code = main(args)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out = capsys.readouterr()
    assert_clean_failure(subprocess.CompletedProcess(args, code, out.out, out.err), *needles)
    assert not (d / "g.npz").exists() and not (d / "x.db").exists()


def test_graph_on_an_absurd_cell_without_overlap_is_refused_cleanly(tmp_path):
    """A 0.2 A cell passes validation (no atom within 0.1 A of an image) but a 40 A cutoff would
    give ~3e9 edges: refused with a one-line error, no file written, no memory exhausted."""
    atoms = ase.Atoms("Si", positions=[[0, 0, 0]], cell=np.eye(3) * 0.2, pbc=True)
    ase.io.write(tmp_path / "small.extxyz", atoms)
    res = run("data", "graph", "small.extxyz", "--cutoff", "40", "--out", "g.npz", cwd=tmp_path)
    assert_clean_failure(res, "small.extxyz", "too many neighbours")
    assert not (tmp_path / "g.npz").exists()


def test_structure_errors_survive_pickling_between_processes():
    """Errors cross process boundaries (import workers, DataLoader workers) with one location in the message."""
    import pickle

    from atomssl.data._formats import FrameIndexError
    from atomssl.errors import MaskedSiteError, MissingFileError, OverlapError, StructureError

    for cls in (StructureError, OverlapError, MissingFileError, MaskedSiteError, FrameIndexError):
        err = cls("atoms 0 and 1 are 0.05 A apart", "traj.extxyz", 7)
        back = pickle.loads(pickle.dumps(err))
        assert (
            type(back) is cls
            and str(back) == str(err)
            and (back.source, back.index) == ("traj.extxyz", 7)
        )
        assert str(back).count("traj.extxyz") == 1
