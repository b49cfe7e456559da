"""File formats: names and suffixes, detection, and what every per-format reader shares
(the error wrapper, the entry type, the LAMMPS/GSD species option)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import StructureError, UnknownElementError, UnknownFormatError, UnreadableFileError
from ._structure import Structure

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
def _wrap(
    exc: BaseException, source: str, index: int | None = None, what: str = "could not parse"
) -> StructureError:
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
Entry = tuple[int, Structure | StructureError]


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
                raise UnknownElementError(
                    f"species mapping: {el!r} is not a chemical element symbol"
                )
            out[int(t)] = atomic_numbers[el]
        else:
            out[int(t)] = int(el)
    return out
