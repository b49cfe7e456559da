"""Sharded corpora: ``import_shards`` / ``atomssl data import --out FOLDER`` and ``ShardedCorpus``."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from conftest import sigkill_on_cue

from atomssl.cli.main import main
from atomssl.data import ShardedCorpus, Structure, import_shards, iter_structures, read
from atomssl.data._shard_stream import _parse_item as _PARSE
from atomssl.data._shards import close_shards, file_sha256
from atomssl.errors import ConfigError, EmptyInputError, OverlapError, UnreadableFileError

TIMES = ("created", "updated", "completed")


def _crystals(n: int, seed: int = 0, bad: tuple[int, ...] = ()) -> list:
    """``n`` small rattled crystals with labels; indices in ``bad`` get two overlapping atoms."""
    rng = np.random.default_rng(seed)
    protos = [
        ("Si", "diamond", 5.43),
        ("NaCl", "rocksalt", 5.64),
        ("Cu", "fcc", 3.6),
        ("Fe", "bcc", 2.87),
    ]
    out = []
    for i in range(n):
        name, kind, a = protos[i % len(protos)]
        atoms = bulk(name, kind, a=a * (1 + 0.02 * rng.standard_normal()))
        atoms.rattle(0.02, seed=int(rng.integers(1 << 30)))
        atoms.info["gap"] = float(rng.normal(1.0, 0.5))
        atoms.info["tag"] = f"t{i}"
        if i in bad:
            atoms = atoms.repeat((2, 1, 1))
            atoms.positions[1] = atoms.positions[0] + 0.01
        out.append(atoms)
    return out


def _files(
    folder: Path, sizes: list[int], bad: dict[int, tuple[int, ...]] | None = None
) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, n in enumerate(sizes):
        path = folder / f"part{k}.extxyz"
        ase.io.write(path, _crystals(n, seed=k, bad=(bad or {}).get(k, ())))
        paths.append(str(path))
    return paths


def _rows(folder: Path) -> list[list[tuple]]:
    """Every row of every shard (in order) without ASE's per-write times, via plain ase.db."""
    import ase.db

    close_shards()  # py-lmdb opens a file once per process
    out = []
    for shard in sorted(folder.glob("shard-*.aselmdb")):
        db = ase.db.connect(str(shard), type="aselmdb", readonly=True)
        rows = []
        for row in db.select():
            data = json.dumps(row.data, sort_keys=True, default=str)
            rows.append((row.numbers.tolist(), row.positions.tolist(), row.cell.tolist(), row.pbc.tolist(),
                         sorted(row.key_value_pairs.items()), row.get("energy"), data))  # fmt: skip
        db.close()
        out.append(rows)
    return out


def _manifest(folder: Path) -> dict:
    """The manifest minus timestamps and shard file digests and sizes: shard files differ between
    runs (each row records its write time, whose printed length varies; LMDB leaves unused bytes
    uninitialised), their rows do not (compared by :func:`_rows`)."""
    m = json.loads((folder / "manifest.json").read_text())
    for key in TIMES:
        m.pop(key, None)
    for rec in m["shards"]:
        rec.pop("sha256")
        rec.pop("bytes")
    return m


def _same(a: Structure, b: Structure) -> None:
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.cell, b.cell)
    np.testing.assert_array_equal(a.pbc, b.pbc)
    assert set(a.labels) == set(b.labels)
    for k, v in a.labels.items():
        np.testing.assert_array_equal(b.labels[k], v)
    assert a.warnings == b.warnings


