"""Import structure files into a sharded corpus (:mod:`atomssl.data._shards`): crash-safe,
resumable, parsed by worker processes (:mod:`._shard_stream`), written by one writer in input
order (:mod:`._shard_writer`). This module checks a folder before writing into it: a new corpus,
an interrupted import of the same sources and options (resumed), or a complete one (left as is).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, EmptyInputError, StructureError
from ._shard_stream import ObjectRun, group_objects, is_dataset, stream_entries
from ._shard_writer import ShardWriter, clean, now, remove_file, write_manifest
from ._shards import FORMAT, FORMAT_VERSION, MANIFEST, SHARD_SUFFIX, close_shards, load_manifest
from ._sources import expand_sources
from ._store_import import ImportReport

DEFAULT_SHARD_SIZE = 10_000
_LOCK = ".import.lock"


@dataclass
class ShardImportReport(ImportReport):
    """What :func:`import_shards` did (counts are of the whole corpus, resumed runs included)."""

    n_shards: int = 0
    resumed_shards: int = 0  # shards already complete when this run started
    already_complete: bool = False
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)

    def summary(self) -> str:
        lines = super().summary().splitlines()
        head = f"wrote {self.n_written} structure(s) in {self.n_shards} shard(s) from {self.n_sources} source(s) to {self.out}"
        if self.already_complete:
            head = f"{self.out} is already complete ({self.n_written} structure(s) in {self.n_shards} shard(s)): nothing to do"
        elif self.resumed_shards:
            head += f" (resumed: {self.resumed_shards} shard(s) were complete from an earlier run)"
        return "\n".join([head] + lines[1:])

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update(
            n_shards=self.n_shards,
            resumed_shards=self.resumed_shards,
            already_complete=self.already_complete,
        )
        return out


def _recorded_error(rec: dict[str, Any]) -> StructureError:
    """A :class:`StructureError` of the kind recorded in a manifest's ``skipped`` list."""
    todo, cls = [StructureError], StructureError
    while todo:
        c = todo.pop()
        if c.kind == rec.get("kind"):
            cls = c
            break
        todo.extend(c.__subclasses__())
    err = cls.__new__(cls)
    if cls.kind != rec.get("kind"):
        err.kind = rec.get("kind") or cls.kind
    StructureError.__init__(err, rec.get("reason", ""), rec.get("source"), rec.get("index"))
    return err


# ---------------------------------------------------------------------- sources and options
def _source_record(item: Any) -> dict[str, Any]:
    if is_dataset(item):  # built from the installed package's files: the same on every run
        return {"path": item, "dataset": item, "structures": 0, "skipped": 0}
    if isinstance(item, ObjectRun):
        return {"path": None, "objects": len(item), "structures": 0, "skipped": 0}
    try:
        st = os.stat(item)
    except OSError:  # reported by the reader as a bad entry
        return {
            "path": os.fspath(item),
            "resolved": os.path.realpath(item),
            "size": None,
            "mtime": None,
            "mtime_ns": None,
            "structures": 0,
            "skipped": 0,
        }
    return {
        "path": os.fspath(item),
        "resolved": os.path.realpath(item),
        "size": st.st_size,
        "mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime)),
        "mtime_ns": st.st_mtime_ns,
        "structures": 0,
        "skipped": 0,
    }


def _identity(rec: dict[str, Any]) -> tuple:
    return (rec.get("resolved"), rec.get("size"), rec.get("mtime_ns"), rec.get("dataset"))


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _check_resumable(
    out: Path, manifest: dict[str, Any], sources: list[dict[str, Any]], options: dict[str, Any]
) -> None:
    """Refuse to go on with a manifest of other inputs. The sources the recorded shards read from
    must be unchanged; later ones may differ (e.g. a bad file fixed after an aborted import), and
    then replace the old records in ``manifest``."""
    old = manifest.get("sources", [])
    shards = manifest.get("shards", [])
    item, ordinal = shards[-1]["end"] if shards else (0, 0)
    fixed = len(old) if manifest.get("complete") else min(len(old), item + (ordinal > 0))
    why = None
    if len(sources) < fixed:
        why = f"{len(old)} source file(s) then, {len(sources)} now"
    for a, b in zip(old[:fixed], sources):
        if why:
            break
        if a.get("objects") or b.get("objects"):
            why = "in-memory structures cannot be checked against an earlier run"
        elif _identity(a) != _identity(b):
            what = (
                "another file"
                if a.get("resolved") != b.get("resolved")
                else "changed since (size or mtime)"
            )
            why = f"source {b['path']}: {what}"
    if why is None and manifest.get("complete") and len(old) != len(sources):
        why = f"{len(old)} source file(s) then, {len(sources)} now"
    if why is None and manifest.get("options") != options:
        diff = sorted(
            k
            for k in set(options) | set(manifest.get("options", {}))
            if options.get(k) != manifest["options"].get(k)
        )
        why = "different options: " + ", ".join(
            f"{k} {manifest['options'].get(k)!r} then, {options.get(k)!r} now" for k in diff
        )
    if why:
        state = "a complete corpus" if manifest.get("complete") else "an interrupted import"
        raise ConfigError(
            f"{out}: holds {state} of other inputs ({why}); import into a new folder, or delete {out} to start over"
        )
    manifest["sources"] = old[:fixed] + sources[fixed:]


