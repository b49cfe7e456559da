"""A structure store on disk (ASE SQLite database) and crash-safe bulk import into it.

The store is a plain ASE database (``ase db STORE.db`` works on it): each row holds one
structure; scalar labels are also ASE key-value pairs (queryable), and ``data["atomssl"]``
keeps all labels plus the original ``id``/``source``/``index``. Reading is safe from many
processes at once (e.g. DDP ranks, DataLoader workers): each process opens its own read-only
SQLite connection.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import socket
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmptyInputError, MissingFileError, StructureError, UnreadableFileError
from ..utils._io import keep_file_mode
from ._asedb import (
    _ase_db_labels,
    _ase_db_warnings,
    _check_ase_sqlite,
    open_ase_db_readonly,
    select_rows,
)
from ._sources import expand_sources, iter_entries
from ._structure import Structure

log = logging.getLogger(__name__)

_META = "atomssl"


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
        labels, ident = _ase_db_labels(row)
        meta = row.data.get(_META, {}) if row.get("data") else {}
        if not meta.get("id") and meta.get("source"):
            ident = meta["source"] + (f"@{meta['index']}" if meta.get("index") is not None else "")
        s = Structure.from_ase(row.toatoms(), source=str(self.path), index=index, id=ident)
        s.labels = labels
        s.warnings = _ase_db_warnings(row)
        return s

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
                meta = {
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


# ---------------------------------------------------------------------- bulk import
@dataclass
class ImportReport:
    """What :func:`import_structures` did: counts, every skipped entry with its reason, and every
    structure written with reader warnings (``warned``: ``(source, index, warnings)``)."""

    out: Path
    n_written: int = 0
    n_sources: int = 0
    errors: list[StructureError] = field(default_factory=list)
    warned: list[tuple[str | None, int | None, list[str]]] = field(default_factory=list)

    @property
    def n_bad(self) -> int:
        return len(self.errors)

    @property
    def n_warned(self) -> int:
        """Structures written whose reader changed or doubted something (see ``warned``)."""
        return len(self.warned)

    @property
    def reasons(self) -> Counter:
        """Bad entries counted by kind of problem (e.g. ``{"overlapping atoms": 2}``)."""
        return Counter(err.kind for err in self.errors)

    def summary(self) -> str:
        lines = [
            f"wrote {self.n_written} structure(s) from {self.n_sources} source(s) to {self.out}"
        ]
        if self.errors:
            kinds = ", ".join(f"{n} {kind}" for kind, n in self.reasons.most_common())
            lines.append(
                f"skipped {self.n_bad} bad entr{'y' if self.n_bad == 1 else 'ies'} ({kinds}):"
            )
            lines.extend(f"  {err}" for err in self.errors)
        if self.warned:
            lines.append(f"{self.n_warned} structure(s) written with warnings:")
            for source, index, warnings in self.warned:
                where = (source or "<structure>") + (
                    f" [index {index}]" if index is not None else ""
                )
                lines.extend(f"  {where}: warning: {w}" for w in warnings)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "n_written": self.n_written,
            "n_sources": self.n_sources,
            "n_bad": self.n_bad,
            "reasons": dict(self.reasons),
            "errors": [
                {"source": e.source, "index": e.index, "kind": e.kind, "reason": e.reason}
                for e in self.errors
            ],
            "n_warned": self.n_warned,
            "warned": [
                {"source": src, "index": idx, "warnings": list(w)} for src, idx, w in self.warned
            ],
        }


_HOST = socket.gethostname().replace(".", "_") or "host"


# What SQLite may leave beside a database file: its rollback journal, or WAL and shared memory.
_SQLITE_SIBLINGS = ("", "-journal", "-wal", "-shm")


def _remove_temporary(tmp: Path) -> None:
    """Delete a temporary store and whatever SQLite left beside it."""
    for suffix in _SQLITE_SIBLINGS:
        with contextlib.suppress(FileNotFoundError):
            Path(f"{tmp}{suffix}").unlink()


def _remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete temporary stores left beside ``out`` by imports on this host whose process is gone
    (a killed ``data import``), with their SQLite journal/WAL/SHM files (also a journal whose
    temporary store is already gone); files of live processes or other hosts are left alone."""
    removed = []
    prefix = f".{out.name}.{_HOST}."
    for tmp in sorted(out.parent.glob(f"{glob.escape(prefix)}*.tmp.db*")):
        if not any(tmp.name.endswith(".tmp.db" + suffix) for suffix in _SQLITE_SIBLINGS):
            continue
        pid = tmp.name[len(prefix) :].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:  # alive, owned by someone else
            continue
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
            log.info("removed %s left by an interrupted import (process %s is gone)", tmp, pid)
    return removed


def import_structures(
    sources: Any,
    out: str | os.PathLike,
    skip_bad: bool = False,
    *,
    append: bool = False,
    validate: bool = True,
    progress: bool | None = False,
    format: str | None = None,
    **options: Any,
) -> ImportReport:
    """Read ``sources`` (files, folders, objects) into the store ``out``, atomically.

    Without ``skip_bad`` the first bad entry raises its :class:`StructureError` and ``out`` is
    left untouched (nothing partial is written: rows go to a temporary file in the same folder,
    renamed over ``out`` only at the end). With ``skip_bad`` every bad entry is reported in the
    returned :class:`ImportReport` and the import goes on. ``append`` adds to an existing store
    (still atomically). ``progress``: tqdm bar over the sources (``None``: when there are several and stderr is a terminal).
    ``options`` go to the readers (``species=``, ``atom_style=``...).
    """
    out = Path(out)
    items = expand_sources(sources)
    report = ImportReport(out=out, n_sources=len(items))
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{out.name}.{_HOST}.{os.getpid()}.", suffix=".tmp.db", dir=out.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if append and out.exists():
            _check_ase_sqlite(out, str(out))
            shutil.copyfile(out, tmp)  # contents only: the mode is set below
        else:
            tmp.unlink()  # let ASE create a fresh database
        store = StructureStore(tmp, mode="a")
        bar = None
        if progress or (progress is None and len(items) > 1):
            from tqdm import tqdm

            bar = tqdm(
                total=len(items),
                unit="file",
                desc=f"import -> {out.name}",
                disable=None if progress is None else False,
            )

        def good() -> Iterator[Structure]:
            for item in items:
                for entry in iter_entries([item], validate=validate, format=format, **options):
                    if isinstance(entry, StructureError):
                        if not skip_bad:
                            raise entry
                        report.errors.append(entry)
                        continue
                    if entry.warnings:
                        report.warned.append(
                            (entry.source, entry.index, [str(w) for w in entry.warnings])
                        )
                    yield entry
                if bar is not None:
                    bar.update(1)

        try:
            report.n_written = store.write(good(), validate=False)
        finally:
            store.close()
            if bar is not None:
                bar.close()
        if report.n_written == 0:  # an empty store is never a result: the old one stays as it was
            what = f"no structures to import from {len(items)} source(s)"
            if report.n_bad:
                what += f": every entry was bad ({report.n_bad} skipped; first: {report.errors[0]})"
            raise EmptyInputError(
                f"{what}; "
                + (f"{out} is unchanged" if out.exists() else f"nothing was written to {out}")
            )
        keep_file_mode(tmp, out)  # the mode of the store replaced (not mkstemp's 0600)
        os.replace(tmp, out)
    except BaseException:
        _remove_temporary(tmp)
        raise
    return report
