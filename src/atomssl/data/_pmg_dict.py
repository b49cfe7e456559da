"""Fast conversion of pymatgen ``Structure.as_dict()`` JSON into :class:`Structure`.

Hand-written because ``pymatgen.core.Structure.from_dict`` builds a Site/Species object per
atom (about 10x slower); the bundled datasets store thousands of such dicts. Results are
checked against pymatgen's own parser in the tests.
"""

from __future__ import annotations

import numpy as np
from ase.data import atomic_numbers

from ..errors import DisorderError, StructureError, UnknownElementError, UnreadableFileError
from ._structure import Structure


def structure_from_pmg_dict(
    d: dict, source: str | None = None, index: int | None = None, id: str = ""
) -> Structure:
    """Species, Cartesian positions, lattice and pbc of one serialised pymatgen structure."""
    try:
        return _convert(d, source, index, id)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, StructureError):
            raise
        raise UnreadableFileError(
            f"malformed pymatgen structure dict ({type(exc).__name__}: {exc})", source, index
        ) from None


def _convert(d: dict, source: str | None, index: int | None, id: str) -> Structure:
    lattice = d["lattice"]
    cell = np.asarray(lattice["matrix"], dtype=np.float64)
    pbc = lattice.get("pbc", (True, True, True))
    sites = d["sites"]
    numbers = np.empty(len(sites), dtype=np.int64)
    have_xyz = all("xyz" in site for site in sites)
    for i, site in enumerate(sites):
        species = site["species"]
        if len(species) != 1 or abs(float(species[0].get("occu", 1.0)) - 1.0) > 1e-8:
            raise DisorderError(
                f"site {i} has partial occupancy or mixed species ({species})", source, index
            )
        symbol = species[0]["element"]
        z = atomic_numbers.get(symbol)
        if z is None or z == 0:
            raise UnknownElementError(f"site {i} has unknown element {symbol!r}", source, index)
        numbers[i] = z
    if have_xyz:
        positions = np.array([site["xyz"] for site in sites], dtype=np.float64).reshape(-1, 3)
    else:
        positions = (
            np.array([site["abc"] for site in sites], dtype=np.float64).reshape(-1, 3) @ cell
        )
    return Structure(numbers, positions, cell, pbc, id=id, source=source, index=index)