@contextlib.contextmanager
def _exclusive(out: Path):
    """One import at a time into ``out`` (an advisory lock the kernel drops when the process dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fh = open(out / _LOCK, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"{out}: another import is writing into this folder right now"
            ) from None
        yield
    finally:
        fh.close()


# ---------------------------------------------------------------------- the import
def import_shards(
    sources: Any,
    out: str | os.PathLike,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int = 1,
    skip_bad: bool = False,
    validate: bool = True,
    progress: bool | None = False,
    format: str | None = None,
    **options: Any,
) -> ShardImportReport:
    """Read ``sources`` (files, folders) into the corpus folder ``out``: ``shard_size`` structures per
    ``.aselmdb`` shard and a ``manifest.json`` (see :mod:`atomssl.data._shards`).

    ``workers`` processes parse source files (one file per task) while this process writes the
    shards in input order: the corpus is the same for any ``workers``. Without ``skip_bad`` the
    first bad entry raises its :class:`StructureError`; shards completed before it stay, and
    running the same import again (e.g. with ``skip_bad``) resumes after them. With ``skip_bad``
    each bad entry is recorded with its reason in the manifest. An interrupted import (even
    SIGKILL) resumes when run again with the same sources and options; a complete one is left as
    it is. No structure at all raises :class:`EmptyInputError` and leaves nothing behind.
    ``options`` go to the readers (``species=``, ``atom_style=`` ...).
    """
    if int(shard_size) < 1:
        raise ConfigError(f"shard_size must be >= 1, got {shard_size}")
    if int(workers) < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    items = group_objects(expand_sources(sources))
    if not items:
        raise EmptyInputError(f"no structure sources to import into {out}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file, not a folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    source_records = [_source_record(x) for x in items]
    opts = _jsonable(
        {"shard_size": int(shard_size), "format": format, "validate": bool(validate), **options}
    )
    with _exclusive(out):
        manifest = load_manifest(out) if (out / MANIFEST).exists() else None
        if manifest is not None:
            _check_resumable(out, manifest, source_records, opts)
        elif any(p.name.endswith(SHARD_SUFFIX) for p in out.iterdir()):
            raise ConfigError(
                f"{out}: holds .aselmdb files but no {MANIFEST}; import into a new or empty folder"
            )
        else:
            manifest = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "complete": False, "created": now(),
                "updated": None, "completed": None, "options": opts, "n_structures": 0, "shards": [], "species": {}, "labels": {},
                "sources": source_records, "skipped": [], "warnings": [],
            }  # fmt: skip
        report = ShardImportReport(out=out, n_sources=len(items))
        resumed = len(manifest["shards"])
        if manifest.get("complete"):
            from ._shards import ShardedCorpus

            ShardedCorpus(out)  # the shards are still what the manifest says
            return _fill(report, manifest, resumed, already=True)
        close_shards(
            out.glob("shard-*" + SHARD_SUFFIX)
        )  # this process may have read files about to be replaced
        clean(out, resumed)
        for rec in manifest["shards"]:
            path = out / rec["file"]
            if not path.is_file() or path.stat().st_size != rec["bytes"]:
                raise ConfigError(
                    f"{path}: shard recorded in the manifest is missing or changed; delete {out} to start over"
                )
        write_manifest(out, manifest)
        writer = ShardWriter(out, manifest, int(shard_size))
        bar = None
        if progress or (progress is None and len(items) > 1):
            from tqdm import tqdm

            bar = tqdm(
                total=len(items),
                initial=writer.start[0],
                unit="file",
                desc=f"import -> {out.name}",
                disable=None if progress is None else False,
            )
        try:
            for k, n, entry in stream_entries(
                items,
                writer.start,
                int(workers),
                validate,
                format,
                options,
                done=bar.update if bar is not None else None,
            ):
                if isinstance(entry, StructureError):
                    if not skip_bad:
                        raise entry
                    writer.skip(entry, k)
                else:
                    writer.add(entry, k, n)
            if manifest["n_structures"] + writer.count == 0:
                first = writer.skipped[0] if writer.skipped else None
                _discard(out, created)
                bad = (
                    f": every entry was bad ({len(writer.skipped)} skipped; first: {_recorded_error(first)})"
                    if first
                    else ""
                )
                raise EmptyInputError(f"no structures to import{bad}; nothing was written to {out}")
            writer.finish()
        except BaseException:
            writer.abort()
            if not manifest["shards"] and (out / MANIFEST).exists():
                _discard(out, created)
            raise
        finally:
            if bar is not None:
                bar.close()
    return _fill(report, manifest, resumed, already=False)


def _discard(out: Path, created: bool) -> None:
    """Leave no trace of an import that completed no shard."""
    remove_file(out / MANIFEST)
    remove_file(out / _LOCK)
    if created:
        with contextlib.suppress(OSError):
            out.rmdir()


def _fill(
    report: ShardImportReport, manifest: dict[str, Any], resumed: int, already: bool
) -> ShardImportReport:
    report.n_written = manifest["n_structures"]
    report.n_shards = len(manifest["shards"])
    report.resumed_shards = resumed
    report.already_complete = already
    report.errors = [_recorded_error(rec) for rec in manifest["skipped"]]
    report.warned = [(w["source"], w["index"], list(w["warnings"])) for w in manifest["warnings"]]
    report.manifest = manifest
    return report
