"""A structure store on disk (ASE SQLite database); crash-safe bulk import into it is in ``_store_import``.

The store is a plain ASE database (``ase db STORE.db`` works on it): each row holds one
structure; scalar labels are also ASE key-value pairs (queryable), and ``data["atomssl"]``
keeps all labels plus the original ``id``/``source``/``index``. Reading is safe from many
processes at once (e.g. DDP ranks, DataLoader workers): each process opens its own read-only
SQLite connection.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingFileError, UnreadableFileError
from ._asedb import (
    META_KEY,
    _check_ase_sqlite,
    open_ase_db_readonly,
    row_structure,
    select_rows,
)
from ._structure import Structure

_META = META_KEY


def _key_value_pairs(labels: dict[str, Any]) -> dict[str, Any]:
    """The labels ASE accepts as queryable key-value pairs (scalars, non-reserved names)."""
    from ase.db.core import check

    out = {}
    for key, value in labels.items():
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, (bool, int, float, str)):
            continue
        try:
            check({key: value})
        except (ValueError, TypeError, KeyError):
            continue
        out[key] = value
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


class StructureStore(Sequence):
    """Structures with labels in an ASE SQLite database file.

    ``mode``: ``"r"`` read an existing store, ``"a"`` read and append (created when missing),
    ``"w"`` start empty (an existing file is replaced). ``len``, indexing (int or slice) and
    iteration return :class:`Structure` records whose ``source`` is the store and ``index`` the
    position in it; ``id`` is the original id, or ``source@index`` of the original file.
    The row list is a snapshot taken at open: call :meth:`refresh` to see rows added since.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "r"):
        if mode not in ("r", "a", "w"):
            raise ValueError(f"mode must be 'r', 'a' or 'w', got {mode!r}")
        self.path = Path(path)
        self.mode = mode
        if mode == "w" and self.path.exists():
            self.path.unlink()
        if mode == "r" or self.path.exists():
            if not self.path.exists():
                raise MissingFileError("no such store", str(self.path))
            _check_ase_sqlite(self.path, str(self.path))
        self._pid: int | None = None
        self._db = None
        self._ids: list[int] | None = None

    # ------------------------------------------------------------------ connections
    def _database(self):
        """The ASE database of this process (re-opened after fork, read-only in mode 'r')."""
        if self._db is None or self._pid != os.getpid():
            import ase.db

            if self.mode == "r":
                # One persistent read-only connection per process: fast random access, and a
                # reader can never modify (or lock for writing) a store shared between ranks.
                db = open_ase_db_readonly(self.path)
            else:
                db = ase.db.connect(
                    str(self.path), type="db", create_indices=True, use_lock_file=False
                )
            self._db, self._pid = db, os.getpid()
        return self._db

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_db=None, _pid=None)
        return state

    def close(self) -> None:
        if self._db is not None and self._db.connection is not None and self._pid == os.getpid():
            self._db.connection.close()
        self._db = self._pid = None

    def __enter__(self) -> StructureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def refresh(self) -> None:
        self._ids = None

    @property
    def ids(self) -> list[int]:
        """Database row ids in store order."""
        if self._ids is None:
            if not self.path.exists():
                self._ids = []
            else:
                try:
                    rows = self._database().select(sort="id", include_data=False, columns=["id"])
                    self._ids = [row.id for row in rows]
                except sqlite3.Error as exc:
                    raise UnreadableFileError(
                        f"could not read the store ({exc})", str(self.path)
                    ) from None
        return self._ids

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.ids)

    def _row_to_structure(self, row, index: int) -> Structure:
        return row_structure(row, str(self.path), index, provenance_id=True)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"{self.path}: index {i} out of range for a store of {n} structures")
        try:
            row = self._database().get(id=self.ids[j])
        except (sqlite3.Error, KeyError) as exc:
            raise UnreadableFileError(
                f"could not read row {j} ({exc})", str(self.path), j
            ) from None
        return self._row_to_structure(row, j)

    def __iter__(self) -> Iterator[Structure]:
        # A few large queries instead of one per row.
        if not self.ids:
            return
        for j, row in enumerate(select_rows(self._database(), 0, len(self.ids))):
            yield self._row_to_structure(row, j)

    def label_names(self) -> list[str]:
        """Label names present in the first row (a cheap look at what the store holds)."""
        return sorted(self[0].labels) if len(self) else []

    # ------------------------------------------------------------------ writing
    def write(self, structures: Iterable[Any], validate: bool = True) -> int:
        """Append structures (``Structure``/``ase.Atoms``/pymatgen) in one transaction; returns the count."""
        if self.mode == "r":
            raise PermissionError(f"{self.path}: store opened read-only (mode='r')")
        db = self._database()
        n = 0
        with db:
            for s in structures:
                s = Structure.coerce(s)
                if validate:
                    s.validate()
                meta: dict[str, Any] = {
                    "labels": {k: _jsonable(v) for k, v in s.labels.items()},
                    "id": s.id,
                    "source": s.source,
                    "index": s.index,
                }
                if s.warnings:  # what the reader changed or doubted stays with the row
                    meta["warnings"] = [str(w) for w in s.warnings]
                db.write(
                    _plain_atoms(s), key_value_pairs=_key_value_pairs(s.labels), data={_META: meta}
                )
                n += 1
        self._ids = None
        return n


def _plain_atoms(s: Structure):
    """Atoms without ``info`` (labels go to key-value pairs/data, not to ASE's calculator)."""
    from ase import Atoms

    return Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=s.pbc)
