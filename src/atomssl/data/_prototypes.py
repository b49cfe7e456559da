"""AFLOW crystal prototypes (the 288 shipped with pymatgen) and idealized crystals built from them.

Prototype names follow the pretraining literature: Pearson symbol + reduced formula, e.g.
``cF4-Cu`` (fcc), ``cI2-W`` (bcc), ``cP1-Po`` (sc), ``hP2-Mg`` (hcp), ``cP46-Si`` (clathrate),
``tP30-U``, ``cF8-C`` (diamond). The few Pearson+formula pairs shared by several prototypes
(e.g. three ``hP4-C`` carbons) get the AFLOW label appended: ``hP4-C-A_hP4_194_bc``.
"""

from __future__ import annotations

import difflib
import functools
import gzip
import itertools
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import MissingFileError
from ._matbench import DatasetError, find_package_file
from ._pmg_dict import structure_from_pmg_dict
from ._structure import Structure

AFLOW_PROTOTYPE_COUNT = 288
# Training prototypes of the geometric-algebra-attention pretraining (fcc, bcc, sc, clathrate,
# hcp, beta-U); the other prototypes are held out.
PRETRAINING_PROTOTYPES = ("cF4-Cu", "cI2-W", "cP1-Po", "cP46-Si", "hP2-Mg", "tP30-U")
PRETRAINING_SIGMAS = (0.01, 0.03, 0.05)
_SOURCE = "aflow_prototypes"


def aflow_prototypes_path() -> Path:
    path = find_package_file("pymatgen", "pymatgen", "analysis/prototypes/aflow_prototypes.json.gz")
    if path is None:
        raise MissingFileError(
            "pymatgen's AFLOW prototype library is missing; reinstall pymatgen",
            "pymatgen/analysis/prototypes/aflow_prototypes.json.gz",
        )
    return path


def _reduced_formula(numbers: np.ndarray) -> str:
    from pymatgen.core import Composition

    counts = Counter(int(z) for z in numbers)
    return Composition({z: c for z, c in counts.items()}).reduced_formula


@functools.lru_cache(maxsize=1)
def _table() -> tuple[Structure, ...]:
    path = aflow_prototypes_path()
    with gzip.open(path, "rb") as fh:
        entries = json.loads(fh.read())
    if len(entries) != AFLOW_PROTOTYPE_COUNT:
        raise DatasetError(
            f"{path}: expected {AFLOW_PROTOTYPE_COUNT} prototypes, found {len(entries)}"
        )
    out = []
    for i, entry in enumerate(entries):
        tags = entry["tags"]
        s = structure_from_pmg_dict(entry["snl"], _SOURCE, i)
        s.labels = {
            "pearson": tags["pearson"],
            "aflow": tags["aflow"],
            "strukturbericht": ""
            if tags.get("strukturbericht") in (None, "None")
            else tags["strukturbericht"],
            "mineral": tags.get("mineral") or "",
            "short_name": f"{tags['pearson']}-{_reduced_formula(s.numbers)}",
        }
        out.append(s)
    shared = Counter(s.labels["short_name"] for s in out)
    for s in out:
        name = s.labels["short_name"]
        s.id = name if shared[name] == 1 else f"{name}-{s.labels['aflow']}"
    if len({s.id for s in out}) != len(out):
        raise DatasetError(f"{path}: prototype names are not unique")
    return tuple(out)


def aflow_prototypes() -> list[Structure]:
    """All 288 AFLOW prototypes (cells as stored by pymatgen, usually primitive).

    ``id`` is the unique name; ``labels`` hold ``pearson``, ``aflow`` (AFLOW label),
    ``strukturbericht``, ``mineral`` and ``short_name`` (Pearson-formula, possibly shared).
    """
    return [s.copy() for s in _table()]


def prototype_names() -> list[str]:
    """The unique names (``cF4-Cu``, ...) of the bundled AFLOW prototypes, in table order: the
    ``id`` of each :func:`aflow_prototypes` entry, as :func:`get_prototype` accepts them."""
    return [s.id for s in _table()]


def get_prototype(name: str) -> Structure:
    """A prototype by unique name (``cF4-Cu``), AFLOW label (``A_cF4_225_a``), Strukturbericht
    designation (``A1``) or mineral name (``Copper``, any case) when that designation is unique."""
    table = _table()
    for key in ("id", "aflow", "short_name", "strukturbericht", "mineral"):
        fold = key == "mineral"  # mineral names match in any case
        want = name.lower() if fold else name
        hits = []
        for s in table:
            value = s.id if key == "id" else s.labels[key]
            if value and (value.lower() if fold else value) == want:
                hits.append(s)
        if len(hits) == 1:
            return hits[0].copy()
        if len(hits) > 1:
            raise DatasetError(
                f"prototype {name!r} is ambiguous ({key}); use one of: {', '.join(s.id for s in hits)}"
            )
    close = difflib.get_close_matches(name, [s.id for s in table], n=5, cutoff=0.6)
    hint = f"; similar: {', '.join(close)}" if close else ""
    raise DatasetError(
        f"unknown AFLOW prototype {name!r} ({len(table)} known, see prototype_names()){hint}"
    )


