"""The one writer of a shard import: fills shards in stream order, each in one LMDB transaction,
and records each completed shard in ``manifest.json``.

Crash safety: a shard is written to ``.shard-NNNNN.aselmdb.tmp`` (LMDB also creates
``...tmp-lock``), committed (LMDB syncs the data file), fsynced, renamed to
``shard-NNNNN.aselmdb`` (folder fsynced) and only then recorded in the manifest (atomic write)
with its size, sha256, row count and the stream range it holds. The manifest's totals (species,
labels, sources, skipped, warnings) only ever cover recorded shards, so a killed import resumes
after the last recorded shard: :func:`clean` removes temporaries, and shards renamed but not yet
recorded, which the next run writes again.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import StructureError
from ..utils._io import keep_file_mode, write_json
from ._shard_stats import ShardStats, merge_states
from ._shards import MANIFEST, SHARD_SUFFIX, file_sha256, shard_name, structure_row
from ._structure import Structure

_TMP = ".tmp"


class ShardWriter:
    """Fills shards in stream order; records each completed shard in the manifest."""

    def __init__(self, out: Path, manifest: dict[str, Any], shard_size: int):
        self.out, self.manifest, self.shard_size = out, manifest, shard_size
        self.db: Any | None = None  # the open shard's LMDBDatabase (untyped), if any
        self._reset(manifest["shards"][-1]["end"] if manifest["shards"] else [0, 0])

    def _reset(self, start: list[int]) -> None:
        self.start, self.count, self.stats = list(start), 0, ShardStats()
        self.ranges: list[dict[str, Any]] = []
        self.skipped: list[dict[str, Any]] = []
        self.warned: list[dict[str, Any]] = []
        self.per_source: Counter = Counter()
        self.skips_per_source: Counter = Counter()

    @property
    def tmp(self) -> Path:
        return self.out / f".{shard_name(len(self.manifest['shards']))}{_TMP}"

    def add(self, s: Structure, k: int, n: int) -> None:
        db = self.db
        if db is None:
            from ase_db_backends.aselmdb import LMDBDatabase

            remove_file(self.tmp)
            db = self.db = LMDBDatabase(self.tmp)
            db.__enter__()  # one write transaction per shard
        atoms, kvp, data = structure_row(s)
        db.write(atoms, key_value_pairs=kvp, data=data)
        index = self.manifest["n_structures"] + self.count
        self.count += 1
        self.per_source[k] += 1
        self.stats.add(atoms.get_chemical_symbols(), s.labels)
        src = self.manifest["sources"][k]["path"]
        last = self.ranges[-1] if self.ranges else None
        if (
            last is not None
            and last["item"] == k
            and s.index is not None
            and last["stop"] == s.index
        ):
            last["stop"] += 1
        else:
            self.ranges.append(
                {
                    "item": k,
                    "source": src,
                    "start": s.index,
                    "stop": None if s.index is None else s.index + 1,
                }
            )
        if s.warnings:
            self.warned.append(
                {
                    "source": s.source,
                    "index": s.index,
                    "id": s.id,
                    "corpus_index": index,
                    "warnings": [str(w) for w in s.warnings],
                }
            )
        if self.count == self.shard_size:
            self.seal([k, n + 1])

    def skip(self, err: StructureError, k: int) -> None:
        self.skipped.append(
            {"source": err.source, "index": err.index, "kind": err.kind, "reason": err.reason}
        )
        self.skips_per_source[k] += 1

    def seal(self, end: list[int]) -> None:
        """Commit the shard being written, rename it into place and record it in the manifest."""
        tmp, final = self.tmp, self.out / shard_name(len(self.manifest["shards"]))
        assert self.db is not None  # seal() follows add(): a shard is open
        self.db.__exit__(None, None, None)  # commit (LMDB syncs the data file) and close
        self.db = None
        remove_file(Path(f"{tmp}-lock"))
        _fsync(tmp)
        keep_file_mode(tmp, final)  # LMDB creates 0755 files: give it what open() would
        record = {
            "file": final.name,
            "count": self.count,
            "bytes": tmp.stat().st_size,
            "sha256": file_sha256(tmp),
            "first": self.manifest["n_structures"],
            "start": self.start,
            "end": list(end),
            "entries": self.ranges,
            "n_skipped": len(self.skipped),
            "n_warned": len(self.warned),
            "stats": self.stats.state(),
        }
        os.replace(tmp, final)
        _fsync_dir(self.out)
        self.manifest["shards"].append(record)
        self._commit(end)

    def _commit(self, end: list[int]) -> None:
        m = self.manifest
        m["n_structures"] += self.count
        m["species"], m["labels"] = merge_states([rec["stats"] for rec in m["shards"]])
        m["skipped"].extend(self.skipped)
        m["warnings"].extend(self.warned)
        for k, n in self.per_source.items():
            m["sources"][k]["structures"] += n
        for k, n in self.skips_per_source.items():
            m["sources"][k]["skipped"] += n
        write_manifest(self.out, m)
        self._reset(end)

    def finish(self) -> None:
        if self.count:
            self.seal([len(self.manifest["sources"]), 0])
        elif self.skipped:  # bad entries after the last structure
            self._commit([len(self.manifest["sources"]), 0])
        self.manifest["complete"] = True
        self.manifest["completed"] = now()
        write_manifest(self.out, self.manifest)

    def abort(self) -> None:
        """Drop the shard being written (its rows are read again by the next run)."""
        if self.db is not None:
            with contextlib.suppress(Exception):
                self.db.txn.abort()
                del self.db.txn
                self.db.close()
            self.db = None
        remove_file(self.tmp)
        remove_file(Path(f"{self.tmp}-lock"))


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    manifest["updated"] = now()
    write_json(out / MANIFEST, manifest)


def remove_file(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform/filesystem can fsync a folder
        _fsync(path)


def clean(out: Path, n_done: int) -> None:
    """Remove temporaries of a killed run, and shards renamed but not yet recorded in the manifest."""
    for p in out.iterdir():
        name = p.name
        if name.startswith(".shard-") and (
            name.endswith(SHARD_SUFFIX + _TMP) or name.endswith(SHARD_SUFFIX + _TMP + "-lock")
        ):
            remove_file(p)
        elif (
            name.startswith("shard-")
            and name.endswith(SHARD_SUFFIX)
            and name[6 : -len(SHARD_SUFFIX)].isdigit()
        ):
            if int(name[6 : -len(SHARD_SUFFIX)]) >= n_done:
                remove_file(p)
                remove_file(Path(f"{p}-lock"))
