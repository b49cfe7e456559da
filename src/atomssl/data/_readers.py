"""Structure files -> :class:`Structure` records, with typed errors for bad input.

:func:`read` reads one file (all frames, or the ``index`` chosen); :func:`iter_structures`
streams structures from files, folders (recursively) and in-memory objects (``ase.Atoms``,
pymatgen ``Structure``/``Molecule``, :class:`Structure`), optionally skipping bad entries.

Parsing is done by ASE, except CIF (pymatgen: unlike ASE it keeps partial occupancies, so a
disordered CIF is refused with :class:`DisorderError` instead of being silently "ordered")
and pymatgen JSON. Every library exception is wrapped into a :class:`StructureError`
subclass naming the file, the frame and the reason.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..errors import (
    MissingFileError,
    StructureError,
    UnknownElementError,
    UnknownFormatError,
    UnreadableFileError,
)
from ._structure import Structure

log = logging.getLogger(__name__)

Index = Union[int, slice, str, None]

# File-name suffix -> format. Names are ASE's format names, except "cif" (read by pymatgen)
# and "json" (pymatgen JSON, or ASE's JSON database).
EXTENSIONS: dict[str, str] = {
    ".cif": "cif",
    ".mcif": "cif",
    ".vasp": "vasp",
    ".poscar": "vasp",
    ".xyz": "extxyz",
    ".extxyz": "extxyz",
    ".db": "db",
    ".traj": "traj",
    ".json": "json",
    ".lmp": "lammps-data",
    ".lammps": "lammps-data",
    ".lammps-data": "lammps-data",
    ".lammpsdata": "lammps-data",
    ".lammpstrj": "lammps-dump-text",
    ".dump": "lammps-dump-text",
    ".gsd": "gsd",  # HOOMD-blue, read by the gsd package (_gsd.py)
    ".aselmdb": "aselmdb",  # ASE-LMDB database (ase-db-backends), e.g. a shard of a corpus (_shards.py)
}
# File-name prefix -> format, for names without a known suffix (VASP and LAMMPS conventions).
PREFIXES: dict[str, str] = {
    "poscar": "vasp",
    "contcar": "vasp",
    "data.": "lammps-data",
    "dump.": "lammps-dump-text",
}
_COMPRESSION = (".gz", ".bz2", ".xz")
FORMATS = sorted(set(EXTENSIONS.values()))
# Other spellings accepted for ``format=``.
ALIASES: dict[str, str] = {
    "poscar": "vasp",
    "contcar": "vasp",
    "xyz": "extxyz",
    "ase-db": "db",
    "sqlite": "db",
    "lammps": "lammps-data",
    "lammps-dump": "lammps-dump-text",
    "lammpstrj": "lammps-dump-text",
    "dump": "lammps-dump-text",
    "pymatgen": "json",
    "lmdb": "aselmdb",
    "ase-lmdb": "aselmdb",
}


class FrameIndexError(StructureError, IndexError):
    """The requested frame does not exist in the file."""

    kind = "no such frame"


# --------------------------------------------------------------------------- format detection
def _strip_compression(name: str) -> str:
    for ext in _COMPRESSION:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def format_from_name(path: str | os.PathLike) -> str | None:
    """The format implied by a file's name (suffix, then VASP/LAMMPS naming), or ``None``."""
    name = _strip_compression(Path(path).name)
    lower = name.lower()
    suffix = Path(lower).suffix
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    for prefix, fmt in PREFIXES.items():
        if lower.startswith(prefix):
            return fmt
    return None


def detect_format(path: str | os.PathLike) -> str:
    """Format of ``path``: from its name, else sniffed from its content by ASE."""
    fmt = format_from_name(path)
    if fmt is not None:
        return fmt
    from ase.io.formats import UnknownFileTypeError, filetype

    try:
        fmt = filetype(str(path), read=True, guess=False)
    except (UnknownFileTypeError, OSError, ValueError, StopIteration, IndexError):
        fmt = None
    if fmt == "json":
        return "json"
    if fmt in (None, "xyz"):  # "xyz" is ASE's weakest guess (any text); do not trust it
        raise UnknownFormatError(
            f"cannot tell the format from the name {Path(path).name!r} or its content; "
            f"pass format= (one of {', '.join(FORMATS)}, or any ASE format name)",
            str(path),
        )
    return fmt


