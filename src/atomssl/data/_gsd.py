"""HOOMD-blue GSD trajectories -> :class:`Structure` records, frame by frame.

Read through the ``gsd`` package (``gsd.hoomd.open``), which fills the data a frame omits
from frame 0 (or the schema defaults) as the HOOMD schema prescribes. Frames are read one at
a time, so memory stays bounded whatever the trajectory's length.

Conventions (HOOMD box ``[Lx, Ly, Lz, xy, xz, yz]``):

* lattice vectors (rows) ``a1 = (Lx, 0, 0)``, ``a2 = (xy*Ly, Ly, 0)``, ``a3 = (xz*Lz, yz*Lz, Lz)``;
* HOOMD centres the box on the origin (positions in ``-(a1+a2+a3)/2 + [0, 1)^3`` in fractional
  terms); atomssl (like ASE) puts the cell's corner at the origin, so positions are shifted by
  ``+(a1+a2+a3)/2``; nothing else is changed (no wrapping);
* a 2D box (``Lz == 0`` or ``dimensions == 2``) has ``a3 = 0`` and pbc ``(True, True, False)``;
* lengths are taken as they are stored (HOOMD's units are the simulation's; atomssl calls
  them Angstrom).

Species: GSD type names are free strings. When every type a frame uses is named by an element
symbol ("Si", "O"), those elements are used. Otherwise ``species=`` must say what the types
are: a mapping from 1-based type ids (``{1: "Si"}``) or from type names (``{"A": "Ar"}``), a
list in type order, or ``"types"``: point particles with atomic numbers 1, 2, ... in type
order, recorded in each structure's ``warnings``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmptyStructureError, StructureError, UnknownElementError, UnreadableFileError
from ._structure import Structure

# Everything of _readers used here is imported inside functions: _readers imports this module.


def _gsd_message(exc: BaseException, path: str) -> str:
    """gsd's exception text without the path it appends (the error names the file already)."""
    msg = (str(exc).strip().splitlines() or [""])[0]
    for suffix in (f": {path}", f" {path}"):
        if msg.endswith(suffix):
            msg = msg[: -len(suffix)]
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _box_cell(box: np.ndarray, dimensions: int) -> tuple[np.ndarray, np.ndarray]:
    """Lattice vectors (rows) and pbc of a HOOMD box ``[Lx, Ly, Lz, xy, xz, yz]``."""
    lx, ly, lz, xy, xz, yz = (float(v) for v in box[:6])
    two_d = dimensions == 2 or lz == 0.0
    cell = np.array([[lx, 0.0, 0.0], [xy * ly, ly, 0.0], [xz * lz, yz * lz, lz]])
    if two_d:
        cell[2] = 0.0
    pbc = np.array([True, True, not two_d])
    return cell, pbc