# ----------------------------------------------------------------------------- round trip
def test_round_trip_labels_ids_warnings(tmp_path):
    files = _files(tmp_path / "in", [7, 5])
    objs = []
    for i, atoms in enumerate(_crystals(4, seed=9)):
        s = Structure.from_ase(atoms, index=i)
        s.id = f"obj-{i}" if i % 2 else ""
        s.labels.update(
            energy=-1.5 * i,
            stable=bool(i % 2),
            forces=np.full((len(atoms), 3), 0.1 * i),
            tensor=np.eye(3) * i,
        )
        s.warnings = [f"note {i}"] if i != 1 else []
        objs.append(s)
    report = import_shards(files + objs, tmp_path / "c", shard_size=4)
    originals = [s for f in files for s in read(f)] + objs
    corpus = ShardedCorpus(tmp_path / "c")
    assert report.n_written == len(corpus) == 16 and report.n_shards == 4
    assert report.n_warned == 3
    for i, (orig, got) in enumerate(zip(originals, corpus)):
        _same(orig, got)
        assert got.source == str(tmp_path / "c") and got.index == i
        assert got.id == (
            orig.id or (f"{orig.source}@{orig.index}" if orig.source else "")
        )  # as StructureStore
        _same(orig, corpus[i])
    _same(originals[-1], corpus[-1])
    assert [s.id for s in corpus[2:5]] == [s.id for s in list(corpus)[2:5]]
    # a single shard and the whole folder through the ordinary readers
    assert [s.id for s in read(tmp_path / "c" / "shard-00001.aselmdb")] == [
        s.id for s in corpus[4:8]
    ]
    assert [s.id for s in iter_structures([tmp_path / "c"])] == [s.id for s in corpus]
    # a corpus inside a searched folder is one source (sorted among its neighbours), not a pile of shards
    found = [(s.source, s.index) for s in iter_structures(tmp_path)]
    assert found == [(str(tmp_path / "c"), i) for i in range(16)] + [
        (s.source, s.index) for s in originals[:12]
    ]


def test_shard_sizes_and_manifest_statistics(tmp_path):
    files = _files(tmp_path / "in", [9, 0, 14], bad={2: (3,)})  # part1 is an empty file
    import_shards(files, tmp_path / "c", shard_size=5, skip_bad=True)
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    good = [s for s in iter_structures(files, skip_bad=True)]
    assert [r["count"] for r in m["shards"]] == [5, 5, 5, 5, 2] and m["n_structures"] == 22 == len(
        good
    )
    assert m["complete"] and m["format_version"] == 1
    for rec in m["shards"]:
        assert rec["sha256"] == file_sha256(tmp_path / "c" / rec["file"])
        assert rec["bytes"] == (tmp_path / "c" / rec["file"]).stat().st_size
    assert m["shards"][1]["entries"] == [{"item": 0, "source": files[0], "start": 5, "stop": 9},
                                         {"item": 2, "source": files[2], "start": 0, "stop": 1}]  # fmt: skip
    # species: atoms and structures per element, exact
    atoms, structures = {}, {}
    for s in good:
        symbols = s.to_ase().get_chemical_symbols()
        for el in symbols:
            atoms[el] = atoms.get(el, 0) + 1
        for el in set(symbols):
            structures[el] = structures.get(el, 0) + 1
    assert m["species"] == {
        el: {"atoms": atoms[el], "structures": structures[el]} for el in sorted(atoms)
    }
    gap = np.array([s.labels["gap"] for s in good])
    st = m["labels"]["gap"]
    assert st["count"] == 22 and st["kind"] == "number"
    np.testing.assert_allclose([st["mean"], st["std"]], [gap.mean(), gap.std()], rtol=1e-13)
    assert (st["min"], st["max"]) == (gap.min(), gap.max())
    assert m["labels"]["tag"] == {"kind": "str", "count": 22}
    # sources and skipped entries, each with its reason
    assert [(s["path"], s["structures"], s["skipped"]) for s in m["sources"]] == [
        (files[0], 9, 0),
        (files[1], 0, 1),
        (files[2], 13, 1),
    ]
    assert (
        m["sources"][0]["size"] == os.path.getsize(files[0])
        and m["sources"][0]["mtime_ns"] == os.stat(files[0]).st_mtime_ns
    )
    assert [(r["source"], r["index"], r["kind"]) for r in m["skipped"]] == [
        (files[1], None, "unreadable file"), (files[2], 3, "overlapping atoms")]  # fmt: skip
    assert "apart" in m["skipped"][1]["reason"]