# --------------------------------------------------------------------------- error wrapping
def _wrap(exc: BaseException, source: str, index: int | None = None, what: str = "could not parse") -> StructureError:
    """Turn a library exception into a typed, located error (never leak a raw traceback)."""
    if isinstance(exc, StructureError):
        return exc.located(source, index)
    from ase.data import chemical_symbols

    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str):
        key = exc.args[0]
        if key not in chemical_symbols and key.strip().isalpha() and len(key.strip()) <= 3:
            return UnknownElementError(f"{key!r} is not a chemical element symbol", source, index)
    if isinstance(exc, UnicodeDecodeError):
        return UnreadableFileError("not a text file (undecodable bytes)", source, index)
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    detail = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return UnreadableFileError(f"{what} ({detail})", source, index)


# --------------------------------------------------------------------------- per-format readers
# Each yields (frame index, Structure | StructureError). A StructureError with index None (or
# raised) means the file itself is unusable; per-frame errors are yielded so that a caller can
# skip just that frame.
Entry = tuple[int, Union[Structure, StructureError]]


#: ``species=`` value (CLI ``--species types``) taking LAMMPS/GSD particle types as point
#: particles: atomic number = type number (1, 2, ...), recorded in each structure's ``warnings``.
POINT_PARTICLES = "types"


def _is_point_particles(species: Any) -> bool:
    return isinstance(species, str) and species.strip().lower() == POINT_PARTICLES


def _species_lookup(species: Mapping[int, Any] | Sequence[Any] | None) -> dict[int, int] | None:
    """Normalise a LAMMPS type -> element mapping ({1: "Si"}, {1: 14} or ["Si", "O"])."""
    if species is None:
        return None
    from ase.data import atomic_numbers

    if isinstance(species, str):
        raise UnknownElementError(
            f"species={species!r}: give a type -> element mapping ({{1: 'Si'}}), a list of elements in type order, "
            f"or {POINT_PARTICLES!r} (types as point particles)"
        )
    items = species.items() if isinstance(species, Mapping) else enumerate(species, start=1)
    out: dict[int, int] = {}
    for t, el in items:
        try:
            t = int(t)
        except (TypeError, ValueError):
            raise UnknownElementError(
                f"species mapping: {t!r} is not a type number (LAMMPS types are numbered 1, 2, ...)"
            ) from None
        if isinstance(el, str):
            if el not in atomic_numbers or el == "X":
                raise UnknownElementError(f"species mapping: {el!r} is not a chemical element symbol")
            out[int(t)] = atomic_numbers[el]
        else:
            out[int(t)] = int(el)
    return out


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
            yield i, UnreadableFileError(f"entry is a {type(item).__name__}, not a pymatgen structure", source, i)
        except Exception as exc:
            yield i, _wrap(exc, source, i, "could not convert")


def _ase_db_labels(row) -> tuple[dict[str, Any], str]:
    """Labels and id of an ASE database row; rows written by :class:`StructureStore` keep theirs."""
    meta = row.data.get("atomssl") if row.get("data") else None
    if isinstance(meta, dict):
        return dict(meta.get("labels", {})), str(meta.get("id") or "")
    labels = dict(row.key_value_pairs)
    for key in ("energy", "free_energy"):
        if row.get(key) is not None:
            labels.setdefault(key, float(row[key]))
    return labels, str(row.get("unique_id", "") or row.id)


def _ase_db_warnings(row) -> list[str]:
    """The reader warnings a :class:`StructureStore` row keeps (``data["atomssl"]["warnings"]``)."""
    meta = row.data.get("atomssl") if row.get("data") else None
    return [str(w) for w in meta.get("warnings") or []] if isinstance(meta, dict) else []


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


