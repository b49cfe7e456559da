"""Crash-safe bulk import of structure files into a :class:`StructureStore` (atomic, bad entries reported)."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import socket
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EmptyInputError, StructureError
from ..utils._io import keep_file_mode
from ._asedb import _check_ase_sqlite
from ._sources import expand_sources, iter_entries
from ._store import StructureStore
from ._structure import Structure

log = logging.getLogger(__name__)


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
