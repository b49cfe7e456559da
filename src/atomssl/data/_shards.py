"""Sharded corpora: a folder of ASE-LMDB shards (``*.aselmdb``) and a ``manifest.json``.

Each shard is a plain ASE database of the ``aselmdb`` backend (package ``ase-db-backends``), so
``ase.db.connect("DIR/shard-00000.aselmdb", type="aselmdb")`` reads it, as fairchem and MACE do.
A row holds one structure: scalar labels are also key-value pairs (queryable), energy/forces/
stress a single-point calculator's results, and ``data["atomssl"]`` keeps every label with the
original ``id``/``source``/``index`` and the reader's ``warnings`` (as :class:`StructureStore` does).
``manifest.json`` (written by :func:`atomssl.data.import_shards`) lists the shards in order with
their counts and sha256, and the corpus's species, label statistics, sources and skipped entries.

:class:`ShardedCorpus` reads a corpus lazily. LMDB environments are opened read-only and without
locks, one per shard and process, in a small per-process cache: a forked process (DataLoader
worker) first closes what it inherited (py-lmdb refuses to open a file twice in one process,
inherited environments included) and opens its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingFileError, StructureError, UnreadableFileError
from . import _asedb
from ._structure import Structure

MANIFEST = "manifest.json"
FORMAT = "atomssl-sharded-corpus"
FORMAT_VERSION = 1
SHARD_SUFFIX = ".aselmdb"
_META = _asedb.META_KEY


def shard_name(k: int) -> str:
    return f"shard-{k:05d}{SHARD_SUFFIX}"


def is_corpus(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a corpus manifest."""
    p = Path(path)
    return p.is_dir() and (p / MANIFEST).is_file()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a corpus folder, checked to be one this version of atomssl reads."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise MissingFileError(f"no {MANIFEST} (not a sharded corpus)", str(folder))
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnreadableFileError(
            f"unreadable manifest ({type(exc).__name__}: {exc})", str(path)
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UnreadableFileError(
            f"not an atomssl corpus manifest (format is not {FORMAT!r})", str(path)
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UnreadableFileError(
            f"manifest format version {manifest.get('format_version')!r}; this atomssl reads version {FORMAT_VERSION}",
            str(path),
        )
    return manifest


# ---------------------------------------------------------------------- rows <-> structures
def structure_row(s: Structure) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(atoms, key-value pairs, data) of the row that stores ``s``."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from ._store import _jsonable, _key_value_pairs

    atoms = Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=s.pbc)
    results = _calculator_results(s)
    if results:  # what fairchem/MACE read from a row: atoms.get_potential_energy(), get_forces()...
        atoms.calc = SinglePointCalculator(atoms, **results)
    meta: dict[str, Any] = {
        "labels": {k: _jsonable(v) for k, v in s.labels.items()},
        "id": s.id,
        "source": s.source,
        "index": s.index,
    }
    if s.warnings:
        meta["warnings"] = [str(w) for w in s.warnings]
    return atoms, _key_value_pairs(s.labels), {_META: meta}


def _calculator_results(s: Structure) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("energy", "free_energy"):
        value = s.labels.get(key)
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, (bool, np.bool_)
        ):
            out[key] = float(value)
    forces, stress = s.labels.get("forces"), s.labels.get("stress")
    if forces is not None and np.shape(forces) == (s.n_atoms, 3):
        out["forces"] = np.asarray(forces, dtype=float)
    if stress is not None and np.shape(stress) in ((6,), (3, 3)):
        out["stress"] = np.asarray(stress, dtype=float)
    return out


def row_structure(row, source: str, index: int) -> Structure:
    """The :class:`Structure` of a shard row (``source``/``index``: where it is read from)."""
    return _asedb.row_structure(row, source, index, provenance_id=True)


# ---------------------------------------------------------------------- per-process environments
_MAX_OPEN = 64
# realpath -> ((st_dev, st_ino, st_size, st_mtime_ns), LMDBDatabase)
_open: OrderedDict[str, tuple[tuple[int, int, int, int], Any]] = OrderedDict()
_open_pid: int | None = None
# path as given -> (identity of the file it named, its realpath), see open_shard
_real: dict[str | bytes, tuple[tuple[int, int, int, int], str]] = {}
_open_lock = threading.Lock()


def _drop(db) -> None:
    env = getattr(db, "_env", None)
    if env is not None:
        env.close()  # read-only and lock-free: closing an inherited one touches nothing shared
    db._env_pid = os.getpid()  # so that LMDBDatabase.__del__ does not open it again to close it