class _Species:
    """Type names (+ ids used) of a frame -> atomic numbers, per the ``species=`` option."""

    def __init__(self, species: Any, source: str):
        from ._formats import POINT_PARTICLES, _is_point_particles, _species_lookup

        self.source = source
        self._cache: dict[tuple, tuple[np.ndarray, str | None]] = {}
        self.point = _is_point_particles(species)
        self.by_id: dict[int, int] | None = None  # 1-based type id -> Z
        self.by_name: dict[str, int] | None = None
        self.given = species
        if self.point or species is None:
            return
        if isinstance(species, Mapping) and any(
            isinstance(k, str) and not k.strip().isdigit() for k in species
        ):
            from ase.data import atomic_numbers

            self.by_name = {}
            for name, el in species.items():
                if not isinstance(name, str) or name.strip().isdigit():
                    raise UnknownElementError(
                        f"species mapping {dict(species)}: mixes type names and type ids; use one kind",
                        source,
                    )
                if isinstance(el, str):
                    if el not in atomic_numbers or el == "X":
                        raise UnknownElementError(
                            f"species mapping: {el!r} is not a chemical element symbol", source
                        )
                    self.by_name[name] = atomic_numbers[el]
                else:
                    self.by_name[name] = int(el)
        else:
            if isinstance(species, Mapping):
                species = {int(k) if isinstance(k, str) else k: v for k, v in species.items()}
            elif isinstance(species, str):
                raise UnknownElementError(
                    f"species={species!r}: give a mapping, a list of elements in type order, or {POINT_PARTICLES!r}",
                    source,
                )
            self.by_id = _species_lookup(species)

    def _ways_out(self) -> str:
        return (
            "pass species= mapping types to elements (Python {1: 'Ar'} or {'A': 'Ar'}; CLI --species 1=Ar, ids "
            "1-based in type order), "
            "or species='types' (CLI --species types) to take the types as point particles with atomic numbers "
            "1, 2, ... in type order"
        )

    def numbers(self, types: list[str], typeid: np.ndarray) -> tuple[np.ndarray, str | None]:
        """Atomic numbers of the particles and the warning to record (or None); raises
        :class:`UnknownElementError` (without location) when the types cannot be resolved."""
        used = np.unique(typeid)
        key = (tuple(types), tuple(used.tolist()))
        if key in self._cache:
            z_of_type, note = self._cache[key]
        else:
            z_of_type, note = self._resolve(types, [int(t) for t in used])
            self._cache[key] = (z_of_type, note)
        return z_of_type[typeid], note

    def _resolve(self, types: list[str], used: list[int]) -> tuple[np.ndarray, str | None]:
        from ase.data import atomic_numbers

        names = ", ".join(repr(t) for t in types)
        z = np.zeros(len(types), dtype=np.int64)
        if self.point:
            z[:] = np.arange(1, len(types) + 1)
            listing = ", ".join(f"{t}={k}" for k, t in enumerate(types, start=1))
            return (
                z,
                f"GSD types taken as point particles (species='types'): atomic number = type id ({listing}), not elements",
            )
        if self.by_name is not None:
            missing = [types[t] for t in used if types[t] not in self.by_name]
            if missing:
                raise UnknownElementError(
                    f"GSD type(s) {', '.join(map(repr, missing))} missing from the species mapping {self.given} "
                    f"(types in the file: {names})"
                )
            for t in used:
                z[t] = self.by_name[types[t]]
            return z, None
        if self.by_id is not None:
            missing = [f"{t + 1} ({types[t]!r})" for t in used if t + 1 not in self.by_id]
            if missing:
                raise UnknownElementError(
                    f"GSD type id(s) {', '.join(missing)} missing from the species mapping {self.given} "
                    f"(ids are 1-based in type order; types in the file: {names})"
                )
            for t in used:
                z[t] = self.by_id[t + 1]
            return z, None
        not_elements = [types[t] for t in used if types[t] not in atomic_numbers or types[t] == "X"]
        if not_elements:
            raise UnknownElementError(
                f"GSD type name(s) {', '.join(map(repr, not_elements))} are not chemical element symbols "
                f"(types in the file: {names}); {self._ways_out()}"
            )
        for t in used:
            z[t] = atomic_numbers[types[t]]
        return z, None


def _has_positions(f, i: int, n: int) -> bool:
    """Whether frame ``i`` of the GSD file ``f`` has particle positions: its own chunk, or frame
    0's for the same N (otherwise ``gsd`` silently fills in the schema default: every particle
    at the origin)."""
    if f.chunk_exists(frame=i, name="particles/position"):
        return True
    if i == 0 or not f.chunk_exists(frame=0, name="particles/position"):
        return False
    n0 = (
        int(f.read_chunk(frame=0, name="particles/N")[0])
        if f.chunk_exists(frame=0, name="particles/N")
        else 0
    )
    return n0 == n