def test_plain_ase_db_reads_a_shard(tmp_path):
    import ase.db

    s = Structure.from_ase(_crystals(1)[0], source="x.xyz", index=0)
    s.labels.update(energy=-3.25, forces=np.ones((2, 3)), stable=True)
    import_shards([s], tmp_path / "c")
    db = ase.db.connect(str(tmp_path / "c" / "shard-00000.aselmdb"), type="aselmdb")
    row = db.get(id=1)
    assert (
        row.gap == s.labels["gap"] and row.tag == "t0" and row.stable is True
    )  # key-value pairs, queryable
    assert db.count("gap>0") == 1
    atoms = row.toatoms()
    assert atoms.get_potential_energy() == -3.25 and np.array_equal(
        atoms.get_forces(), np.ones((2, 3))
    )
    assert row.data["atomssl"]["source"] == "x.xyz" and row.data["atomssl"]["labels"]["tag"] == "t0"
    db.close()


# ----------------------------------------------------------------------------- crash safety
CHILD = textwrap.dedent(
    """
    import os, sys, time
    cue, mode, after = os.environ["CUE"], os.environ["MODE"], int(os.environ["AFTER"])

    def block():
        open(cue, "w").close()
        while True:
            time.sleep(1)

    if mode == "row":  # killed in the middle of a shard
        from ase_db_backends.aselmdb import LMDBDatabase
        _write, n = LMDBDatabase._write, [0]
        def _counting(self, *a, **k):
            n[0] += 1
            if n[0] > after:
                block()
            return _write(self, *a, **k)
        LMDBDatabase._write = _counting
    else:  # killed after a shard is renamed into place, before the manifest records it
        from atomssl.data import _shard_writer
        _manifest, n = _shard_writer.write_manifest, [0]
        def _counting(*a, **k):
            n[0] += 1
            if n[0] > after:
                block()
            return _manifest(*a, **k)
        _shard_writer.write_manifest = _counting
    from atomssl.cli.main import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _kill_during(argv: list[str], tmp_path: Path, mode: str, after: int) -> None:
    cue = tmp_path / f"cue-{time.monotonic_ns()}"
    env = dict(os.environ, CUE=str(cue), MODE=mode, AFTER=str(after), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, *argv],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    sigkill_on_cue(proc, cue, 120, poll=0.02)


@pytest.mark.parametrize("mode,after", [("row", 13), ("manifest", 1)])
def test_sigkill_then_same_command_gives_the_same_corpus(tmp_path, mode, after):
    files = _files(tmp_path / "in", [6, 9, 7], bad={1: (4,)})

    def argv(out: str) -> list[str]:
        return [
            "data",
            "import",
            *files,
            "--out",
            str(tmp_path / out),
            "--shard-size",
            "5",
            "--skip-bad",
        ]

    _kill_during(argv("killed"), tmp_path, mode, after)
    left = sorted(p.name for p in (tmp_path / "killed").iterdir())
    if mode == "row":  # two shards done, the third being written
        assert ".shard-00002.aselmdb.tmp" in left and "shard-00002.aselmdb" not in left
    else:  # shard 1 renamed into place, but the manifest (listing shard 0) does not list it yet
        assert "shard-00001.aselmdb" in left
        assert len(json.loads((tmp_path / "killed" / "manifest.json").read_text())["shards"]) == 1
    with pytest.raises(UnreadableFileError, match="not finished"):
        ShardedCorpus(tmp_path / "killed")
    assert main(argv("killed")) == 0  # the same command again
    assert main(argv("whole")) == 0
    assert sorted(p.name for p in (tmp_path / "killed").iterdir()) == sorted(
        p.name for p in (tmp_path / "whole").iterdir()
    )
    assert _rows(tmp_path / "killed") == _rows(tmp_path / "whole")
    assert _manifest(tmp_path / "killed") == _manifest(tmp_path / "whole")
    killed, whole = (
        ShardedCorpus(tmp_path / "killed", verify=True),
        ShardedCorpus(tmp_path / "whole"),
    )
    assert len(killed) == 21 and [s.id for s in killed] == [s.id for s in whole]
    assert main(argv("killed")) == 0  # a third time: complete, nothing to do


def test_bad_entry_aborts_keeps_complete_shards_and_skip_bad_resumes(tmp_path, capsys):
    files = _files(tmp_path / "in", [6, 5], bad={1: (2,)})
    argv = ["data", "import", *files, "--out", str(tmp_path / "c"), "--shard-size", "3"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1
        and "part1.extxyz [index 2]: overlapping atoms" in err
        and "2 complete shard(s)" in err
    )
    assert [p.name for p in sorted((tmp_path / "c").glob("shard-*"))] == [
        "shard-00000.aselmdb",
        "shard-00001.aselmdb",
    ]
    assert main(argv + ["--skip-bad"]) == 0
    assert "resumed: 2 shard(s)" in capsys.readouterr().out
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert m["n_structures"] == 10 and [(r["index"], r["kind"]) for r in m["skipped"]] == [
        (2, "overlapping atoms")
    ]
    # a bad first entry without --skip-bad: nothing is written at all
    first_bad = _files(tmp_path / "in2", [3], bad={0: (0,)})
    assert (
        main(["data", "import", *first_bad, "--out", str(tmp_path / "d"), "--shard-size", "1"]) == 1
    )
    assert "nothing was written" in capsys.readouterr().err and not (tmp_path / "d").exists()


def _parse_noting_pid(*args):  # module level: a worker finds it by name
    with open(os.environ["PIDS"], "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return _PARSE(*args)


def test_workers_give_the_same_corpus(tmp_path, monkeypatch):
    from atomssl.data import _shard_stream

    files = _files(tmp_path / "in", [4, 7, 1, 6, 5], bad={3: (0,)})
    one = import_shards(files, tmp_path / "one", shard_size=4, skip_bad=True, workers=1)
    pids = tmp_path / "pids"
    monkeypatch.setenv("PIDS", str(pids))
    monkeypatch.setattr(_shard_stream, "_parse_item", _parse_noting_pid)
    two = import_shards(files, tmp_path / "two", shard_size=4, skip_bad=True, workers=2)
    seen = pids.read_text().split()
    assert len(seen) == 5 and str(os.getpid()) not in seen  # every file parsed by a worker process
    assert one.n_written == two.n_written == 22
    assert _rows(tmp_path / "one") == _rows(tmp_path / "two")
    assert _manifest(tmp_path / "one") == _manifest(tmp_path / "two")
    assert [str(e) for e in one.errors] == [str(e) for e in two.errors] and isinstance(
        two.errors[0], OverlapError
    )


def test_a_builtin_dataset_is_a_resumable_source(tmp_path):
    report = import_shards(["dataset:aflow_prototypes"], tmp_path / "c", shard_size=100)
    corpus = ShardedCorpus(tmp_path / "c")
    assert len(corpus) == report.n_written > 100 and corpus.counts[0] == 100
    assert corpus.manifest["sources"][0]["dataset"] == "dataset:aflow_prototypes"
    assert import_shards(
        ["dataset:aflow_prototypes"], tmp_path / "c", shard_size=100
    ).already_complete


def test_empty_or_all_bad_input_is_refused_and_nothing_written(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyInputError):
        import_shards(tmp_path / "empty", tmp_path / "c")
    assert not (tmp_path / "c").exists()
    files = _files(tmp_path / "in", [2], bad={0: (0, 1)})
    with pytest.raises(EmptyInputError, match="every entry was bad"):
        import_shards(files, tmp_path / "c", skip_bad=True)
    assert not (tmp_path / "c").exists()
    assert main(["data", "import", str(tmp_path / "empty"), "--out", str(tmp_path / "c")]) == 1
    assert not (tmp_path / "c").exists()


def test_resume_refuses_changed_inputs(tmp_path):
    files = _files(tmp_path / "in", [3, 3])
    import_shards(files, tmp_path / "c", shard_size=2)
    assert import_shards(files, tmp_path / "c", shard_size=2).already_complete
    with pytest.raises(ConfigError, match="different options: shard_size 2 then, 3 now"):
        import_shards(files, tmp_path / "c", shard_size=3)
    ase.io.write(files[0], _crystals(4))
    with pytest.raises(ConfigError, match="changed since"):
        import_shards(files, tmp_path / "c", shard_size=2)


def test_verify_detects_a_tampered_shard(tmp_path, capsys):
    import_shards(_files(tmp_path / "in", [6]), tmp_path / "c", shard_size=3)
    ShardedCorpus(tmp_path / "c", verify=True)
    close_shards()
    shard = tmp_path / "c" / "shard-00001.aselmdb"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the digest can tell
    shard.write_bytes(bytes(data))
    ShardedCorpus(tmp_path / "c")  # the cheap checks pass
    with pytest.raises(UnreadableFileError, match="sha256"):
        ShardedCorpus(tmp_path / "c", verify=True)
    assert main(["data", "info", str(tmp_path / "c"), "--verify"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "shard-00001.aselmdb" in err and "sha256" in err
    shard.write_bytes(bytes(data[:-4096]))  # truncated: caught on open
    close_shards()
    with pytest.raises(UnreadableFileError, match="manifest says"):
        ShardedCorpus(tmp_path / "c")


def test_info_prints_a_summary(tmp_path, capsys):
    files = _files(tmp_path / "in", [5], bad={0: (1,)})
    import_shards(files, tmp_path / "c", shard_size=3, skip_bad=True)
    assert main(["data", "info", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "4 structures in 2 shard(s)" in out and "gap: number, 4 structures, mean" in out
    assert "skipped: 1:" in out and "[index 1]: overlapping atoms" in out
    assert main(["data", "info", str(tmp_path / "c"), "--all"]) == 0
    assert "4 fine, 0 with errors" in capsys.readouterr().out


# ----------------------------------------------------------------------------- many processes
class _Sizes:
    def __init__(self, corpus):
        self.corpus = corpus

    def __len__(self):
        return len(self.corpus)

    def __getitem__(self, i):
        s = self.corpus[i]
        return i, s.n_atoms, float(s.positions.sum()), os.getpid()


def test_pickles_and_reads_in_forked_dataloader_workers(tmp_path):
    import torch

    import_shards(_files(tmp_path / "in", [10]), tmp_path / "c", shard_size=3)
    corpus = ShardedCorpus(tmp_path / "c")
    want = [
        (i, s.n_atoms, float(s.positions.sum())) for i, s in enumerate(corpus)
    ]  # parent has every shard open
    copy = pickle.loads(pickle.dumps(corpus))
    assert [s.id for s in copy] == [s.id for s in corpus]
    loader = torch.utils.data.DataLoader(_Sizes(corpus), batch_size=None, shuffle=False, num_workers=2,
                                         multiprocessing_context="fork")  # fmt: skip
    got = list(loader)
    assert [(int(i), int(n), float(x)) for i, n, x, _ in got] == want
    assert len({int(pid) for *_, pid in got}) == 2 and os.getpid() not in {
        int(pid) for *_, pid in got
    }
    assert corpus[5].n_atoms == want[5][1]  # the parent still reads


def test_open_shard_holds_ids_as_a_range_unless_rows_were_deleted(tmp_path):
    """A shard with no deleted rows keeps its ids as ``range(1, n + 1)`` (constant memory); one
    with a deleted row keeps ase-db-backends' list. Either way each index reads the right row."""
    import ase.db

    from atomssl.data._shards import open_shard

    frames = [bulk("Cu", "fcc", a=3.6 + 0.01 * i) for i in range(5)]
    plain, holed = tmp_path / "plain.aselmdb", tmp_path / "holed.aselmdb"
    for path in (plain, holed):
        with ase.db.connect(path, type="aselmdb") as db:
            for atoms in frames:
                db.write(atoms)
    with ase.db.connect(holed, type="aselmdb") as db:
        db.delete([2])
    close_shards()
    a, b = open_shard(plain), open_shard(holed)
    assert a.ids == range(1, 6) and isinstance(a.ids, range)
    assert list(b.ids) == [1, 3, 4, 5] and isinstance(b.ids, list)
    for i in range(5):
        assert np.isclose(a._get_row_by_index(i).cell[0, 1], frames[i].cell[0, 1])
    for i, k in enumerate([0, 2, 3, 4]):
        assert np.isclose(b._get_row_by_index(i).cell[0, 1], frames[k].cell[0, 1])
    close_shards()
