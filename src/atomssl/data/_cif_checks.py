"""What a CIF reading is checked against: the formula the file declares, the space-group
setting its cell implies, and symmetry duplicates. Used by :mod:`._cif`."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np


def _element_amounts(struct) -> Counter:
    """Element -> number of atoms in the cell (occupancy-weighted), oxidation states dropped."""
    out: Counter = Counter()
    for site in struct:
        for sp, occ in site.species.items():
            out[sp.element.symbol if hasattr(sp, "element") else sp.symbol] += occ
    return out


def _n_atoms(struct) -> float:
    return float(sum(_element_amounts(struct).values()))


def _formula(struct) -> str:
    amounts = _element_amounts(struct)
    return " ".join(f"{el}{_num(n)}" for el, n in sorted(amounts.items()))


def _num(x: float) -> str:
    return "" if abs(x - 1) < 1e-6 else (f"{x:.0f}" if abs(x - round(x)) < 1e-6 else f"{x:.3g}")


def _same_composition(a: Counter, b: Counter, rtol: float = 0.01) -> bool:
    if set(k for k, v in a.items() if v > 1e-6) != set(k for k, v in b.items() if v > 1e-6):
        return False
    return all(abs(a[k] - b[k]) <= rtol * max(a[k], b[k]) + 1e-6 for k in a)


def _reduced(c: Counter) -> Counter:
    total = sum(c.values())
    return Counter({k: v / total for k, v in c.items()}) if total else Counter()


_FORMULA_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*\.?\d*)")


_BLOCK_START = re.compile(r"^data_(\S*)", re.IGNORECASE | re.MULTILINE)
_FORMULA_SUM = re.compile(
    r"^[ \t]*_chemical_formula_sum[ \t]+(?:'([^'\r\n]*)'|\"([^\"\r\n]*)\"|([^'\"\s][^\r\n]*?))[ \t\r]*$",
    re.IGNORECASE | re.MULTILINE,
)


def raw_formula_sums(text: str) -> dict[str, list[str]]:
    """Every non-empty ``_chemical_formula_sum`` of each block, as written in the file.

    Why not the parsers' tags: some databases (AMCSD) write the tag twice, the second time
    empty, and both parsers keep only the last value, which would silently skip the check.
    """
    starts = list(_BLOCK_START.finditer(text))
    out: dict[str, list[str]] = {}
    for k, m in enumerate(starts):
        chunk = text[m.end() : starts[k + 1].start() if k + 1 < len(starts) else len(text)]
        values = [
            next(g for g in f.groups() if g is not None).strip()
            for f in _FORMULA_SUM.finditer(chunk)
        ]
        out[m.group(1).lower()] = [v for v in values if v and v not in ("?", ".")]
    return out


def declared_formula(block, raw: list[str] | None = None) -> tuple[Counter | None, float | None]:
    """The formula a CIF block declares (element -> amount per formula unit) and its Z.

    ``raw``: the block's formula values as written (:func:`raw_formula_sums`); two that differ
    raise ``ValueError``.
    """
    text = block.get("_chemical_formula_sum")
    values = list(dict.fromkeys(raw or []))
    if len(values) > 1:
        parsed = [declared_formula({"_chemical_formula_sum": v})[0] for v in values]
        first = parsed[0]
        if first is None or any(
            p is None or not _same_composition(_reduced(p), _reduced(first)) for p in parsed
        ):
            raise ValueError(
                f"the file declares different formulas: {' / '.join(repr(v) for v in values)}"
            )
    if values and (not isinstance(text, str) or not text.strip() or text.strip() in ("?", ".")):
        text = values[0]
    if not isinstance(text, str) or not text.strip() or text.strip() in ("?", "."):
        return None, None
    amounts: Counter = Counter()
    rest = text.replace("'", " ").replace('"', " ")
    for sym, num in _FORMULA_TOKEN.findall(rest):
        sym = "H" if sym == "D" else sym  # deuterium is hydrogen to a structure
        # typeshed types Counter values as int; fractional amounts (e.g. Fe0.5) work at runtime
        amounts[sym] += float(num) if num not in ("", ".") else 1.0  # type: ignore[assignment]
    leftover = _FORMULA_TOKEN.sub("", rest).strip()
    from ase.data import atomic_numbers

    if not amounts or leftover or any(el not in atomic_numbers for el in amounts):
        return None, None
    z = block.get("_cell_formula_units_z")
    try:
        z = float(z) if z not in (None, "?", ".") else None
    except (TypeError, ValueError):
        z = None
    return amounts, (z if z and z > 0 else None)


def _formula_problem(struct, declared: Counter | None, z: float | None) -> str | None:
    if declared is None:
        return None
    got = _element_amounts(struct)
    want = " ".join(f"{el}{_num(n)}" for el, n in sorted(declared.items()))
    if not _same_composition(_reduced(got), _reduced(declared), rtol=0.02):
        missing = sorted(set(declared) - set(got))
        hint = f"; {', '.join(missing)} declared but without coordinates" if missing else ""
        return (
            f"the atoms read ({_formula(struct)}) do not match the declared formula ({want}){hint}"
        )
    if z is not None:
        # Z formula units of the declared formula make the cell, except in files (pymatgen's
        # CifWriter, many databases) whose _chemical_formula_sum already is the cell content.
        # That reading needs the declared amounts to be Z times whole numbers.
        n, per_unit = _n_atoms(struct), sum(declared.values())
        allowed = [z * per_unit]
        if all(abs(v / z - round(v / z)) < 1e-6 for v in declared.values()):
            allowed.append(per_unit)
        if not any(abs(n - m) <= 0.02 * m + 1e-6 for m in allowed):
            makes = " or ".join(f"{m:g}" for m in allowed)
            return f"{n:g} atoms read but the declared formula ({want}) with Z = {z:g} makes {makes} (wrong site multiplicities?)"
    return None


def merge_duplicate_sites(struct, tolerance: float):
    """Merge sites of the same species closer than ``tolerance`` Angstrom (periodic images counted).

    Returns (structure, number of sites removed). Sites of different species that close are left
    alone (validation then refuses them as overlapping atoms).
    """
    if tolerance <= 0 or len(struct) < 2:
        return struct, 0
    # pymatgen's neighbour list, not the full distance matrix (n^2 memory on a large CIF)
    centers, points, _, dists = struct.get_neighbor_list(tolerance)
    close: dict[int, list[int]] = {}
    for i, j, d in zip(centers.tolist(), points.tolist(), dists.tolist()):
        if j > i and d < tolerance:
            close.setdefault(i, []).append(j)
    keys = [
        tuple(sorted((str(sp), round(occ, 6)) for sp, occ in site.species.items()))
        for site in struct
    ]
    remove: set[int] = set()
    for i in sorted(close):
        if i in remove:
            continue
        for j in sorted(set(close[i])):
            if j not in remove and keys[j] == keys[i]:
                remove.add(j)
    if not remove:
        return struct, 0
    out = struct.copy()
    out.remove_sites(sorted(remove))
    return out, len(remove)


_SETTING_NOTE = re.compile(r"\s*(\{[^}]*\}|\([^)]*axes[^)]*\)|:\s*[RrHh12])\s*$")
RHOMBOHEDRAL_GROUPS = {146, 148, 155, 160, 161, 166, 167}


@dataclass
class _Setting:
    """How the space group of a block without an operations loop must be read."""

    name: str  # the symbol as ASE understands it, setting notes stripped
    setting: int  # ASE setting: 1 hexagonal axes, 2 rhombohedral axes
    note: str  # what was resolved, for the structure's warnings
    pymatgen_problem: str | None = (
        None  # why pymatgen's reading of the symbol is wrong for this cell
    )


def _cell_metric(cellpar) -> str:
    a, b, c, al, be, ga = cellpar
    if (
        np.allclose([b, c], a, rtol=1e-3)
        and np.allclose([be, ga], al, atol=0.05)
        and abs(al - 90) > 0.05
    ):
        return "rhombohedral"
    if abs(a - b) <= 1e-3 * a and np.allclose([al, be], 90, atol=0.05) and abs(ga - 120) <= 0.05:
        return "hexagonal"
    return "other"


def _setting(block) -> _Setting | None:
    """The setting of a block that names its space group without listing its operations.

    Rhombohedral groups have two settings, and a file may name one while its cell is in the
    other: applying hexagonal-axes operations (with their centring) to a rhombohedral cell makes
    a structure with 3x too many atoms, which both parsers do silently. The cell's metric
    decides; a setting note in the symbol ('{rhombohedral axes}', ':R', ':H') is used otherwise.
    """
    from ase.spacegroup import Spacegroup

    if block._get_sitesym():
        return None  # explicit operations: read as written
    name = block._get_spacegroup_name()
    number = block._get_spacegroup_number()
    clean = _SETTING_NOTE.sub("", name).strip() if isinstance(name, str) else None
    note = name.strip()[len(clean) :].lower() if clean and name.strip().startswith(clean) else ""
    try:
        group = Spacegroup(clean) if clean else Spacegroup(int(number))
    except Exception:
        return None
    if group.no not in RHOMBOHEDRAL_GROUPS:
        if clean and clean != name.strip():  # a note on a group with one setting: drop it
            return _Setting(clean, 1, f"space group {name!r} read as {clean!r}")
        return None
    try:
        metric = _cell_metric(block.get_cellpar())
    except Exception:
        metric = "other"
    said = (
        2
        if ("rhomb" in note or note.strip(" :") == "r")
        else 1
        if ("hex" in note or note.strip(" :") == "h")
        else None
    )
    setting = {"rhombohedral": 2, "hexagonal": 1}.get(metric, said or 1)
    label = clean or group.symbol
    how = f"space group {name or number!r} read in its {'rhombohedral' if setting == 2 else 'hexagonal'}-axes setting"
    if said is not None and said != setting:
        how += f" (the cell has {metric} axes, although the symbol says otherwise)"
    problem = None
    if (setting == 2) != (said == 2):
        problem = f"reads {name or number!r} in the {'hexagonal' if setting == 2 else 'rhombohedral'}-axes setting, but the cell has {metric} axes"
    return _Setting(label, setting, how, problem)


def _resolved_block(block, setting: _Setting):
    """A copy of an ASE CIF block with its space group spelled the way ASE understands."""
    from ase.io.cif import CIFBlock

    drop = (
        "_symmetry_space_group_name",
        "_space_group_name",
        "_space_group.patterson",
        "_space_group_crystal_system",
        "_symmetry_cell_setting",
    )
    tags = {k: v for k, v in block.items() if not k.startswith(drop)}
    tags["_symmetry_space_group_name_h-m"] = setting.name
    tags["_symmetry_space_group_setting"] = setting.setting
    return CIFBlock(block.name, tags)
