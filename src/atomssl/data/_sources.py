"""Many sources at once: files, folders (recursively), corpora and in-memory structures,
streamed in order with bad entries raised, skipped or yielded as errors."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeGuard

from ..errors import StructureError, UnknownFormatError
from ._formats import format_from_name
from ._readers import _iter_file
from ._structure import Structure

Source = str | os.PathLike | Structure | Any


def _is_path(obj: Any) -> TypeGuard[str | os.PathLike]:
    return isinstance(obj, (str, os.PathLike))


def expand_sources(sources: Source | Iterable[Source]) -> list[Any]:
    """Flatten ``sources`` into files and objects; folders become their structure files.

    Folders are searched recursively for names with a known format (hidden files skipped),
    in sorted order. A single path or object may be given instead of a list. A folder holding a
    ``manifest.json`` (a sharded corpus, :class:`ShardedCorpus`) is one source, read in manifest order.
    """
    if _is_path(sources) or not isinstance(sources, Iterable) or _is_structure_like(sources):
        sources = [sources]
    out: list[Any] = []
    for src in sources:
        if _is_path(src) and Path(src).is_dir():
            _walk(os.fspath(src), out)
        else:
            out.append(src)
    return out


def _walk(folder: str, out: list[Any]) -> None:
    """``os.walk`` order (a folder's files, then its subfolders, each sorted; hidden names and
    symlinked folders skipped), except that a corpus folder is one source, not searched."""
    from ._shards import is_corpus

    if is_corpus(folder):
        out.append(folder)
        return
    try:
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError:  # unreadable folder: skipped, as os.walk does
        return
    folders = [e for e in entries if e.is_dir()]
    out.extend(
        os.path.join(folder, e.name)
        for e in entries
        if e not in folders and format_from_name(e.name) is not None
    )
    for e in folders:
        if not e.is_symlink():
            _walk(os.path.join(folder, e.name), out)


def _is_structure_like(obj: Any) -> bool:
    """One structure (not a collection of them): Structure, ase.Atoms, pymatgen Structure/Molecule."""
    from ase import Atoms

    if isinstance(obj, (Structure, Atoms)):
        return True
    return type(obj).__module__.startswith("pymatgen.") and hasattr(obj, "sites")


def iter_entries(
    sources: Source | Iterable[Source],
    *,
    validate: bool = True,
    format: str | None = None,
    **options: Any,
) -> Iterator[Structure | StructureError]:
    """Every structure of ``sources`` in order, or the :class:`StructureError` standing for a bad
    entry (one per bad frame; one with ``index=None`` for a file that cannot be read at all).
    """
    n_objects = 0
    for src in expand_sources(sources):
        if _is_path(src):
            try:
                for _, entry in _iter_file(src, format, options):
                    if isinstance(entry, Structure) and validate:
                        try:
                            entry.validate()
                        except StructureError as err:
                            entry = err
                    yield entry
            except StructureError as err:
                yield err
            continue
        yield object_entry(src, n_objects, validate)
        n_objects += 1


def object_entry(obj: Any, n: int, validate: bool = True) -> Structure | StructureError:
    """An in-memory structure (``Structure``, ``ase.Atoms``, pymatgen) as the ``n``-th in-memory
    source: the structure (validated), or the error standing for it."""
    try:
        structure = Structure.coerce(obj, None, n)
        if isinstance(obj, Structure) and structure.index is None and structure.source is None:
            structure = structure.copy(index=n)
        return structure.validate() if validate else structure
    except StructureError as err:
        return err.located(None, n)
    except TypeError as exc:
        return UnknownFormatError(str(exc), None, n)


def iter_structures(
    sources: Source | Iterable[Source],
    skip_bad: bool = False,
    errors: list[StructureError] | None = None,
    *,
    validate: bool = True,
    format: str | None = None,
    **options: Any,
) -> Iterator[Structure]:
    """Stream structures from paths, folders (recursively), ``ase.Atoms``, pymatgen structures.

    A bad entry raises its :class:`StructureError`, unless ``skip_bad``: then it is appended to
    ``errors`` (when given) and skipped. ``options`` go to :func:`read` (``species=`` ...).
    In-memory objects get ``index`` = their position among the in-memory sources.
    """
    for entry in iter_entries(sources, validate=validate, format=format, **options):
        if isinstance(entry, StructureError):
            if not skip_bad:
                raise entry
            if errors is not None:
                errors.append(entry)
            continue
        yield entry