def open_shard(path: str | os.PathLike):
    """This process's read-only ``LMDBDatabase`` of the shard file ``path`` (cached)."""
    global _open_pid
    from ase_db_backends.aselmdb import LMDBDatabase

    try:
        st = os.stat(path)  # follows links: the file that would be opened now
    except FileNotFoundError:
        raise MissingFileError("no such shard", str(path)) from None
    # a file replaced at the same path is another file
    ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    # realpath costs several system calls: it is looked up again only when the file behind
    # ``path`` changes (or is first seen), which the stat above tells
    known = _real.get(os.fspath(path))
    if known is not None and known[0] == ident:
        key = known[1]
    else:
        key = os.path.realpath(path)
        if len(_real) >= 4 * _MAX_OPEN:
            _real.clear()
        _real[os.fspath(path)] = (ident, key)
    with _open_lock:
        if _open_pid != os.getpid():  # forked: what is here was opened by the parent
            for _, db in _open.values():
                _drop(db)
            _open.clear()
            _open_pid = os.getpid()
        hit = _open.get(key)
        if hit is not None and hit[0] == ident:
            _open.move_to_end(key)
            return hit[1]
        if hit is not None:  # the file was replaced: a new environment for the new file
            _drop(_open.pop(key)[1])
        while len(_open) >= _MAX_OPEN:
            _drop(_open.popitem(last=False)[1][1])
        try:
            db = LMDBDatabase(key, readonly=True, readahead=False)
        except Exception as exc:  # lmdb.Error and friends: name the file and the reason
            raise UnreadableFileError(
                f"not a readable ASE-LMDB shard ({type(exc).__name__}: {exc})", str(path)
            ) from None
        nextid = db._nextid
        ids = db.ids
        if not db.deleted_ids and len(ids) == nextid - 1 and (not ids or ids[-1] == nextid - 1):
            # ase-db-backends keeps every id of the shard as a list of Python ints (~36 bytes a
            # row; 64 open shards of 10,000 rows: 23 MB). With none deleted they are exactly
            # 1..n: a range is the same sequence in constant memory (read-only: nothing appends)
            db.ids = range(1, nextid)
        _open[key] = (ident, db)
        return db


def close_shards(paths: Iterable[str | os.PathLike] | None = None) -> None:
    """Close this process's environments of ``paths`` (all when ``None``)."""
    with _open_lock:
        if _open_pid != os.getpid():
            return
        keys = list(_open) if paths is None else [os.path.realpath(p) for p in paths]
        for key in keys:
            hit = _open.pop(key, None)
            if hit is not None:
                _drop(hit[1])


def iter_shard_rows(
    path: str | os.PathLike, start: int = 0, stop: int | None = None
) -> Iterator[tuple[int, Any]]:
    """(position, row) of a shard's rows ``start:stop`` in id order."""
    db = open_shard(path)
    ids = db.ids[start:stop]
    for j, row_id in enumerate(ids, start=start):
        try:
            yield j, db.get(id=row_id)
        except Exception as exc:
            raise UnreadableFileError(
                f"could not read row {j} ({type(exc).__name__}: {exc})", str(path), j
            ) from None


def read_aselmdb(
    path: Path, source: str, start: int = 0, stop: int | None = None
) -> Iterator[tuple[int, Any]]:
    """The entries of one ``.aselmdb`` file (any ASE-LMDB database, not only atomssl shards)."""
    for i, row in iter_shard_rows(path, start, stop):
        try:
            yield i, row_structure(row, source, i)
        except StructureError as err:
            yield i, err.located(source, i)
        except Exception as exc:
            yield (
                i,
                UnreadableFileError(
                    f"could not convert row ({type(exc).__name__}: {exc})", source, i
                ),
            )