# --------------------------------------------------------------------------- idealized crystals
def conventional_cell(structure: Structure, symprec: float = 1e-3) -> Structure:
    """The conventional standard cell (pymatgen/spglib), e.g. the 4-atom cube of fcc."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    conv = SpacegroupAnalyzer(
        structure.to_pymatgen(), symprec=symprec
    ).get_conventional_standard_structure()
    return structure.copy(
        numbers=np.array([site.specie.Z for site in conv]),
        positions=conv.cart_coords,
        cell=conv.lattice.matrix,
        pbc=np.ones(3, bool),
    )


def nearest_distance(structure: Structure) -> float:
    """The shortest interatomic distance, over periodic images."""
    from ._neighbors import knn_graph

    return float(knn_graph(structure, 1, validate=False).distance.min())


def replication_counts(cell: np.ndarray, n_cell: int, n_min: int) -> tuple[int, int, int]:
    """Repetitions ``(na, nb, nc)`` giving >= ``n_min`` atoms in the most nearly cubic supercell.

    Minimises the largest supercell height (the side of the smallest enclosing cube, so the
    least elongated shape), then the atom count.
    """
    cell = np.asarray(cell, dtype=np.float64)
    volume = abs(np.linalg.det(cell))
    # heights: distances between opposite faces of the cell
    heights = volume / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    cells_needed = max(1, math.ceil(n_min / n_cell))
    side = (cells_needed * volume) ** (1.0 / 3.0)
    ranges = [range(max(1, math.floor(side / h) - 1), math.ceil(side / h) + 3) for h in heights]
    best = None
    for reps in itertools.product(*ranges):
        if math.prod(reps) < cells_needed:
            continue
        score = (round(float(max(np.array(reps) * heights)), 9), math.prod(reps))
        if best is None or score < best[0]:
            best = (score, reps)
    assert best is not None  # the ceil() upper ends always reach cells_needed
    r0, r1, r2 = best[1]
    return int(r0), int(r1), int(r2)


def idealized_crystal(
    prototype: str | Structure,
    n_min: int = 4096,
    sigma: float = 0.0,
    seed: int | np.random.Generator = 0,
    unit_nearest: bool = True,
    conventional: bool = True,
) -> Structure:
    """A prototype replicated to >= ``n_min`` atoms with Gaussian position noise.

    With ``unit_nearest`` the crystal is rescaled so that its nearest-neighbour distance is 1;
    ``sigma`` is the noise standard deviation per Cartesian component, in units of the
    nearest-neighbour distance (so in the rescaled units it is just ``sigma``). Positions are
    not re-wrapped after the noise. ``labels``: ``prototype``, ``sigma``, ``nearest_distance``
    (of the clean crystal, in the output units), ``scale`` (output length per input Angstrom).
    """
    base = get_prototype(prototype) if isinstance(prototype, str) else Structure.coerce(prototype)
    name = base.id or base.formula
    if n_min < 1:
        raise ValueError(f"n_min must be >= 1, got {n_min}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if conventional:
        base = conventional_cell(base)
    d0 = nearest_distance(base)
    scale = 1.0 / d0 if unit_nearest else 1.0
    reps = replication_counts(base.cell, base.n_atoms, n_min)
    atoms = base.to_ase()
    atoms.info.clear()
    atoms.set_cell(atoms.get_cell() * scale, scale_atoms=True)
    atoms = atoms.repeat(reps)
    positions = atoms.get_positions()
    nearest = d0 * scale
    if sigma > 0:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        positions = positions + rng.normal(0.0, sigma * nearest, size=positions.shape)
    return Structure(
        atoms.get_atomic_numbers(),
        positions,
        np.asarray(atoms.get_cell()),
        np.ones(3, dtype=bool),
        {"prototype": name, "sigma": float(sigma), "nearest_distance": nearest, "scale": scale},
        id=f"{name}-x{'x'.join(map(str, reps))}-s{sigma:g}",
        source="idealized_crystal",
    )


def idealized_crystals(
    names: Iterable[str] = PRETRAINING_PROTOTYPES,
    sigmas: Sequence[float] = PRETRAINING_SIGMAS,
    n_min: int = 4096,
    seed: int = 0,
) -> list[Structure]:
    """One idealized crystal per (prototype, sigma), seeded reproducibly; ``index`` numbers them."""
    rng = np.random.default_rng(seed)
    out: list[Structure] = []
    for name in names:
        for sigma in sigmas:
            s = idealized_crystal(name, n_min=n_min, sigma=sigma, seed=rng)
            s.index = len(out)
            out.append(s)
    return out