def _read_ase_db(path: Path, source: str, kind: str = "db", start: int = 0, stop: int | None = None) -> Iterator[Entry]:
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
                labels, ident = _ase_db_labels(row)
                structure = Structure.from_ase(row.toatoms(), source=source, index=i, id=ident)
                structure.labels = labels
                structure.warnings = _ase_db_warnings(row)
                yield i, structure
            except Exception as exc:
                yield i, _wrap(exc, source, i, "could not convert row")
    except StructureError:
        raise
    except Exception as exc:
        raise _wrap(exc, source, what="could not read database") from None
    finally:
        if db is not None and getattr(db, "connection", None) is not None:
            db.connection.close()


def _lammps_dump_has_species(path: Path) -> bool:
    from ase.io.formats import open_with_compression

    with open_with_compression(str(path), "r") as fh:
        for n, line in enumerate(fh):
            if line.startswith("ITEM: ATOMS"):
                cols = line.split()[2:]
                return "element" in cols or "mass" in cols
            if n > 1000:
                break
    return False


def _lammps_dump_counts(path: Path) -> list[int]:
    """The atom count each frame of a LAMMPS text dump declares ("ITEM: NUMBER OF ATOMS").

    ASE's dump reader takes whatever atom rows a truncated last frame still has (8 declared,
    2 read): comparing with the declared counts turns that into an error instead of a
    silently wrong structure.
    """
    from ase.io.formats import open_with_compression

    counts: list[int] = []
    with open_with_compression(str(path), "r") as fh:
        want = False
        for line in fh:
            if want:
                try:
                    counts.append(int(line.split()[0]))
                except (ValueError, IndexError):
                    counts.append(-1)
                want = False
            elif line.startswith("ITEM: NUMBER OF ATOMS"):
                want = True
    return counts


# ---- LAMMPS species: elements from species=, type labels or masses; else refused or recorded
#: A LAMMPS mass names an element when within this many amu of its standard atomic weight
#: (so masses rounded to integers, 28 for Si or 64 for Cu, still name their element).
LAMMPS_MASS_TOLERANCE = 0.5
_LAMMPS_WAYS_OUT = (
    "pass species= mapping types to elements (CLI --species 1=Si,2=O) or species='types' (CLI --species types) "
    "to take the types as point particles (atomic number = type number, recorded in each structure's warnings)"
)
_LAMMPS_POINT_NOTE = (
    "LAMMPS atom types taken as point particles (species='types'): atomic number = type number "
    "(type 1 -> H, 2 -> He, ...), not elements"
)
_LAMMPS_DUMP_TYPES_NOTE = (
    "the dump has no element or mass column and no species= mapping was given: LAMMPS atom types taken as "
    "atomic numbers (type 1 -> H, 2 -> He, ...), not elements"
)


class _TypeAsZ(dict):
    """``Z_of_type`` for ASE's LAMMPS data reader: every type number is its own atomic number."""

    def __missing__(self, key: Any) -> int:
        return int(key)


def _lammps_data_type_info(path: Path) -> tuple[dict[int, float], dict[int, str]]:
    """The ``Masses`` and ``Atom Type Labels`` sections of a LAMMPS data file (type -> mass, label)."""
    from ase.io.formats import open_with_compression

    masses: dict[int, float] = {}
    labels: dict[int, str] = {}
    section = None
    with open_with_compression(str(path), "r") as fh:
        next(fh, None)  # the title line
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if line[0].isalpha():  # section headers are the only lines starting with a letter
                section = " ".join(line.split())
                continue
            fields = line.split()
            if len(fields) < 2 or section not in ("Masses", "Atom Type Labels"):
                continue
            try:
                if section == "Masses":
                    masses[int(fields[0])] = float(fields[1])
                else:
                    labels[int(fields[0])] = fields[1]
            except ValueError:
                continue  # ASE's parser reports it
    return masses, labels