# ---------------------------------------------------------------------- the corpus
class ShardedCorpus(Sequence):
    """A corpus folder as a lazy ``Sequence[Structure]`` (``len`` from the manifest; an item is read
    from its shard when asked for). ``source`` of each structure is the folder and ``index`` its
    position in the corpus; ``id`` the original id (or ``source@index`` of the original file).

    On open the manifest is checked against the shards (each listed shard exists with the size
    and row count recorded); ``verify=True`` also checks every shard's sha256 (reads all bytes).
    A corpus whose import has not finished is refused unless ``partial=True`` (then its completed
    shards are read). Pickles without open handles (and without the manifest's shard, skipped
    and warnings lists): each process opens its own environments.
    """

    def __init__(self, path: str | os.PathLike, verify: bool = False, partial: bool = False):
        self.path = Path(path)
        self.manifest = load_manifest(self.path)
        if not self.manifest.get("complete") and not partial:
            done = len(self.manifest.get("shards", []))
            raise UnreadableFileError(
                f"the import into this folder has not finished ({done} shard(s) complete); run the same "
                "`atomssl data import` again to finish it (or open with partial=True)",
                str(self.path),
            )
        self.files = [str(self.path / rec["file"]) for rec in self.manifest["shards"]]
        self.counts = [int(rec["count"]) for rec in self.manifest["shards"]]
        self.offsets = np.cumsum([0] + self.counts)
        self._check_files()
        if verify:
            self.verify()  # before LMDB reads a page of a damaged file
        self.check()

    # ------------------------------------------------------------------ checks
    def _check_files(self) -> None:
        for rec, file in zip(self.manifest["shards"], self.files):
            if not os.path.isfile(file):
                raise MissingFileError("shard listed in the manifest is missing", file)
            size = os.path.getsize(file)
            if size != rec["bytes"]:
                raise UnreadableFileError(
                    f"shard is {size} bytes, the manifest says {rec['bytes']} (modified or truncated)",
                    file,
                )

    def check(self) -> None:
        """Each listed shard exists with its recorded size and row count (cheap; no hashing)."""
        self._check_files()
        for rec, file in zip(self.manifest["shards"], self.files):
            n = len(open_shard(file).ids)
            if n != rec["count"]:
                raise UnreadableFileError(
                    f"shard holds {n} rows, the manifest says {rec['count']}", file
                )

    def verify(self) -> None:
        """Check every shard's sha256 against the manifest (raises for the first mismatch)."""
        for rec, file in zip(self.manifest["shards"], self.files):
            digest = file_sha256(file)
            if digest != rec["sha256"]:
                raise UnreadableFileError(
                    f"sha256 {digest[:16]}... differs from the manifest's {rec['sha256'][:16]}... (modified or corrupt)",
                    file,
                )

    def __getstate__(self) -> dict[str, Any]:
        # no handles here (they are per process, in open_shard's cache); the per-structure lists of
        # the manifest stay behind (a spawned DataLoader worker does not need them)
        state = dict(self.__dict__)
        state["manifest"] = {
            k: v for k, v in self.manifest.items() if k not in ("skipped", "warnings", "shards")
        }
        return state

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """(shard number, row position in that shard) of corpus index ``i``."""
        n = len(self)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"{self.path}: index {i} out of range for a corpus of {n} structures")
        k = int(np.searchsorted(self.offsets, j, side="right") - 1)
        return k, j - int(self.offsets[k])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        k, row = self.locate(i)
        db = open_shard(self.files[k])
        try:
            r = db.get(id=db.ids[row])
        except Exception as exc:
            raise UnreadableFileError(
                f"could not read row {row} ({type(exc).__name__}: {exc})", self.files[k], row
            ) from None
        return row_structure(r, str(self.path), int(self.offsets[k]) + row)

    def __iter__(self) -> Iterator[Structure]:
        for k, file in enumerate(self.files):
            for row, r in iter_shard_rows(file):
                yield row_structure(r, str(self.path), int(self.offsets[k]) + row)

    def entries(self) -> Iterator[tuple[int, Structure | StructureError]]:
        """(index, structure or the error of an unreadable row), for :func:`atomssl.data.iter_entries`."""
        for k, file in enumerate(self.files):
            for row, r in iter_shard_rows(file):
                i = int(self.offsets[k]) + row
                try:
                    yield i, row_structure(r, str(self.path), i)
                except Exception as exc:
                    why = f"could not convert row {row} of {file} ({type(exc).__name__}: {exc})"
                    yield i, UnreadableFileError(why, str(self.path), i)

    # ------------------------------------------------------------------ summaries
    @property
    def species(self) -> dict[str, dict[str, int]]:
        return self.manifest.get("species", {})

    @property
    def label_stats(self) -> dict[str, dict[str, Any]]:
        return self.manifest.get("labels", {})

    def label_names(self) -> list[str]:
        return sorted(self.label_stats)

    def close(self) -> None:
        """Close this process's environments of this corpus's shards."""
        close_shards(self.files)

    def __enter__(self) -> ShardedCorpus:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"ShardedCorpus({str(self.path)!r}: {len(self)} structures in {len(self.files)} shards)"
        )
