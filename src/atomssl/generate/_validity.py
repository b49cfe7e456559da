"""Validity of generated crystals, as defined by CDVAE (Xie et al. 2022).

- **Structure validity**: the shortest distance between two distinct atoms, over all periodic
  images, exceeds 0.5 A, and the cell volume exceeds 0.1 A^3. (As in CDVAE, an atom's distance
  to its own periodic images is not counted.)
- **Composition validity** (SMACT): counts reduced by their gcd; a single element, or only
  metals, is valid; otherwise valid when some combination of the elements' oxidation states is
  charge-neutral and passes the Pauling electronegativity test (cations less electronegative
  than anions). The oxidation-state set is selectable: ``"smact14"`` (SMACT's 2014 set, the one
  CDVAE used) or ``"icsd24"`` (SMACT 4's ICSD 2024 set); any other set SMACT 4 names
  (``"icsd16"``, ``"pymatgen_sp"``) passes through. The check itself is SMACT's own
  ``smact.screening.smact_validity``; results are cached per reduced composition.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from math import gcd

import numpy as np

from ..data import Structure
from ..errors import ConfigError

MIN_DISTANCE_A = 0.5
MIN_VOLUME_A3 = 0.1
OXIDATION_SETS = ("smact14", "icsd24", "icsd16", "pymatgen_sp")


def min_periodic_distance(structure, cutoff: float = MIN_DISTANCE_A) -> float:
    """Shortest distance between two distinct atoms over periodic images, or ``inf`` if none is below ``cutoff``.

    Uses atomssl's radius graph (exact over images, any cell shape); only pairs closer than
    ``cutoff`` are searched, which is all validity needs.
    """
    from ..graph import radius_graph

    s = Structure.coerce(structure)
    if s.n_atoms < 2:
        return float("inf")
    nl = radius_graph(s, float(cutoff), validate=False)
    d = nl.distance[nl.src != nl.dst]
    return float(d.min()) if d.size else float("inf")


def structure_validity(
    structure, min_distance: float = MIN_DISTANCE_A, min_volume: float = MIN_VOLUME_A3
) -> bool:
    """CDVAE structure validity: minimum periodic distance > 0.5 A and volume > 0.1 A^3."""
    s = Structure.coerce(structure)
    if not (np.isfinite(s.positions).all() and np.isfinite(s.cell).all()):
        return False
    if s.pbc.any() and not s.volume > min_volume:
        return False
    return min_periodic_distance(s, cutoff=min_distance + 1e-6) > min_distance


def reduced_composition(numbers: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """``((Z, count / gcd), ...)`` sorted by Z."""
    counts = Counter(int(z) for z in numbers)
    if not counts:
        return ()
    g = 0
    for c in counts.values():
        g = gcd(g, c)
    return tuple(sorted((z, c // g) for z, c in counts.items()))


def composition_validity(
    composition, oxidation_states: str = "smact14", use_pauling_test: bool = True
) -> bool:
    """CDVAE/SMACT composition validity of a structure, a list of atomic numbers or ``{Z: count}``.

    ``oxidation_states``: ``"smact14"`` (CDVAE's set) or ``"icsd24"`` (SMACT 4 default family),
    see the module docstring. Elements SMACT has no data for (or Z outside 1..103) are invalid.
    """
    if oxidation_states not in OXIDATION_SETS:
        raise ConfigError(
            f"oxidation_states must be one of {OXIDATION_SETS}, got {oxidation_states!r}"
        )
    if isinstance(composition, dict):
        numbers = [z for z, c in composition.items() for _ in range(int(c))]
    elif isinstance(composition, (Structure,)) or hasattr(composition, "numbers"):
        numbers = list(np.asarray(composition.numbers).tolist())
    else:
        numbers = list(composition)
    red = reduced_composition(numbers)
    if not red:
        return False
    return _smact_valid(red, oxidation_states, bool(use_pauling_test))


@lru_cache(maxsize=65536)
def _smact_valid(
    reduced: tuple[tuple[int, int], ...], oxidation_states: str, use_pauling_test: bool
) -> bool:
    import warnings

    from pymatgen.core import Composition
    from smact.screening import smact_validity

    if any(not 1 <= z <= 103 for z, _ in reduced):
        return False
    comp = Composition({int(z): int(c) for z, c in reduced})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(
                smact_validity(
                    comp,
                    use_pauling_test=use_pauling_test,
                    include_alloys=True,
                    oxidation_states_set=oxidation_states,
                )
            )
    except (KeyError, NameError, ValueError, TypeError):  # element unknown to SMACT's tables
        return False


def validity_report(
    structures, oxidation_sets: Iterable[str] = ("smact14", "icsd24")
) -> dict[str, float]:
    """Fractions of valid structures: ``structure``, ``composition_<set>`` and ``valid_<set>`` (both)."""
    structures = [Structure.coerce(s) for s in structures]
    n = max(len(structures), 1)
    sv = [structure_validity(s) for s in structures]
    out = {"n": float(len(structures)), "structure": sum(sv) / n}
    for ox in oxidation_sets:
        cv = [composition_validity(s, ox) for s in structures]
        out[f"composition_{ox}"] = sum(cv) / n
        out[f"valid_{ox}"] = sum(a and b for a, b in zip(sv, cv)) / n
    return out