def read_gsd(
    path: Path, source: str, options: dict[str, Any], start: int = 0
) -> Iterator[tuple[int, Structure | StructureError]]:
    """Frames ``start``, ``start + 1``, ... of a GSD file as (index, Structure | per-frame error).

    File-level problems (not a GSD file, truncated index, types that are not elements without
    ``species=``) raise; a frame that cannot be read raises an error naming the frame.
    """
    quiet = logging.getLogger("gsd")
    if (
        quiet.level == logging.NOTSET
    ):  # gsd logs every open/close at INFO level (the CLI shows INFO)
        quiet.setLevel(logging.WARNING)
    try:
        import gsd.hoomd
    except ImportError:  # pragma: no cover - gsd is a dependency
        raise UnreadableFileError(
            "reading GSD files needs the 'gsd' package (pip install gsd)", source
        ) from None
    species = _Species(options.get("species"), source)
    try:
        traj = gsd.hoomd.open(os.fspath(path), "r")
    except Exception as exc:
        raise UnreadableFileError(
            f"cannot open as a HOOMD GSD file ({_gsd_message(exc, os.fspath(path))}); truncated or corrupt file?",
            source,
        ) from None
    yielded = False
    with traj:
        n_frames = len(traj)
        if n_frames == 0:
            raise UnreadableFileError("the GSD file holds no frames", source)
        for i in range(max(start, 0), n_frames):
            try:
                frame = traj[i]
                n = int(frame.particles.N)
                has_positions = n == 0 or _has_positions(traj.file, i, n)
            except Exception as exc:
                raise UnreadableFileError(
                    f"cannot read frame {i} of {n_frames} ({_gsd_message(exc, os.fspath(path))}); truncated or corrupt file?",
                    source,
                    i,
                ) from None
            if n == 0:
                yield i, EmptyStructureError("the frame holds zero particles (N = 0)", source, i)
                continue
            if not has_positions:
                why = "" if i == 0 else " (and frame 0's do not apply: N differs)"
                yield (
                    i,
                    UnreadableFileError(f"frame {i} stores no particle positions{why}", source, i),
                )
                continue
            entry: Structure | StructureError
            try:
                entry = _frame_structure(frame, n, species, source, i)
            except UnknownElementError as err:
                if (
                    not yielded
                ):  # the types of the whole file (as far as anyone can tell): one error for it
                    raise err.located(source) from None
                entry = err.located(source, i)
            except StructureError as err:
                entry = err.located(source, i)
            except Exception as exc:  # inconsistent arrays in a damaged frame
                entry = UnreadableFileError(
                    f"inconsistent frame data ({type(exc).__name__}: {exc})", source, i
                )
            yielded = yielded or isinstance(entry, Structure)
            yield i, entry


def _frame_structure(frame, n: int, species: _Species, source: str, i: int) -> Structure:
    positions = np.asarray(frame.particles.position, dtype=np.float64)
    typeid = np.asarray(frame.particles.typeid, dtype=np.int64)
    types = [str(t) for t in frame.particles.types]
    if positions.shape != (n, 3):
        raise UnreadableFileError(
            f"{n} particles but positions of shape {positions.shape}", source, i
        )
    if typeid.shape != (n,):
        raise UnreadableFileError(f"{n} particles but {typeid.shape} type ids", source, i)
    if len(typeid) and (typeid.min() < 0 or typeid.max() >= len(types)):
        raise UnreadableFileError(
            f"particle type id {int(typeid.max())} but the frame names only {len(types)} type(s) {types}",
            source,
            i,
        )
    numbers, note = species.numbers(types, typeid)
    box = np.asarray(frame.configuration.box, dtype=np.float64)
    cell, pbc = _box_cell(box, int(frame.configuration.dimensions))
    positions = (
        positions + cell.sum(axis=0) / 2.0
    )  # HOOMD's box is centred on the origin; ours starts there
    structure = Structure(
        numbers=numbers,
        positions=positions,
        cell=cell,
        pbc=pbc,
        labels={"timestep": int(frame.configuration.step)},
        source=source,
        index=i,
    )
    if note:
        structure.warnings.append(note)
    return structure
