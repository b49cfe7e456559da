"""StructureStore (ASE SQLite database) and atomic bulk import."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle

import ase.io
import numpy as np
import pytest
from ase.build import bulk

from atomssl.data import Structure, StructureStore, import_structures, read
from atomssl.errors import MissingFileError, OverlapError, UnreadableFileError


def _labelled(small_atoms) -> list[Structure]:
    out = []
    for i, name in enumerate(["si", "nacl", "triclinic", "water", "slab"]):
        s = Structure.from_ase(small_atoms[name], source=f"/data/{name}.cif", index=i)
        # 'energy' is reserved by ASE (not a key-value pair); arrays only fit in row data
        s.labels = {
            "n": 1.5 + i,
            "energy": -2.0 * i,
            "phase": name,
            "stable": i % 2 == 0,
            "tensor": np.eye(3) * i,
        }
        if i == 0:
            s.id = "mp-149"
        out.append(s)
    return out


def _assert_same(a: Structure, b: Structure) -> None:
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-12)
    np.testing.assert_allclose(a.cell, b.cell, atol=1e-12)
    np.testing.assert_array_equal(a.pbc, b.pbc)
    assert set(a.labels) == set(b.labels)
    for k, v in a.labels.items():
        np.testing.assert_array_equal(b.labels[k], v)


def test_write_then_read_back(tmp_path, small_atoms):
    structures = _labelled(small_atoms)
    path = tmp_path / "store.db"
    with StructureStore(path, mode="w") as store:
        assert store.write(structures) == 5
    store = StructureStore(path)
    assert len(store) == 5
    for i, s in enumerate(structures):
        got = store[i]
        _assert_same(s, got)
        assert got.source == str(path) and got.index == i
    assert store[0].id == "mp-149"  # an explicit id is kept
    assert store[1].id == "/data/nacl.cif@1"  # else the original source@index
    _assert_same(structures[-1], store[-1])
    assert [s.index for s in store[1:4:2]] == [1, 3]
    assert [s.formula for s in store] == [s.formula for s in structures]
    assert store.label_names() == ["energy", "n", "phase", "stable", "tensor"]
    with pytest.raises(IndexError):
        store[5]
    with pytest.raises(IndexError):
        store[-6]
    with pytest.raises(PermissionError):
        store.write(structures[:1])  # opened read-only
    # scalar labels are queryable ASE key-value pairs; the file is a plain ASE database
    import ase.db

    rows = list(ase.db.connect(path).select("n>3"))
    assert sorted(r.phase for r in rows) == ["slab", "triclinic", "water"]
    # read() on the store gives the same records
    for a, b in zip(read(path), store):
        _assert_same(a, b)


def test_append_mode_and_refresh(tmp_path, small_atoms):
    structures = _labelled(small_atoms)
    path = tmp_path / "s.db"
    StructureStore(path, mode="a").write(structures[:2])
    reader = StructureStore(path)
    assert len(reader) == 2
    StructureStore(path, mode="a").write(structures[2:])
    assert len(reader) == 2  # snapshot
    reader.refresh()
    assert len(reader) == 5
    StructureStore(path, mode="w").write(structures[:1])  # "w" starts over
    assert len(StructureStore(path)) == 1


def test_write_validates(tmp_path, small_atoms):
    bad = small_atoms["si"].copy()
    bad.positions[1] = bad.positions[0]
    store = StructureStore(tmp_path / "v.db", mode="w")
    with pytest.raises(OverlapError):
        store.write([small_atoms["nacl"], bad])
    assert len(StructureStore(tmp_path / "v.db", mode="a")) == 0  # the transaction was rolled back


def test_open_errors(tmp_path):
    with pytest.raises(MissingFileError, match="missing.db"):
        StructureStore(tmp_path / "missing.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 10)
    with pytest.raises(UnreadableFileError, match="junk.db"):
        StructureStore(junk)


def _read_all(store: StructureStore) -> list[tuple[str, float, float]]:
    return [
        (s.formula, float(s.positions.sum()), float(s.labels["n"]))
        for s in (store[i] for i in range(len(store)))
    ]


def test_many_processes_read_at_once(tmp_path, small_atoms):
    path = tmp_path / "shared.db"
    StructureStore(path, mode="w").write(_labelled(small_atoms) * 4)
    store = StructureStore(path)
    expected = _read_all(store)  # the parent's connection is open before the fork
    store2 = pickle.loads(pickle.dumps(store))  # picklable (spawned DataLoader workers)
    assert _read_all(store2) == expected
    ctx = mp.get_context("fork")
    with ctx.Pool(3) as pool:
        results = pool.map(_read_all, [store] * 6)
    assert all(r == expected for r in results)
    assert _read_all(store) == expected


def _files(tmp_path, small_atoms, bad_name: str | None = None):
    src = tmp_path / "src"
    src.mkdir()
    ase.io.write(src / "a.extxyz", [small_atoms["si"], small_atoms["water"]])
    ase.io.write(src / "b.cif", small_atoms["nacl"])
    ase.io.write(src / "c.vasp", small_atoms["triclinic"], format="vasp")
    if bad_name:
        (src / bad_name).write_text("2\n\nAr 0 0 0\nAr 0 0 0.01\n")  # overlapping atoms
        (src / "z_nan.xyz").write_text("1\n\nAr nan 0 0\n")
    return src


def test_import_is_atomic_without_skip_bad(tmp_path, small_atoms):
    src = _files(tmp_path, small_atoms, bad_name="b2_overlap.xyz")
    out = tmp_path / "out" / "store.db"
    with pytest.raises(OverlapError, match="b2_overlap.xyz"):
        import_structures(src, out)
    assert not out.exists()
    assert os.listdir(out.parent) == []  # no temporary file left behind
    # an existing store is left exactly as it was
    import_structures([src / "a.extxyz"], out)
    before = out.read_bytes()
    with pytest.raises(OverlapError):
        import_structures(src, out)
    with pytest.raises(OverlapError):
        import_structures(src, out, append=True)
    assert out.read_bytes() == before
    assert os.listdir(out.parent) == ["store.db"]


def test_import_skip_bad_reports_and_continues(tmp_path, small_atoms):
    src = _files(tmp_path, small_atoms, bad_name="b2_overlap.xyz")
    out = tmp_path / "store.db"
    report = import_structures(src, out, skip_bad=True)
    assert report.n_written == 4 and report.n_bad == 2 and report.n_sources == 5
    assert report.reasons == {"overlapping atoms": 1, "non-finite coordinates": 1}
    text = report.summary()
    assert "wrote 4 structure(s)" in text and "skipped 2 bad entries" in text
    assert "b2_overlap.xyz" in text and "z_nan.xyz" in text
    d = report.to_dict()
    assert d["n_bad"] == 2 and {e["kind"] for e in d["errors"]} == {
        "overlapping atoms",
        "non-finite coordinates",
    }
    store = StructureStore(out)
    assert [s.formula for s in store] == ["Si2", "H2O", "Cl4Na4", "MgO2"]
    assert store[1].id.endswith("a.extxyz@1")
    # append adds to it, atomically
    report2 = import_structures([src / "c.vasp"], out, append=True)
    assert report2.n_written == 1 and len(StructureStore(out)) == 5


def test_store_is_a_source_for_another_import(tmp_path, small_atoms):
    first = tmp_path / "first.db"
    StructureStore(first, mode="w").write(_labelled(small_atoms))
    second = tmp_path / "second.db"
    report = import_structures(StructureStore(first), second)
    assert report.n_written == 5
    for a, b in zip(StructureStore(first), StructureStore(second)):
        _assert_same(a, b)


def test_import_removes_temporaries_of_dead_imports_only(tmp_path):
    import subprocess
    import sys

    from atomssl.data import _store_import as _store

    src = tmp_path / "a.extxyz"
    ase.io.write(src, bulk("Cu", "fcc", a=3.6))
    out = tmp_path / "store.db"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".store.db.{_store._HOST}.{dead.pid}.abc.tmp.db"
    live = tmp_path / f".store.db.{_store._HOST}.{os.getppid()}.abc.tmp.db"  # our parent is alive
    other_host = tmp_path / f".store.db.otherhost.{dead.pid}.abc.tmp.db"
    # SQLite's files beside a killed import's temporary store, also when the store is gone
    stale_siblings = [tmp_path / f"{stale.name}{suffix}" for suffix in ("-journal", "-wal", "-shm")]
    orphan_journal = tmp_path / f".store.db.{_store._HOST}.{dead.pid}.xyz.tmp.db-journal"
    live_journal = tmp_path / f"{live.name}-journal"
    unrelated = (
        tmp_path / f".store.db.{_store._HOST}.{dead.pid}.abc.tmp.db.keep"
    )  # not ours to delete
    for p in (stale, live, other_host, *stale_siblings, orphan_journal, live_journal, unrelated):
        p.write_bytes(b"partial")
    import_structures([src], out)
    assert (
        not stale.exists()
        and not any(p.exists() for p in stale_siblings)
        and not orphan_journal.exists()
    )
    assert live.exists() and live_journal.exists() and other_host.exists() and unrelated.exists()
    assert len(list(StructureStore(out))) == 1


def test_import_keeps_the_mode_of_the_store_it_replaces(tmp_path, capsys):
    """mkstemp makes 0600 files: a store shared by a group (0640) must stay 0640 after an
    appending and after a replacing import; a new store gets 0666 & ~umask."""
    from atomssl.cli.main import main

    src = tmp_path / "a.extxyz"
    ase.io.write(src, bulk("Cu", "fcc", a=3.6))
    out = tmp_path / "store.db"
    old_mask = os.umask(0o022)
    try:
        import_structures([src], out)
        assert out.stat().st_mode & 0o777 == 0o644
        out.chmod(0o640)
        assert main(["data", "import", str(src), "--out", str(out), "--append"]) == 0
        assert len(StructureStore(out)) == 2 and out.stat().st_mode & 0o777 == 0o640
        assert main(["data", "import", str(src), "--out", str(out)]) == 0
        assert len(StructureStore(out)) == 1 and out.stat().st_mode & 0o777 == 0o640
        import_structures([src], out, append=True)
        assert out.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old_mask)
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.extxyz", "store.db"]


def test_reader_warnings_round_trip_through_the_store_and_the_import_report(tmp_path):
    """What a reader changed or doubted (``Structure.warnings``) is kept in the row's meta, given
    back by every way of reading a store, and counted/listed by the import report."""
    warned = Structure.from_ase(bulk("Si", "diamond", a=5.43), source="/data/si.cif", index=0)
    warned.warnings = ["merged 12 symmetry-duplicate sites", "formula check skipped"]
    plain = Structure.from_ase(bulk("Cu", "fcc", a=3.6), source="/data/cu.cif", index=0)
    first = tmp_path / "first.db"
    with StructureStore(first, mode="w") as store:
        store.write([warned, plain])
    store = StructureStore(first)
    assert store[0].warnings == warned.warnings and store[1].warnings == []
    assert [s.warnings for s in store] == [warned.warnings, []]
    assert [s.warnings for s in read(first)] == [warned.warnings, []]  # the file reader too
    assert store[0].copy().warnings == warned.warnings

    report = import_structures(StructureStore(first), tmp_path / "second.db")
    assert report.n_written == 2 and report.n_warned == 1
    d = report.to_dict()
    assert d["n_warned"] == 1
    assert d["warned"] == [{"source": str(first), "index": 0, "warnings": warned.warnings}]
    text = report.summary()
    assert "1 structure(s) written with warnings:" in text
    assert f"{first} [index 0]: warning: merged 12 symmetry-duplicate sites" in text
    assert [s.warnings for s in StructureStore(tmp_path / "second.db")] == [warned.warnings, []]
    clean = import_structures([plain], tmp_path / "third.db")
    assert (
        clean.n_warned == 0
        and clean.to_dict()["warned"] == []
        and "warning:" not in clean.summary()
    )