def _lammps_data_elements(path: Path, source: str, units: str) -> tuple[dict[int, int], list[str]]:
    """Type -> atomic number of a LAMMPS data file without ``species=``, and the notes to record.

    From ``Atom Type Labels`` when they all name elements, else from ``Masses``: a mass names
    the element whose standard atomic weight is within :data:`LAMMPS_MASS_TOLERANCE` amu,
    unless another element is about as close. Anything else is refused: ASE would silently
    read a file without masses as H, He, ... and take any mass for the nearest element.
    """
    from ase.calculators.lammps import convert
    from ase.data import atomic_masses, atomic_numbers, chemical_symbols

    masses, labels = _lammps_data_type_info(path)
    if labels and all(v in atomic_numbers and v != "X" for v in labels.values()):
        return {t: atomic_numbers[v] for t, v in labels.items()}, []
    if not masses:
        raise UnknownElementError(
            "the file has no Masses section (nor Atom Type Labels naming elements), so the elements of its atom "
            f"types are unknown; {_LAMMPS_WAYS_OUT}",
            source,
        )
    ref = np.asarray(atomic_masses[1:], dtype=float)  # index k: atomic number k + 1
    z_of_type: dict[int, int] = {}
    inexact: list[str] = []
    for t, mass in sorted(masses.items()):
        m = float(convert(mass, "mass", units, "ASE"))
        d = np.abs(ref - m)
        first, second = (int(k) for k in np.argsort(d)[:2])
        near = f"{chemical_symbols[first + 1]} {ref[first]:.4g}"
        if not d[first] <= LAMMPS_MASS_TOLERANCE:
            raise UnknownElementError(
                f"atom type {t} has mass {mass:g} ({units} units), which is no element's within "
                f"{LAMMPS_MASS_TOLERANCE} amu (nearest: {near}); {_LAMMPS_WAYS_OUT}",
                source,
            )
        if d[second] <= LAMMPS_MASS_TOLERANCE and d[second] < 2 * d[first]:
            raise UnknownElementError(
                f"atom type {t} has mass {mass:g} ({units} units), which could be {near} or "
                f"{chemical_symbols[second + 1]} {ref[second]:.4g}; {_LAMMPS_WAYS_OUT}",
                source,
            )
        z_of_type[t] = first + 1
        if d[first] > 0.01:
            inexact.append(f"type {t} (mass {mass:g}) as {near}")
    notes = [f"LAMMPS masses matched to elements only approximately: {', '.join(inexact)}"] if inexact else []
    return z_of_type, notes


def _noted(structure: Structure, notes: list[str]) -> Structure:
    structure.warnings.extend(notes)
    return structure


