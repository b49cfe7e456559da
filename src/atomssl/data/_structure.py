"""The one internal record every reader produces: :class:`Structure`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import (
    DisorderError,
    EmptyStructureError,
    MaskedSiteError,
    NonFiniteError,
    OverlapError,
    SingularCellError,
    StructureError,
    UnknownElementError,
)

MAX_Z = 118
MIN_DISTANCE = 0.1  # Angstrom; closer pairs are refused as overlapping atoms
MAX_COORDINATE = 1e8  # Angstrom; larger positions/cell entries are refused (float64 resolution)
# A cell whose volume is below this fraction of the product of its edge lengths is
# considered singular (nearly coplanar lattice vectors).
_SINGULAR_RTOL = 1e-8


@dataclass(eq=False)
class Structure:
    """Species, positions, cell and periodicity of one atomic structure.

    ``numbers``: atomic numbers (n,); ``positions``: Cartesian Angstrom (n, 3);
    ``cell``: lattice vectors as rows (3, 3) (zeros along non-periodic axes are allowed);
    ``pbc``: periodicity per axis (3,); ``labels``: per-structure properties
    (e.g. ``{"n": 2.1}``); ``id``: a name; ``source``/``index``: where it was read from;
    ``warnings``: what the reader changed or doubted while reading (e.g. merged symmetry
    duplicates, a disorder policy applied), kept with the structure into stores and reports.
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))
    labels: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    source: str | None = None
    index: int | None = None
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.cell = np.asarray(self.cell, dtype=np.float64).reshape(3, 3)
        pbc = np.asarray(self.pbc, dtype=bool)
        self.pbc = np.broadcast_to(pbc, (3,)).copy()
        if len(self.numbers) != len(self.positions):
            raise StructureError(
                f"{len(self.numbers)} species but {len(self.positions)} positions",
                self.source,
                self.index,
            )

    # ------------------------------------------------------------------ properties
    @property
    def n_atoms(self) -> int:
        return int(len(self.numbers))

    def __len__(self) -> int:
        return self.n_atoms

    @property
    def volume(self) -> float:
        return float(abs(np.linalg.det(self.cell)))

    @property
    def formula(self) -> str:
        from ase.data import chemical_symbols
        from ase.formula import Formula

        if self.n_atoms == 0:
            return ""
        symbols = [chemical_symbols[z] if 0 < z <= MAX_Z else "X" for z in self.numbers]
        return Formula("".join(symbols)).format("hill")

    @property
    def scaled_positions(self) -> np.ndarray:
        return np.linalg.solve(self.cell.T, self.positions.T).T

    def where(self) -> str:
        s = self.source or self.id or "<structure>"
        return f"{s} [index {self.index}]" if self.index is not None else s

    def copy(self, **changes: Any) -> Structure:
        base: dict[str, Any] = dict(
            numbers=self.numbers.copy(),
            positions=self.positions.copy(),
            cell=self.cell.copy(),
            pbc=self.pbc.copy(),
            labels=dict(self.labels),
            warnings=list(self.warnings),
        )
        base.update(changes)
        return replace(self, **base)

    def wrapped(self) -> Structure:
        """Atoms wrapped into the cell along periodic axes."""
        if not self.pbc.any():
            return self.copy()
        frac = self.scaled_positions
        frac[:, self.pbc] %= 1.0
        return self.copy(positions=frac @ self.cell)

    # ------------------------------------------------------------------ validation
    def validate(
        self, min_distance: float = MIN_DISTANCE, *, allow_masked: bool = False
    ) -> Structure:
        """Raise a typed :class:`StructureError` naming this structure when it is unusable.

        Masked sites (``X``, Z = 0) are refused (:class:`MaskedSiteError`) unless ``allow_masked``
        (only ``atomssl reconstruct``, which predicts their species, reads them).
        """
        src, idx = self.source or self.id or None, self.index
        if self.n_atoms == 0:
            raise EmptyStructureError("the structure contains zero atoms", src, idx)
        masked = self.numbers == 0
        if masked.any() and not allow_masked:
            sites = np.flatnonzero(masked)
            shown = sites[:10].tolist() + (["..."] if len(sites) > 10 else [])
            raise MaskedSiteError(
                f"site(s) [{', '.join(map(str, shown))}] are masked (X); only `atomssl reconstruct` accepts them",
                src,
                idx,
            )
        bad = ((self.numbers < 1) & ~masked) | (self.numbers > MAX_Z)
        if bad.any():
            raise UnknownElementError(
                f"atomic number(s) {sorted(set(self.numbers[bad].tolist()))} are not elements (1..{MAX_Z})",
                src,
                idx,
            )
        if not np.isfinite(self.positions).all():
            rows = np.where(~np.isfinite(self.positions).all(axis=1))[0]
            raise NonFiniteError(f"NaN/inf in positions of atom(s) {rows[:10].tolist()}", src, idx)
        if not np.isfinite(self.cell).all():
            raise NonFiniteError("NaN/inf in the cell", src, idx)
        big = max(float(np.abs(self.positions).max()), float(np.abs(self.cell).max()))
        if big > MAX_COORDINATE:
            # float64 resolves such a number to worse than ~1e-8 A: distances become noise
            raise StructureError(
                f"coordinates up to {big:.3g} A (more than {MAX_COORDINATE:g} A): too large to resolve atomic distances",
                src,
                idx,
            )
        if self.pbc.any():
            vecs = self.cell[self.pbc]
            lengths = np.linalg.norm(vecs, axis=1)
            if (lengths <= 1e-8).any():
                raise SingularCellError(
                    f"periodic axis {np.where(self.pbc)[0][lengths <= 1e-8].tolist()} has a zero-length lattice vector",
                    src,
                    idx,
                )
            # Volume (3D), area (2D) or length (1D) spanned by the periodic vectors.
            gram = vecs @ vecs.T
            measure = np.sqrt(max(np.linalg.det(gram), 0.0))
            if measure <= _SINGULAR_RTOL * np.prod(lengths):
                raise SingularCellError(
                    f"the periodic lattice vectors are (nearly) linearly dependent (volume {measure:.3g})",
                    src,
                    idx,
                )
            if min_distance > 0 and lengths.min() < min_distance:
                # checked before the neighbour search below, which a cell this small would flood
                raise OverlapError(
                    f"every atom is {lengths.min():.4g} A from its own periodic image (lattice vector "
                    f"{int(np.where(self.pbc)[0][np.argmin(lengths)])} shorter than {min_distance} A)",
                    src,
                    idx,
                )
        if min_distance > 0 and (self.n_atoms > 1 or self.pbc.any()):
            from ._neighbors import radius_graph

            # Search a wider sphere and filter: vesin's cell list at a 0.1 A cutoff has ~1e5
            # bins per cell and costs ~30 ms per small crystal, vs ~0.1 ms at 1.5 A.
            g = radius_graph(self, max(min_distance, 1.5), validate=False)
            d = np.linalg.norm(g.vec, axis=1)
            if len(d) and d.min() < min_distance:
                k = int(np.argmin(d))
                raise OverlapError(
                    f"atoms {int(g.src[k])} and {int(g.dst[k])} are {d[k]:.4f} A apart (< {min_distance} A)",
                    src,
                    idx,
                )
        return self

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_ase(
        cls, atoms, source: str | None = None, index: int | None = None, id: str = ""
    ) -> Structure:
        labels: dict[str, Any] = {}
        for key, value in getattr(atoms, "info", {}).items():
            if isinstance(value, (int, float, str, bool, np.integer, np.floating)):
                labels[key] = value.item() if isinstance(value, np.generic) else value
        calc = getattr(atoms, "calc", None)
        if calc is not None and getattr(calc, "results", None):
            for key in ("energy", "free_energy"):
                if key in calc.results:
                    labels[key] = float(calc.results[key])
        return cls(
            numbers=atoms.get_atomic_numbers(),
            positions=atoms.get_positions(),
            cell=np.asarray(atoms.get_cell()),
            pbc=atoms.get_pbc(),
            labels=labels,
            id=id or str(labels.get("id", "")),
            source=source,
            index=index,
        )

    def to_ase(self):
        from ase import Atoms

        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        atoms.info.update(self.labels)
        if self.id:
            atoms.info.setdefault("id", self.id)
        return atoms

    @classmethod
    def from_pymatgen(
        cls, struct, source: str | None = None, index: int | None = None, id: str = ""
    ) -> Structure:
        from pymatgen.core import Structure as PmgStructure

        if not struct.is_ordered:
            bad = [i for i, site in enumerate(struct) if not site.is_ordered]
            raise DisorderError(
                f"site(s) {bad[:10]} have partial occupancy or mixed species ({struct[bad[0]].species})",
                source,
                index,
            )
        numbers = np.array([site.specie.Z for site in struct], dtype=np.int64)
        if isinstance(struct, PmgStructure):
            cell, pbc = struct.lattice.matrix, np.asarray(struct.lattice.pbc, dtype=bool)
        else:  # Molecule
            cell, pbc = np.zeros((3, 3)), np.zeros(3, dtype=bool)
        labels = {
            k: v
            for k, v in (struct.properties or {}).items()
            if isinstance(v, (int, float, str, bool))
        }
        return cls(
            numbers, struct.cart_coords, cell, pbc, labels, id=id, source=source, index=index
        )

    def to_pymatgen(self):
        from pymatgen.core import Lattice, Molecule
        from pymatgen.core import Structure as PmgStructure

        if self.pbc.all():
            return PmgStructure(
                Lattice(self.cell), self.numbers, self.positions, coords_are_cartesian=True
            )
        if not self.pbc.any():
            return Molecule(self.numbers, self.positions)
        return PmgStructure(
            Lattice(self.cell, pbc=tuple(bool(p) for p in self.pbc)),
            self.numbers,
            self.positions,
            coords_are_cartesian=True,
        )

    @classmethod
    def coerce(cls, obj: Any, source: str | None = None, index: int | None = None) -> Structure:
        """Accept a :class:`Structure`, ``ase.Atoms`` or pymatgen ``Structure``/``Molecule``."""
        if isinstance(obj, Structure):
            return obj
        mod = type(obj).__module__
        if mod.startswith("ase"):
            return cls.from_ase(obj, source, index)
        if mod.startswith("pymatgen"):
            return cls.from_pymatgen(obj, source, index)
        raise TypeError(f"cannot make a Structure from {type(obj).__name__}")
