"""CIF files -> :class:`Structure`, read by two parsers and cross-checked, or refused.

Why not just one library call: pymatgen and ASE each read most CIFs, but each returns a wrong
structure on some files with only a warning (or none). pymatgen falls back to the asymmetric
unit when it cannot generate a space group's operations (lithium niobate read as ``LiNbO``);
ASE silently keeps one species of a mixed site and rejects setting strings such as
``'R 3 c {rhombohedral axes}'``. So every CIF data block is read by both, and a result is
accepted only when

* its space group was applied (pymatgen's "Defaulting to P1" on a non-P1 group is a failure),
* it matches the formula the file declares (``_chemical_formula_sum``; with
  ``_cell_formula_units_Z`` also the number of atoms), unless ``formula="warn"``,
* and, when both parsers succeed, both give the same composition (else the file is refused
  naming both, unless ``cif_reader`` picks one).

Sites of one species closer than ``merge_tolerance`` (symmetry images of a site whose
coordinates were printed with few decimals) are merged into one and counted in the structure's
``warnings``; genuinely overlapping atoms are still refused by :meth:`Structure.validate`.
Partial occupancy follows ``disorder`` (:mod:`._disorder`).
"""

from __future__ import annotations

import io
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..errors import DisorderError, StructureError, UnknownElementError, UnreadableFileError
from ._disorder import DISORDER_POLICIES, resolve_disorder
from ._structure import Structure

CIF_READERS = ("auto", "pymatgen", "ase")
FORMULA_POLICIES = ("refuse", "warn")
DEFAULT_MERGE_TOLERANCE = 0.01  # Angstrom

Entry = tuple[int, Union[Structure, StructureError]]


