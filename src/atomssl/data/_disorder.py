"""What to do with partially occupied sites: refuse (default), take the majority species, or
order them on a bounded supercell (lowest Ewald energy, pymatgen's ordering transformation)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from ..errors import DisorderError

DISORDER_POLICIES = ("refuse", "majority", "order")
ORDER_MAX_ATOMS = 200  # largest supercell the ``order`` policy builds


def _disordered_sites(struct) -> list[int]:
    return [i for i, site in enumerate(struct) if not site.is_ordered]


def _site_text(struct, i: int) -> str:
    return f"{i} ({struct[i].species})"


def resolve_disorder(
    struct, policy: str = "refuse", max_atoms: int = ORDER_MAX_ATOMS
) -> tuple[Any, list[str]]:
    """An ordered pymatgen structure from ``struct`` under ``policy``, and the warnings to keep
    with it. ``refuse`` raises :class:`DisorderError` naming the partially occupied sites."""
    bad = _disordered_sites(struct)
    if not bad:
        return struct, []
    if policy == "refuse":
        listed = "; ".join(_site_text(struct, i) for i in bad[:5]) + (
            " ..." if len(bad) > 5 else ""
        )
        raise DisorderError(
            f"{len(bad)} site(s) with partial occupancy or mixed species: {listed}; "
            "read with disorder='majority' or 'order' (--disorder) to get an ordered structure"
        )
    if policy == "majority":
        return _majority(struct, bad)
    if policy == "order":
        return _order(struct, bad, max_atoms)
    raise ValueError(f"disorder={policy!r}: expected one of {', '.join(DISORDER_POLICIES)}")


def _majority(struct, bad: list[int]) -> tuple[Any, list[str]]:
    out = struct.copy()
    dropped, replaced = [], []
    for i in bad:
        species = out[i].species
        vacancy = 1.0 - sum(species.values())
        best, occ = max(species.items(), key=lambda kv: (kv[1], -kv[0].Z))
        if vacancy > occ:
            dropped.append(i)
        else:
            out.replace(i, best.element if hasattr(best, "element") else best)
            replaced.append(f"{i}->{best.element.symbol if hasattr(best, 'element') else best}")
    out.remove_sites(dropped)
    notes = []
    if replaced:
        notes.append(
            f"disorder=majority: {len(replaced)} partially occupied site(s) given their majority species: "
            + ", ".join(replaced[:20])
            + (" ..." if len(replaced) > 20 else "")
        )
    if dropped:
        notes.append(
            f"disorder=majority: {len(dropped)} mostly vacant site(s) dropped: {dropped[:20]}"
            + (" ..." if len(dropped) > 20 else "")
        )
    return out, notes


def _multiplicity(struct, bad: list[int], max_factor: int) -> int | None:
    """Smallest supercell size that turns every group of identical mixed sites into whole atoms."""
    groups: dict[tuple, int] = {}
    for i in bad:
        key = tuple(sorted((str(sp), round(occ, 4)) for sp, occ in struct[i].species.items()))
        groups[key] = groups.get(key, 0) + 1
    need = 1
    for key, n in groups.items():
        for _, occ in key:
            frac = Fraction(occ * n).limit_denominator(100)
            if abs(float(frac) - occ * n) > 2e-3:
                return None
            need = np.lcm(need, frac.denominator)
            if need > max_factor:
                return None
    return int(need)


def _supercell_shape(lengths: np.ndarray, m: int) -> tuple[int, int, int]:
    """Factor m into (a, b, c) making the supercell as close to isotropic as possible."""
    best, best_score = (m, 1, 1), np.inf
    for a in range(1, m + 1):
        if m % a:
            continue
        for b in range(1, m // a + 1):
            if (m // a) % b:
                continue
            shape = (a, b, m // a // b)
            sides = lengths * shape
            score = sides.max() / sides.min()
            if score < best_score - 1e-9:
                best, best_score = shape, score
    return best


def _order(struct, bad: list[int], max_atoms: int) -> tuple[Any, list[str]]:
    from pymatgen.core import Structure as PmgStructure
    from pymatgen.transformations.standard_transformations import (
        OrderDisorderedStructureTransformation,
    )

    m = _multiplicity(struct, bad, max(1, max_atoms // max(len(struct), 1)))
    if m is None or m * len(struct) > max_atoms:
        raise DisorderError(
            f"disorder='order' needs a supercell of more than {max_atoms} atoms to make the occupancies of "
            f"sites {bad[:10]} whole; use disorder='majority', or order the structure yourself"
        )
    shape = _supercell_shape(np.asarray(struct.lattice.abc), m)
    cell = struct.copy()
    if m > 1:
        cell.make_supercell(shape)
    try:
        cell.add_oxidation_state_by_guess()
    except Exception as exc:  # pymatgen raises ValueError and friends when no guess fits
        raise DisorderError(
            f"disorder='order': no oxidation states for the Ewald ranking ({exc}); use disorder='majority'"
        ) from None
    if all(getattr(sp, "oxi_state", 0) in (0, None) for site in cell for sp in site.species):
        raise DisorderError(
            "disorder='order': all oxidation states guessed as 0, so no Ewald ranking; use disorder='majority'"
        )
    try:
        ordered = OrderDisorderedStructureTransformation().apply_transformation(cell)
    except Exception as exc:
        raise DisorderError(
            f"disorder='order': pymatgen could not order the structure ({type(exc).__name__}: {exc})"
        ) from None
    # without return_ranked_list the transformation returns one structure
    assert isinstance(ordered, PmgStructure)
    ordered.remove_oxidation_states()
    n_orderings = "lowest Ewald energy"
    note = (
        f"disorder=order: {len(bad)} partially occupied site(s) ordered on a {'x'.join(map(str, shape))} supercell "
        f"({len(ordered)} atoms), {n_orderings}"
    )
    return ordered, [note]


__all__ = ["DISORDER_POLICIES", "ORDER_MAX_ATOMS", "resolve_disorder"]
