"""Formats parsed by ASE (POSCAR, extxyz, traj, LAMMPS data and dumps, ...), with the checks
ASE does not make: LAMMPS species never guessed silently, truncated dump frames refused."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StructureError, UnknownElementError, UnreadableFileError
from ._formats import Entry, _is_point_particles, _species_lookup, _wrap
from ._structure import Structure

log = logging.getLogger(__name__)


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
    notes = (
        [f"LAMMPS masses matched to elements only approximately: {', '.join(inexact)}"]
        if inexact
        else []
    )
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
                log.warning(
                    "%s: species='types' ignored: the dump names elements (element or mass column)",
                    source,
                )
            else:
                notes.append(_LAMMPS_POINT_NOTE)
        elif z_of_type:
            from ase.data import chemical_symbols

            n_types = max(z_of_type)
            kwargs["specorder"] = [
                chemical_symbols[z_of_type.get(t, 0)] for t in range(1, n_types + 1)
            ]
        elif not _lammps_dump_has_species(path):
            log.warning(
                "%s: no element/mass column and no species= mapping: LAMMPS types taken as atomic numbers",
                source,
            )
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
            z_map = (
                kwargs.get("Z_of_type")
                if fmt == "lammps-data" and not point and not z_of_type
                else None
            )
            if (
                z_map is not None
                and isinstance(missing, (int, np.integer))
                and missing not in z_map
            ):
                raise UnknownElementError(
                    f"atom type {missing} has no entry in the Masses section (or Atom Type Labels); {_LAMMPS_WAYS_OUT}",
                    source,
                ) from None
            raise _wrap(exc, source, i if i else None, f"could not parse as {fmt}") from None
        except Exception as exc:
            # A garbled file: name the frame when earlier frames were fine.
            raise _wrap(
                exc,
                source,
                i if i else None,
                f"could not parse as {fmt}" + (f" at frame {i}" if i else ""),
            ) from None
        if refusal is not None:
            raise refusal
        if fmt == "lammps-dump-text":
            if declared is None:
                declared = _lammps_dump_counts(path)
            if i < len(declared) and declared[i] != len(atoms):
                yield (
                    i,
                    UnreadableFileError(
                        f"frame {i} declares {declared[i]} atoms but holds {len(atoms)} (truncated file?)",
                        source,
                        i,
                    ),
                )
                i += 1
                continue
        try:
            yield i, _noted(Structure.from_ase(atoms, source=source, index=i), notes)
        except Exception as exc:
            yield i, _wrap(exc, source, i, "could not convert")
        i += 1
    if i == 0:
        raise UnreadableFileError(
            "no structure found in the file" + (" (empty file)" if _is_empty(path) else ""), source
        )


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False
