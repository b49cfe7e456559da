"""Molecular crystals from the Cambridge Structural Database, as shipped in the pyxtal wheel.

pyxtal 1.1.5 (MIT; Fredericks et al., Comput. Phys. Commun. 261, 107810 (2021)) ships two ASE
SQLite databases of experimental organic crystals, one row per CSD entry with its refcode and
molecule as key-value pairs:

* ``pyxtal/database/mech.db``: 50 crystals (pyxtal's mechanical-property examples);
* ``pyxtal/database/test.db``: 100 crystals (pyxtal's force-field benchmark set; its ``data``
  holds energies of structures *re-optimised* with CHARMM/GULP/ANI/DFTB, not of the stored
  experimental geometry, so they are not used as labels).

``COUMAR01`` (coumarin) is in both, as the same crystal (same cell and sites, other atom order);
it is kept once, from ``mech.db``. The databases are opened read-only; pyxtal is not imported.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..errors import UnreadableFileError
from ._matbench import DatasetError, _require
from ._skipped import record_skipped, split_valid
from ._structure import Structure

PYXTAL_PIN = "pyxtal==1.1.5"
_DATABASES = {
    "mech.db": 50,
    "test.db": 100,
}  # the wheel's ASE databases of molecular crystals, and their rows
CSD_MOLECULAR_CRYSTALS_COUNT = 149  # 150 rows, one refcode (COUMAR01) in both databases
_SOURCE = "csd_molecular_crystals"
_PACKAGE = ("pyxtal", "pyxtal")  # (distribution, top-level package) holding the databases
# key-value pair -> label name
_LABELS = {
    "csd_code": "csd_code",
    "space_group": "space_group",
    "spg_num": "spg_num",
    "Z": "Z",
    "Zprime": "Zprime",
    "mol_smi": "smiles",
    "mol_formula": "mol_formula",
    "mol_weight": "mol_weight",
    "l_type": "lattice_type",
    "url": "url",
}


def csd_database_paths() -> list[Path]:
    """The ASE databases of molecular crystals inside the installed pyxtal wheel."""
    return [_require((*_PACKAGE, f"database/{name}"), PYXTAL_PIN) for name in _DATABASES]


def _same_crystal(a: Structure, b: Structure) -> bool:
    """Same cell and the same multiset of species at the same wrapped fractional positions."""
    if a.n_atoms != b.n_atoms or not np.allclose(a.cell, b.cell, atol=1e-6):
        return False
    fa, fb = a.wrapped().scaled_positions % 1.0, b.wrapped().scaled_positions % 1.0
    ka = sorted(zip(a.numbers.tolist(), np.round(fa, 4).tolist()))
    kb = sorted(zip(b.numbers.tolist(), np.round(fb, 4).tolist()))
    return all(x[0] == y[0] and np.allclose(x[1], y[1], atol=2e-4) for x, y in zip(ka, kb))


def _read(path: Path, expected: int) -> list[Structure]:
    from ._asedb import _check_ase_sqlite, open_ase_db_readonly

    source = str(path)
    _check_ase_sqlite(path, source)
    db = open_ase_db_readonly(path)
    try:
        rows = list(db.select(sort="id"))
    except Exception as exc:  # noqa: BLE001 - any sqlite/ASE failure means an unreadable file
        raise UnreadableFileError(
            f"cannot read the ASE database ({type(exc).__name__}: {exc})", source
        ) from None
    finally:
        db.connection.close()
    if len(rows) != expected:
        raise DatasetError(
            f"{source}: expected {expected} crystals, found {len(rows)}; reinstall with `pip install --no-deps {PYXTAL_PIN}`"
        )
    out = []
    for i, row in enumerate(rows):
        kv = row.key_value_pairs
        if "csd_code" not in kv:
            raise DatasetError(
                f"{source}: row {row.id} has no CSD refcode (not pyxtal's molecular-crystal database)"
            )
        atoms = row.toatoms()
        labels = {name: kv[key] for key, name in _LABELS.items() if key in kv}
        labels["database"] = path.name
        out.append(
            Structure(
                atoms.numbers,
                atoms.positions,
                np.asarray(atoms.cell),
                atoms.pbc,
                labels,
                id=str(kv["csd_code"]),
                source=_SOURCE,
                index=i,
            )
        )
    return out


@functools.lru_cache(maxsize=4)
def _table(
    stamps: tuple[tuple[str, int, int], ...],
) -> tuple[tuple[Structure, ...], tuple[tuple[str, str], ...]]:
    found: dict[str, Structure] = {}
    skipped: list[tuple[str, str]] = []
    for (name, _, _), path in zip(stamps, csd_database_paths()):
        for s in _read(path, _DATABASES[name]):
            first = found.get(s.id)
            if first is None:
                found[s.id] = s
            elif _same_crystal(first, s):
                skipped.append(
                    (
                        f"{s.id} ({name})",
                        f"duplicate: the same crystal as {s.id} of {first.labels['database']}",
                    )
                )
            else:  # a refcode twice with different crystals: keep both, told apart by database
                s.id = f"{s.id}-{Path(name).stem}"
                found[s.id] = s
    good, invalid = split_valid(found.values())
    for k, s in enumerate(good):
        s.index = k
    return tuple(good), tuple(skipped + invalid)


def load_csd_molecular_crystals(limit: int | None = None) -> list[Structure]:
    """The 149 distinct CSD molecular crystals of pyxtal's databases (the first ``limit``), periodic.

    ``id``: the CSD refcode (e.g. ``BIYRIM01``). Labels: ``csd_code``, ``space_group``,
    ``spg_num``, ``Z``, ``Zprime``, ``smiles`` (of the molecule), ``mol_formula``, ``mol_weight``,
    ``lattice_type``, ``url`` (the CCDC entry) and ``database`` (the pyxtal file it came from).
    Duplicates and structures that fail validation are skipped and reported
    (see :func:`skipped_structures`).
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    paths = csd_database_paths()
    stamps = tuple(
        (name, p.stat().st_size, p.stat().st_mtime_ns) for name, p in zip(_DATABASES, paths)
    )
    good, skipped = _table(stamps)
    record_skipped(_SOURCE, skipped, sum(_DATABASES.values()))
    return [s.copy() for s in good[:limit]]