def _read_ase(path: Path, source: str, fmt: str, options: dict[str, Any]) -> Iterator[Entry]:
    import ase.io

    kwargs: dict[str, Any] = {}
    notes: list[str] = []  # recorded in every structure's warnings
    refusal: StructureError | None = None  # LAMMPS data: elements unknown
    point = _is_point_particles(options.get("species"))
    z_of_type = None if point else _species_lookup(options.get("species"))
    if fmt == "lammps-data":
        if options.get("atom_style"):
            kwargs["atom_style"] = options["atom_style"]
        kwargs["units"] = options.get("units") or "metal"
        if point:
            kwargs["Z_of_type"] = _TypeAsZ({1: 1})
            notes.append(_LAMMPS_POINT_NOTE)
        elif z_of_type:
            kwargs["Z_of_type"] = z_of_type
        else:
            # raised once ASE has parsed the first frame: a garbled file gets ASE's own reason
            try:
                kwargs["Z_of_type"], notes = _lammps_data_elements(path, source, kwargs["units"])
            except Exception as exc:
                refusal = _wrap(exc, source, what="could not parse as lammps-data")
    elif fmt == "lammps-dump-text":
        if point:
            if _lammps_dump_has_species(path):
                log.warning("%s: species='types' ignored: the dump names elements (element or mass column)", source)
            else:
                notes.append(_LAMMPS_POINT_NOTE)
        elif z_of_type:
            from ase.data import chemical_symbols

            n_types = max(z_of_type)
            kwargs["specorder"] = [chemical_symbols[z_of_type.get(t, 0)] for t in range(1, n_types + 1)]
        elif not _lammps_dump_has_species(path):
            log.warning("%s: no element/mass column and no species= mapping: LAMMPS types taken as atomic numbers", source)
            notes.append(_LAMMPS_DUMP_TYPES_NOTE)
        kwargs["units"] = options.get("units") or "metal"
    frames = ase.io.iread(str(path), index=":", format=fmt, do_not_split_by_at_sign=True, **kwargs)
    declared: list[int] | None = None  # LAMMPS dump: atom count of each frame, read on first use
    i = 0
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            break
        except (KeyError, IndexError) as exc:
            if z_of_type and fmt.startswith("lammps"):
                raise UnknownElementError(
                    f"a LAMMPS atom type is missing from the species mapping {z_of_type} ({type(exc).__name__}: {exc})",
                    source,
                    i if i else None,
                ) from None
            missing = exc.args[0] if isinstance(exc, KeyError) and exc.args else None
            z_map = kwargs.get("Z_of_type") if fmt == "lammps-data" and not point and not z_of_type else None
            if z_map is not None and isinstance(missing, (int, np.integer)) and missing not in z_map:
                raise UnknownElementError(
                    f"atom type {missing} has no entry in the Masses section (or Atom Type Labels); {_LAMMPS_WAYS_OUT}", source
                ) from None
            raise _wrap(exc, source, i if i else None, f"could not parse as {fmt}") from None
        except Exception as exc:
            # A garbled file: name the frame when earlier frames were fine.
            raise _wrap(exc, source, i if i else None, f"could not parse as {fmt}" + (f" at frame {i}" if i else "")) from None
        if refusal is not None:
            raise refusal
        if fmt == "lammps-dump-text":
            if declared is None:
                declared = _lammps_dump_counts(path)
            if i < len(declared) and declared[i] != len(atoms):
                yield i, UnreadableFileError(
                    f"frame {i} declares {declared[i]} atoms but holds {len(atoms)} (truncated file?)", source, i
                )
                i += 1
                continue
        try:
            yield i, _noted(Structure.from_ase(atoms, source=source, index=i), notes)
        except Exception as exc:
            yield i, _wrap(exc, source, i, "could not convert")
        i += 1
    if i == 0:
        raise UnreadableFileError("no structure found in the file" + (" (empty file)" if _is_empty(path) else ""), source)


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _iter_file(path: str | os.PathLike, format: str | None, options: dict[str, Any], start: int = 0, stop: int | None = None) -> Iterator[Entry]:
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
                f"format {fmt!r} is not readable by atomssl or ASE (atomssl names: {', '.join(FORMATS)})", source
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

        return string2index(index)
    if isinstance(index, (int, np.integer)):
        return int(index)
    if isinstance(index, slice):
        return index
    raise TypeError(f"index must be an int, slice, string like '2:5' or None, not {type(index).__name__}")


def _select(path: str | os.PathLike, format: str | None, index: Index, options: dict[str, Any]) -> list[Structure | StructureError]:
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
    if (first is None or first >= 0) and stop is not None and stop >= 0 and (step is None or step > 0):
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


# --------------------------------------------------------------------------- many sources
Source = Union[str, os.PathLike, Structure, Any]


def _is_path(obj: Any) -> bool:
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
    out.extend(os.path.join(folder, e.name) for e in entries if e not in folders and format_from_name(e.name) is not None)
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
        try:
            structure = Structure.coerce(src, None, n_objects)
            if isinstance(src, Structure) and structure.index is None and structure.source is None:
                structure = structure.copy(index=n_objects)
            yield structure.validate() if validate else structure
        except StructureError as err:
            yield err.located(None, n_objects)
        except TypeError as exc:
            yield UnknownFormatError(str(exc), None, n_objects)
        n_objects += 1


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