@dataclass
class CifOptions:
    """How to read CIFs: see :func:`atomssl.data.read`."""

    disorder: str = "refuse"
    merge_tolerance: float = DEFAULT_MERGE_TOLERANCE
    formula: str = "refuse"
    cif_reader: str = "auto"

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "CifOptions":
        opts = cls(
            disorder=options.get("disorder") or "refuse",
            merge_tolerance=DEFAULT_MERGE_TOLERANCE
            if options.get("merge_tolerance") is None
            else float(options["merge_tolerance"]),
            formula=options.get("formula") or "refuse",
            cif_reader=options.get("cif_reader") or "auto",
        )
        for name, value, allowed in (
            ("disorder", opts.disorder, DISORDER_POLICIES),
            ("formula", opts.formula, FORMULA_POLICIES),
            ("cif_reader", opts.cif_reader, CIF_READERS),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
        if not opts.merge_tolerance >= 0:
            raise ValueError(f"merge_tolerance must be >= 0 Angstrom, got {opts.merge_tolerance}")
        return opts


@dataclass
class _Result:
    """One parser's reading of one data block."""

    reader: str
    structure: Any = None  # pymatgen Structure (possibly disordered)
    problem: str | None = None  # why this reading is not acceptable
    notes: list[str] = field(default_factory=list)  # warnings that go with the structure
    merged: int = 0

    @property
    def ok(self) -> bool:
        return self.structure is not None and self.problem is None

    def describe(self) -> str:
        if self.structure is None:
            return f"{self.reader}: {self.problem}"
        return f"{self.reader} read {_formula(self.structure)} ({_n_atoms(self.structure):g} atoms)"


# ------------------------------------------------------------------------------------ helpers
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
_FORMULA_SUM = re.compile(r"^[ \t]*_chemical_formula_sum[ \t]+(?:'([^'\r\n]*)'|\"([^\"\r\n]*)\"|([^'\"\s][^\r\n]*?))[ \t\r]*$", re.IGNORECASE | re.MULTILINE)


def raw_formula_sums(text: str) -> dict[str, list[str]]:
    """Every non-empty ``_chemical_formula_sum`` of each block, as written in the file.

    Why not the parsers' tags: some databases (AMCSD) write the tag twice, the second time
    empty, and both parsers keep only the last value, which would silently skip the check.
    """
    starts = list(_BLOCK_START.finditer(text))
    out: dict[str, list[str]] = {}
    for k, m in enumerate(starts):
        chunk = text[m.end() : starts[k + 1].start() if k + 1 < len(starts) else len(text)]
        values = [next(g for g in f.groups() if g is not None).strip() for f in _FORMULA_SUM.finditer(chunk)]
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
        if any(p is None or not _same_composition(_reduced(p), _reduced(parsed[0])) for p in parsed):
            raise ValueError(f"the file declares different formulas: {' / '.join(repr(v) for v in values)}")
    if values and (not isinstance(text, str) or not text.strip() or text.strip() in ("?", ".")):
        text = values[0]
    if not isinstance(text, str) or not text.strip() or text.strip() in ("?", "."):
        return None, None
    amounts: Counter = Counter()
    rest = text.replace("'", " ").replace('"', " ")
    for sym, num in _FORMULA_TOKEN.findall(rest):
        sym = "H" if sym == "D" else sym  # deuterium is hydrogen to a structure
        amounts[sym] += float(num) if num not in ("", ".") else 1.0
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
        return f"the atoms read ({_formula(struct)}) do not match the declared formula ({want}){hint}"
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
    d = struct.distance_matrix
    np.fill_diagonal(d, np.inf)
    keys = [tuple(sorted((str(sp), round(occ, 6)) for sp, occ in site.species.items())) for site in struct]
    remove: set[int] = set()
    for i in range(len(struct)):
        if i in remove:
            continue
        for j in np.nonzero(d[i] < tolerance)[0]:
            if j > i and j not in remove and keys[j] == keys[i]:
                remove.add(int(j))
    if not remove:
        return struct, 0
    out = struct.copy()
    out.remove_sites(sorted(remove))
    return out, len(remove)


# ------------------------------------------------------------------------------------ parsers
def _pymatgen(block_text: str, declared, z, tolerance: float, symmetry_named: bool, setting: _Setting | None) -> _Result:
    from pymatgen.io.cif import CifParser

    res = _Result("pymatgen")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structs = CifParser.from_str(block_text).parse_structures(primitive=False, on_error="raise")
        except Exception as exc:  # pymatgen raises a zoo of types on garbled CIFs
            bad_el = [str(w.message) for w in caught if "not a valid Element" in str(w.message)]
            res.problem = bad_el[0] if bad_el else _short(exc)
            return res
    messages = [" ".join(str(w.message).split()) for w in caught]
    if not structs:
        res.problem = "no structure in the block"
        return res
    struct = structs[0]
    from pymatgen.core.periodic_table import DummySpecies

    dummies = sorted({sp.symbol for site in struct for sp in site.species if isinstance(sp, DummySpecies)})
    if dummies:
        res.problem = f"{', '.join(dummies)} is not a chemical element"
        return res
    res.structure = struct
    if symmetry_named and any("Defaulting to P1" in m for m in messages):
        res.problem = "could not generate the operations of the space group named in the file (kept only the listed sites)"
        return res
    if setting is not None and setting.pymatgen_problem:
        res.problem = setting.pymatgen_problem
        return res
    res.structure, res.merged = merge_duplicate_sites(struct, tolerance)
    res.problem = _formula_problem(res.structure, declared, z)
    return res


def _ase_block_structure(block):
    """ASE's reading of one block, as a pymatgen structure with ASE's occupancies restored."""
    from pymatgen.core import Lattice, Structure as PmgStructure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atoms = block.get_atoms(fractional_occupancies=True)
    occupancy = atoms.info.get("occupancy") or {}
    species = []
    kinds = atoms.arrays.get("spacegroup_kinds", np.arange(len(atoms)))  # atom -> asymmetric site
    for sym, tag in zip(atoms.get_chemical_symbols(), kinds):
        occ = occupancy.get(str(tag))
        species.append(dict(occ) if occ else {sym: 1.0})
    return PmgStructure(Lattice(atoms.cell.array), species, atoms.get_scaled_positions(wrap=True))


_SETTING_NOTE = re.compile(r"\s*(\{[^}]*\}|\([^)]*axes[^)]*\)|:\s*[RrHh12])\s*$")
RHOMBOHEDRAL_GROUPS = {146, 148, 155, 160, 161, 166, 167}


@dataclass
class _Setting:
    """How the space group of a block without an operations loop must be read."""

    name: str  # the symbol as ASE understands it, setting notes stripped
    setting: int  # ASE setting: 1 hexagonal axes, 2 rhombohedral axes
    note: str  # what was resolved, for the structure's warnings
    pymatgen_problem: str | None = None  # why pymatgen's reading of the symbol is wrong for this cell


def _cell_metric(cellpar) -> str:
    a, b, c, al, be, ga = cellpar
    if np.allclose([b, c], a, rtol=1e-3) and np.allclose([be, ga], al, atol=0.05) and abs(al - 90) > 0.05:
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
    said = 2 if ("rhomb" in note or note.strip(" :") == "r") else 1 if ("hex" in note or note.strip(" :") == "h") else None
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

    drop = ("_symmetry_space_group_name", "_space_group_name", "_space_group.patterson", "_space_group_crystal_system", "_symmetry_cell_setting")
    tags = {k: v for k, v in block.items() if not k.startswith(drop)}
    tags["_symmetry_space_group_name_h-m"] = setting.name
    tags["_symmetry_space_group_setting"] = setting.setting
    return CIFBlock(block.name, tags)


def _ase(block, declared, z, tolerance: float, setting: _Setting | None) -> _Result:
    res = _Result("ase")
    try:
        if setting is not None:
            res.structure = _ase_block_structure(_resolved_block(block, setting))
            res.notes.append(setting.note)
        else:
            res.structure = _ase_block_structure(block)
    except Exception as exc:
        res.problem = _short(exc)
        return res
    res.structure, res.merged = merge_duplicate_sites(res.structure, tolerance)
    res.problem = _formula_problem(res.structure, declared, z)
    return res


def _short(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, (AssertionError, AttributeError, IndexError, KeyError, TypeError, ZeroDivisionError)) or "zip()" in msg:
        # parser internals, not a reason a user can act on
        return f"the file's tags are inconsistent or incomplete ({type(exc).__name__})"
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


# ------------------------------------------------------------------------------------ decision
def _choose(results: list[_Result], opts: CifOptions, declared) -> tuple[_Result | None, str | None]:
    """The accepted reading, or the reason to refuse the block."""
    by_name = {r.reader: r for r in results}
    if opts.cif_reader != "auto":
        r = by_name[opts.cif_reader]
        if r.structure is None or (r.problem and not _formula_only(r, opts)):
            return None, f"{r.reader} could not read it: {r.problem}"
        return r, None
    good = [r for r in results if r.ok or (r.structure is not None and _formula_only(r, opts))]
    if not good:
        return None, "; ".join(r.describe() if r.structure is None else f"{r.reader}: {r.problem}" for r in results)
    if len(good) == 2 and not _same_composition(_element_amounts(good[0].structure), _element_amounts(good[1].structure)):
        return None, (
            f"the readers disagree: {good[0].describe()}, {good[1].describe()}"
            + ("" if declared else "; the file declares no formula to tell which is right")
            + "; pick one with cif_reader= (--cif-reader)"
        )
    chosen = good[0]  # pymatgen first: it keeps mixed sites for the disorder policies
    for other in results:
        if other is not chosen and other.structure is not None and other.problem and other not in good:
            chosen.notes.append(f"{other.reader} rejected: {other.problem}")
    return chosen, None


def _formula_only(r: _Result, opts: CifOptions) -> bool:
    """A reading whose only problem is a formula mismatch, accepted (with a warning) under formula='warn'."""
    return opts.formula == "warn" and r.problem is not None and (
        "declared formula" in r.problem
    )


def read_cif(path: Path, source: str, options: dict[str, Any]) -> Iterator[Entry]:
    """Every data block of a CIF with atoms, as (block index, Structure | StructureError)."""
    from ase.io.cif import parse_cif
    from ase.io.formats import open_with_compression
    from pymatgen.io.cif import CifFile

    try:
        opts = CifOptions.from_options(options)
    except ValueError as exc:
        raise UnreadableFileError(str(exc), source) from None
    try:
        with open_with_compression(str(path), "rb") as fh:
            raw = fh.read()
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise UnreadableFileError("not a text file (undecodable bytes)", source) from None
    ase_error = pmg_error = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ase_blocks = {b.name.lower(): b for b in parse_cif(io.StringIO(text)) if b.has_structure()}
    except Exception as exc:
        ase_blocks, ase_error = {}, _short(exc)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pmg_blocks = {name.lower(): b for name, b in CifFile.from_str(text).data.items()}
        pmg_blocks = {k: b for k, b in pmg_blocks.items() if "_atom_site_label" in b.data or "_atom_site_type_symbol" in b.data}
    except Exception as exc:
        pmg_blocks, pmg_error = {}, _short(exc)
    raw = raw_formula_sums(text)
    names = list(ase_blocks) if ase_error is None else list(pmg_blocks)
    if not names:
        if ase_error or pmg_error:
            raise UnreadableFileError(f"could not parse as cif (ase: {ase_error or 'no atom sites'}; pymatgen: {pmg_error or 'no atom sites'})", source)
        raise UnreadableFileError("no data block with atom sites in the CIF", source)
    for i, name in enumerate(names):
        pmg = pmg_blocks.get(name)
        tags = _tags(ase_blocks.get(name), pmg)
        entry = _read_block(ase_blocks.get(name), None if pmg is None else str(pmg), tags, raw.get(name), opts, source, i, name, ase_error, len(names))
        if isinstance(entry, StructureError) and entry.index is None:
            raise entry
        yield i, entry


def _tags(ase_block, pmg_block) -> dict[str, Any]:
    """The block's tags with lower-case names (from ASE's parse, else pymatgen's)."""
    if ase_block is not None:
        return dict(ase_block.items())
    return {k.lower(): v for k, v in pmg_block.data.items()}


def _read_block(block, pmg_text: str | None, tags: dict[str, Any], raw: list[str] | None, opts: CifOptions, source: str, i: int, name: str, ase_error: str | None, n_blocks: int = 1) -> Structure | StructureError:
    try:
        declared, z = declared_formula(tags, raw)
    except ValueError as exc:
        if opts.formula == "refuse":
            return UnreadableFileError(str(exc), source, i)
        declared, z = None, None
    group = next((tags[k] for k in ("_symmetry_space_group_name_h-m", "_space_group_name_h-m_alt") if k in tags), None)
    number = next((tags[k] for k in ("_space_group_it_number", "_symmetry_int_tables_number", "_space_group.it_number") if k in tags), None)
    symmetry_named = not (
        (group is None or str(group).replace(" ", "") in ("P1", "?")) and (str(number) in ("None", "?", "1"))
    )
    setting = _setting(block) if block is not None else None
    results = []
    if pmg_text is not None:
        results.append(_pymatgen(pmg_text, declared, z, opts.merge_tolerance, symmetry_named, setting))
    else:
        results.append(_Result("pymatgen", problem="found no atom sites in this block"))
    if block is not None:
        results.append(_ase(block, declared, z, opts.merge_tolerance, setting))
    else:
        results.append(_Result("ase", problem=ase_error or "found no atom sites in this block"))
    chosen, reason = _choose(results, opts, declared)
    if chosen is None:
        unknown = [r.problem for r in results if r.problem and "not a chemical element" in r.problem]
        where = None if (n_blocks == 1 and all(r.structure is None for r in results)) else i  # nothing parsed: the file
        if unknown and all(r.structure is None for r in results):
            return UnknownElementError(unknown[0], source, i)
        return UnreadableFileError(reason or "unreadable", source, where)
    notes = list(chosen.notes)
    if chosen.problem:  # formula='warn'
        notes.append(chosen.problem)
    if chosen.merged:
        notes.append(f"merged {chosen.merged} symmetry-duplicate site(s) closer than {opts.merge_tolerance:g} A")
    try:
        struct, disorder_notes = resolve_disorder(chosen.structure, opts.disorder)
    except DisorderError as err:
        return err.located(source, i)
    notes.extend(disorder_notes)
    try:
        out = Structure.from_pymatgen(struct, source=source, index=i, id=name)
    except StructureError as err:
        return err.located(source, i)
    out.warnings = notes
    return out
