"""ASE databases (SQLite and JSON) as structure sources: rows, labels, read-only access."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StructureError, UnreadableFileError
from ._formats import Entry, _wrap
from ._structure import Structure

#: the ``data`` key under which atomssl's stores and corpora keep a row's labels, id, provenance
#: and reader warnings
META_KEY = "atomssl"


def _ase_db_labels(row) -> tuple[dict[str, Any], str]:
    """Labels and id of an ASE database row; rows written by :class:`StructureStore` keep theirs."""
    meta = row.data.get(META_KEY) if row.get("data") else None
    if isinstance(meta, dict):
        return dict(meta.get("labels", {})), str(meta.get("id") or "")
    labels = dict(row.key_value_pairs)
    for key, value in (
        row.get("data") or {}
    ).items():  # vector labels (spectra) kept in the data field
        if (
            isinstance(value, np.ndarray)
            and value.ndim == 1
            and value.dtype.kind in "iuf"
            and key not in labels
        ):
            labels[key] = value.astype(np.float64)
    for key in ("energy", "free_energy"):
        if row.get(key) is not None:
            labels.setdefault(key, float(row[key]))
    return labels, str(row.get("unique_id", "") or row.id)


def _ase_db_warnings(row) -> list[str]:
    """The reader warnings a :class:`StructureStore` row keeps (``data["atomssl"]["warnings"]``)."""
    meta = row.data.get(META_KEY) if row.get("data") else None
    return [str(w) for w in meta.get("warnings") or []] if isinstance(meta, dict) else []


def row_structure(row, source: str, index: int, *, provenance_id: bool = False) -> Structure:
    """The :class:`Structure` of an ASE database row (``source``/``index``: where it is read from).

    ``provenance_id``: a row atomssl wrote without an id of its own is named after where it was
    first read (``data["atomssl"]["source"]@index``), as stores and corpora do.
    """
    labels, ident = _ase_db_labels(row)
    if provenance_id:
        meta = row.data.get(META_KEY, {}) if row.get("data") else {}
        if isinstance(meta, dict) and not meta.get("id") and meta.get("source"):
            ident = meta["source"] + (f"@{meta['index']}" if meta.get("index") is not None else "")
    # straight from the row's arrays: ``row.toatoms()`` would build an ase.Atoms (and a
    # calculator) only for Structure.from_ase to copy the same four arrays out of it, about a
    # fifth of the cost of streaming a structure; the labels are the row's (above) either way
    cell = row.get("cell")
    s = Structure(
        numbers=row.numbers,
        positions=row.positions,
        cell=np.zeros((3, 3)) if cell is None else cell,
        pbc=row.get("pbc", False),
        labels=labels,
        id=ident,
        source=source,
        index=index,
    )
    s.warnings = _ase_db_warnings(row)
    return s


def select_rows(db, start: int = 0, stop: int | None = None, chunk: int = 1000):
    """Rows ``start:stop`` of an ASE database in id order, fetched ``chunk`` at a time
    (ASE's ``select`` loads every matching row into memory at once)."""
    pos = start
    while stop is None or pos < stop:
        n = chunk if stop is None else min(chunk, stop - pos)
        rows = list(db.select(sort="id", offset=pos, limit=n))
        yield from rows
        if len(rows) < n:
            return
        pos += n


def _check_ase_sqlite(path: Path, source: str) -> None:
    """Refuse non-ASE SQLite files before ASE would add its tables to them."""
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            (n,) = con.execute("SELECT COUNT(*) FROM sqlite_master WHERE name='systems'").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise UnreadableFileError(f"not an SQLite database ({exc})", source) from None
    if n == 0:
        raise UnreadableFileError("not an ASE database (no 'systems' table)", source)


def open_ase_db_readonly(path: str | os.PathLike):
    """An ASE SQLite database on one persistent read-only connection (close ``db.connection``).

    Why not plain ``ase.db.connect``: ASE opens a new connection, and queries the table list
    again, for every row it converts (~1 ms per row); read-only also guarantees that readers
    never modify or write-lock a file shared between processes.
    """
    import ase.db

    path = Path(path)
    db = ase.db.connect(str(path), type="db", create_indices=False, use_lock_file=False)
    db.connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
    db.change_count = 0  # set by ASE's __enter__, read by managed_connection
    tables = db._get_external_table_names()
    db._get_external_table_names = lambda *args, **kwargs: tables  # constant while read-only
    return db


def _read_ase_db(
    path: Path, source: str, kind: str = "db", start: int = 0, stop: int | None = None
) -> Iterator[Entry]:
    import ase.db

    if kind == "db":
        _check_ase_sqlite(path, source)
    db = None
    try:
        if kind == "db":
            db = open_ase_db_readonly(path)
        else:
            db = ase.db.connect(str(path), type=kind, use_lock_file=False)
        for i, row in enumerate(select_rows(db, start, stop), start=start):
            try:
                yield i, row_structure(row, source, i)
            except Exception as exc:
                yield i, _wrap(exc, source, i, "could not convert row")
    except StructureError:
        raise
    except Exception as exc:
        raise _wrap(exc, source, what="could not read database") from None
    finally:
        if db is not None and getattr(db, "connection", None) is not None:
            db.connection.close()
