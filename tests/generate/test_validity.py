"""CDVAE validity metrics: structure validity against brute force, composition validity against an
independent re-implementation of CDVAE's SMACT check, and the two oxidation-state sets."""

from __future__ import annotations

import itertools
from math import gcd

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from atomssl.data import Structure
from atomssl.errors import ConfigError
from atomssl.generate import composition_validity, structure_validity, validity_report
from atomssl.generate._validity import min_periodic_distance, reduced_composition


def brute_min_distance(s: Structure) -> float:
    """Shortest distance between distinct atoms over images -3..3 (plenty for these cells)."""
    best = np.inf
    shifts = np.array(list(itertools.product(range(-3, 4), repeat=3))) @ s.cell
    for i in range(s.n_atoms):
        for j in range(s.n_atoms):
            if i != j:
                d = np.linalg.norm(s.positions[j] + shifts - s.positions[i], axis=1).min()
                best = min(best, d)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_min_periodic_distance_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(2.5, 4.0, 3)) + rng.uniform(-0.8, 0.8, (3, 3))
    n = int(rng.integers(2, 6))
    frac = rng.uniform(0, 1, (n, 3))
    s = Structure(numbers=[11] * n, positions=frac @ cell, cell=cell, pbc=True)
    ref = brute_min_distance(s)
    got = min_periodic_distance(s, cutoff=10.0)
    assert got == pytest.approx(ref, abs=1e-9)
    assert structure_validity(s) == (ref > 0.5)


def test_structure_validity_across_the_boundary_and_volume():
    # two atoms 0.3 A apart only through the periodic boundary
    s = Structure(
        numbers=[11, 17], positions=[[0.1, 1, 1], [3.8, 1, 1]], cell=np.eye(3) * 4.0, pbc=True
    )
    assert min_periodic_distance(s) == pytest.approx(0.3)
    assert not structure_validity(s)
    assert structure_validity(s.copy(positions=[[0.1, 1, 1], [2.1, 1, 1]]))
    # coincident atoms and a flat cell are invalid; a single atom is valid
    assert not structure_validity(s.copy(positions=[[1, 1, 1], [1, 1, 1]]))
    flat = Structure(numbers=[11], positions=[[0, 0, 0]], cell=np.diag([4.0, 4.0, 1e-3]), pbc=True)
    assert not structure_validity(flat)
    assert structure_validity(Structure.from_ase(bulk("Cu", "fcc", a=3.6)))
    assert structure_validity(Structure.from_ase(bulk("NaCl", "rocksalt", a=5.64)))


def cdvae_smact_validity(numbers, oxidation_attr: str) -> bool:
    """CDVAE's ``smact_validity`` (cdvae/common/data_utils.py), written out with SMACT primitives."""
    import smact
    from ase.data import chemical_symbols
    from smact.screening import pauling_test

    zs, counts = np.unique(numbers, return_counts=True)
    g = 0
    for c in counts:
        g = gcd(g, int(c))
    counts = [int(c) // g for c in counts]
    symbols = tuple(chemical_symbols[z] for z in zs)
    if len(symbols) == 1:
        return True
    if all(s in smact.metals for s in symbols):
        return True
    elements = [smact.Element(s) for s in symbols]
    ox = [getattr(e, oxidation_attr) for e in elements]
    eneg = [e.pauling_eneg for e in elements]
    for states in itertools.product(*ox):
        if smact.neutral_ratios(states, stoichs=[(c,) for c in counts], threshold=max(counts)):
            try:
                en = pauling_test(states, eneg)
            except TypeError:
                en = True
            if en:
                return True
    return False


COMPOSITIONS = [
    "NaCl",
    "Na2Cl2",
    "NaCl2",
    "Fe2O3",
    "Fe",
    "CuZn3",
    "KNa",
    "SiO2",
    "Na2Cl",
    "NaSe",
    "LiFePO4",
    "BaTiO3",
    "CsI3",
    "MgCl",
    "Al2O3",
    "TiO3",
    "CO2",
    "NF3",
    "Ga2Se3",
    "SnS2",
    "Bi2Te3",
    "YCu3",
]


@pytest.mark.parametrize(
    "ox, attr", [("smact14", "oxidation_states_smact14"), ("icsd24", "oxidation_states_icsd24")]
)
def test_composition_validity_matches_cdvae_reimplementation(ox, attr):
    from pymatgen.core import Composition

    for formula in COMPOSITIONS:
        numbers = [el.Z for el, n in Composition(formula).items() for _ in range(int(n))]
        assert composition_validity(numbers, ox) == cdvae_smact_validity(numbers, attr), (
            formula,
            ox,
        )


def test_composition_rules_and_sets():
    z = {"Na": 11, "Cl": 17, "Se": 34, "Fe": 26, "Cu": 29, "Zn": 30, "O": 8}
    assert reduced_composition([11, 11, 17, 17]) == ((11, 1), (17, 1))
    assert composition_validity([z["Na"], z["Cl"]])
    assert composition_validity({z["Na"]: 4, z["Cl"]: 4})  # reduced by the gcd
    assert not composition_validity({z["Na"]: 1, z["Cl"]: 2})  # no charge-neutral combination
    assert composition_validity([z["Fe"]] * 5)  # single element
    assert composition_validity([z["Cu"], z["Zn"], z["Zn"]])  # all metals (alloy)
    assert composition_validity({z["Fe"]: 2, z["O"]: 3}, "icsd24")
    # charge-neutral only with Na(-1): fails the Pauling electronegativity test
    assert not composition_validity({z["Na"]: 2, z["Cl"]: 1})
    assert composition_validity({z["Na"]: 2, z["Cl"]: 1}, use_pauling_test=False)
    # the two oxidation-state sets disagree on NaSe: the selection matters
    assert composition_validity([z["Na"], z["Se"]], "smact14") != composition_validity(
        [z["Na"], z["Se"]], "icsd24"
    )
    assert not composition_validity([])
    with pytest.raises(ConfigError):
        composition_validity([11], "nonsense")


def test_validity_report_fractions():
    good = Structure.from_ase(bulk("NaCl", "rocksalt", a=5.64))
    bad_comp = good.copy(numbers=np.array([11, 11]))  # Na2 alone: single element, valid
    overlap = Structure.from_ase(
        Atoms("NaCl", positions=[[0, 0, 0], [0.2, 0, 0]], cell=np.eye(3) * 4, pbc=True)
    )
    wrong = Structure(
        numbers=[11, 17, 17],
        positions=[[0, 0, 0], [2, 0, 0], [0, 2, 0]],
        cell=np.eye(3) * 4,
        pbc=True,
    )
    assert structure_validity(wrong)  # NaCl2: no charge-neutral combination
    rep = validity_report([good, bad_comp, overlap, wrong])
    assert rep["structure"] == pytest.approx(0.75)
    assert rep["composition_smact14"] == pytest.approx(0.75)
    assert rep["valid_smact14"] == pytest.approx(0.5)
