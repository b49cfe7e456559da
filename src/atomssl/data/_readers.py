"""Structure files -> :class:`Structure` records, with typed errors for bad input.

:func:`read` reads one file (all frames, or the ``index`` chosen); :func:`iter_structures`
streams structures from files, folders (recursively) and in-memory objects (``ase.Atoms``,
pymatgen ``Structure``/``Molecule``, :class:`Structure`), optionally skipping bad entries.

One module per job: format names and detection (:mod:`._formats`), CIF read by pymatgen
and ASE cross-checked (:mod:`._cif`), ASE-parsed formats with the LAMMPS checks
(:mod:`._ase_formats`), ASE databases (:mod:`._asedb`), GSD (:mod:`._gsd`), corpora
(:mod:`._shards`), many sources at once (:mod:`._sources`). Every library exception is
wrapped into a :class:`StructureError` subclass naming the file, the frame and the reason.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    MissingFileError,
    StructureError,
    UnknownFormatError,
    UnreadableFileError,
)
from ._ase_formats import _read_ase
from ._asedb import (
    _read_ase_db,
)
from ._formats import (
    ALIASES,
    FORMATS,
    Entry,
    FrameIndexError,
    _wrap,
    detect_format,
)
from ._structure import Structure

log = logging.getLogger(__name__)

Index = int | slice | str | None


def _read_cif(path: Path, source: str, options: dict[str, Any]) -> Iterator[Entry]:
    # pymatgen and ASE cross-checked against each other and the declared formula (see _cif.py)
    from ._cif import read_cif

    yield from read_cif(path, source, options)


def _read_json(path: Path, source: str) -> Iterator[Entry]:
    try:
        with open(path, "rb") as fh:
            obj = json.loads(fh.read().decode("utf-8"))
    except Exception as exc:
        raise _wrap(exc, source, what="invalid JSON") from None
    if isinstance(obj, dict) and "ids" in obj and "nextid" in obj:  # ASE's JSON database
        yield from _read_ase_db(path, source, "json")
        return
    from monty.json import MontyDecoder

    try:
        decoded = MontyDecoder().process_decoded(obj)
    except Exception as exc:
        raise _wrap(exc, source, what="not pymatgen JSON") from None
    items = decoded if isinstance(decoded, list) else [decoded]
    for i, item in enumerate(items):
        try:
            yield i, Structure.coerce(item, source, i)
        except TypeError:
            yield (
                i,
                UnreadableFileError(
                    f"entry is a {type(item).__name__}, not a pymatgen structure", source, i
                ),
            )
        except Exception as exc:
            yield i, _wrap(exc, source, i, "could not convert")


def _iter_file(
    path: str | os.PathLike,
    format: str | None,
    options: dict[str, Any],
    start: int = 0,
    stop: int | None = None,
) -> Iterator[Entry]:
    """All frames of one file as (index, Structure | per-frame error); raises file-level errors.

    ``start``/``stop`` are hints (the database and GSD readers use ``start`` to skip frames).
    """
    p = Path(path)
    source = str(path)
    if not p.exists():
        raise MissingFileError("no such file", source)
    if p.is_dir():
        from ._shards import ShardedCorpus, is_corpus

        if is_corpus(p):  # a sharded corpus folder: its structures in manifest order
            yield from ShardedCorpus(p).entries()
            return
        raise UnreadableFileError("is a folder, not a file", source)
    if not os.access(p, os.R_OK):
        raise UnreadableFileError("permission denied", source)
    fmt = ALIASES.get(format.lower(), format.lower()) if format else detect_format(p)
    if fmt not in FORMATS:
        from ase.io.formats import ioformats

        if fmt not in ioformats or not ioformats[fmt].can_read:
            raise UnknownFormatError(
                f"format {fmt!r} is not readable by atomssl or ASE (atomssl names: {', '.join(FORMATS)})",
                source,
            )
    try:
        if fmt == "cif":
            yield from _read_cif(p, source, options)
        elif fmt == "json":
            yield from _read_json(p, source)
        elif fmt == "db":
            yield from _read_ase_db(p, source, "db", start, stop)
        elif fmt == "aselmdb":
            from ._shards import read_aselmdb

            yield from read_aselmdb(p, source, start, stop)
        elif fmt == "gsd":
            from ._gsd import read_gsd

            yield from read_gsd(p, source, options, start)
        else:
            yield from _read_ase(p, source, fmt, options)
    except StructureError as err:
        raise err.located(source) from None
    except Exception as exc:
        raise _wrap(exc, source) from None


def _normalise_index(index: Index) -> int | slice:
    if index is None:
        return slice(None)
    if isinstance(index, str):
        from ase.io.formats import string2index

        parsed = string2index(index)
        if isinstance(parsed, str):  # ase hands back what is neither an int nor a slice
            raise ValueError(f"index {index!r} is not a frame number or a slice like '2:5'")
        return parsed
    if isinstance(index, (int, np.integer)):
        return int(index)
    if isinstance(index, slice):
        return index
    raise TypeError(
        f"index must be an int, slice, string like '2:5' or None, not {type(index).__name__}"
    )


def _select(
    path: str | os.PathLike, format: str | None, index: Index, options: dict[str, Any]
) -> list[Structure | StructureError]:
    """The frames of ``path`` chosen by ``index`` (errors for bad frames included, in order)."""
    idx = _normalise_index(index)
    source = str(path)
    if isinstance(idx, int) and idx >= 0:
        n = 0
        for i, entry in _iter_file(path, format, options, start=idx, stop=idx + 1):
            if i == idx:
                return [entry]
            n = i + 1
        held = f"only {n}" if n else f"fewer than {idx + 1}"
        raise FrameIndexError(f"frame {idx} requested but the file holds {held} frame(s)", source)
    if isinstance(idx, int):  # negative: only the last -idx frames are kept (bounded memory)
        from collections import deque

        last: deque = deque(maxlen=-idx)
        n = 0
        for _, entry in _iter_file(path, format, options):
            last.append(entry)
            n += 1
        if n < -idx:
            raise FrameIndexError(f"frame {idx} requested but the file holds {n} frame(s)", source)
        return [last[0]]
    first, stop, step = idx.start, idx.stop, idx.step
    if (
        (first is None or first >= 0)
        and stop is not None
        and stop >= 0
        and (step is None or step > 0)
    ):
        # a forward slice: stop reading at `stop` instead of reading the whole trajectory
        first, step = first or 0, step or 1
        out: list[Structure | StructureError] = []
        if stop <= first:
            return out
        for i, entry in _iter_file(path, format, options, start=first, stop=stop):
            if i >= stop:
                break
            if i >= first and (i - first) % step == 0:
                out.append(entry)
            if i >= stop - 1:
                break  # before the reader parses the next frame
        return out
    entries = [entry for _, entry in _iter_file(path, format, options)]
    return entries[idx]


def read(
    path: str | os.PathLike,
    index: Index = None,
    format: str | None = None,
    validate: bool = True,
    *,
    species: Mapping[Any, Any] | Sequence[Any] | str | None = None,
    atom_style: str | None = None,
    units: str | None = None,
    disorder: str = "refuse",
    merge_tolerance: float = 0.01,
    formula: str = "refuse",
    cif_reader: str = "auto",
    allow_masked: bool = False,
) -> list[Structure]:
    """Read the structures in ``path``: all frames (``index=None``), one (``int``) or a slice.

    ``format`` overrides detection from the name: ``cif``, ``vasp`` (POSCAR/CONTCAR), ``extxyz``
    (also plain xyz), ``db`` (ASE database, also an atomssl :class:`StructureStore`), ``traj``,
    ``json`` (pymatgen), ``lammps-data`` (``atom_style=``, ``species={1: "Si"}``; without
    ``species`` elements come from Atom Type Labels or the Masses section, each mass within
    :data:`LAMMPS_MASS_TOLERANCE` amu of one element, and a file without either is refused),
    ``lammps-dump-text`` (``species=`` maps types when the dump has no element column; without
    it types are taken as atomic numbers, noted in ``warnings``), ``gsd`` (HOOMD-blue; type
    names that are element symbols, else ``species={1: "Ar"}`` or ``{"A": "Ar"}``; see
    :mod:`atomssl.data._gsd`), or any ASE format name. ``species="types"`` takes LAMMPS/GSD
    types as point particles (atomic number = type number), noted in each structure's ``warnings``.
    ``aselmdb``: an ASE-LMDB database (a shard of a :class:`ShardedCorpus`; a corpus folder reads whole).
    Each returned :class:`Structure` has ``source`` (the path) and ``index`` (frame number).

    CIFs are read by pymatgen and ASE and cross-checked (:mod:`atomssl.data._cif`): a result
    must have its space group applied and match the formula the file declares (``formula=
    "warn"`` accepts a mismatch with a warning); when both readers succeed but disagree, the file
    is refused unless ``cif_reader="pymatgen"`` or ``"ase"`` picks one. Same-species sites closer
    than ``merge_tolerance`` Angstrom (symmetry images of one site) are merged. Partially
    occupied sites: ``disorder="refuse"`` (default), ``"majority"`` (most occupied species per
    site, vacancy-dominated sites dropped) or ``"order"`` (lowest-Ewald ordering on a bounded
    supercell). What a reader changed is listed in each structure's ``warnings``.
    Masked sites (``X``, Z = 0) are refused unless ``allow_masked`` (``atomssl reconstruct``).

    Raises a :class:`StructureError` subclass naming the file, frame and reason; with
    ``validate`` each structure is also checked (:meth:`Structure.validate`).
    """
    options = {
        "species": species,
        "atom_style": atom_style,
        "units": units,
        "disorder": disorder,
        "merge_tolerance": merge_tolerance,
        "formula": formula,
        "cif_reader": cif_reader,
    }
    out: list[Structure] = []
    for entry in _select(path, format, index, options):
        if isinstance(entry, StructureError):
            raise entry
        out.append(entry.validate(allow_masked=allow_masked) if validate else entry)
    return out
