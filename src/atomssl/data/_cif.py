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
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    DisorderError,
    StructureError,
    UnknownElementError,
    UnreadableFileError,
)
from ._cif_checks import (
    _element_amounts,
    _formula,
    _formula_problem,
    _n_atoms,
    _resolved_block,
    _same_composition,
    _Setting,
    _setting,
    declared_formula,
    merge_duplicate_sites,
    raw_formula_sums,
)
from ._disorder import DISORDER_POLICIES, resolve_disorder
from ._structure import Structure

CIF_READERS = ("auto", "pymatgen", "ase")
FORMULA_POLICIES = ("refuse", "warn")
DEFAULT_MERGE_TOLERANCE = 0.01  # Angstrom

Entry = tuple[int, Structure | StructureError]


@dataclass
class CifOptions:
    """How to read CIFs: see :func:`atomssl.data.read`."""

    disorder: str = "refuse"
    merge_tolerance: float = DEFAULT_MERGE_TOLERANCE
    formula: str = "refuse"
    cif_reader: str = "auto"

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> CifOptions:
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


# ------------------------------------------------------------------------------------ parsers
def _pymatgen(
    block_text: str, declared, z, tolerance: float, symmetry_named: bool, setting: _Setting | None
) -> _Result:
    from pymatgen.io.cif import CifParser

    res = _Result("pymatgen")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structs = CifParser.from_str(block_text).parse_structures(
                primitive=False, on_error="raise"
            )
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

    dummies = sorted(
        {sp.symbol for site in struct for sp in site.species if isinstance(sp, DummySpecies)}
    )
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
    from pymatgen.core import Lattice
    from pymatgen.core import Structure as PmgStructure

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
    if (
        isinstance(
            exc,
            (AssertionError, AttributeError, IndexError, KeyError, TypeError, ZeroDivisionError),
        )
        or "zip()" in msg
    ):
        # parser internals, not a reason a user can act on
        return f"the file's tags are inconsistent or incomplete ({type(exc).__name__})"
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


# ------------------------------------------------------------------------------------ decision
def _choose(
    results: list[_Result], opts: CifOptions, declared
) -> tuple[_Result | None, str | None]:
    """The accepted reading, or the reason to refuse the block."""
    by_name = {r.reader: r for r in results}
    if opts.cif_reader != "auto":
        r = by_name[opts.cif_reader]
        if r.structure is None or (r.problem and not _formula_only(r, opts)):
            return None, f"{r.reader} could not read it: {r.problem}"
        return r, None
    good = [r for r in results if r.ok or (r.structure is not None and _formula_only(r, opts))]
    if not good:
        return None, "; ".join(
            r.describe() if r.structure is None else f"{r.reader}: {r.problem}" for r in results
        )
    if len(good) == 2 and not _same_composition(
        _element_amounts(good[0].structure), _element_amounts(good[1].structure)
    ):
        return None, (
            f"the readers disagree: {good[0].describe()}, {good[1].describe()}"
            + ("" if declared else "; the file declares no formula to tell which is right")
            + "; pick one with cif_reader= (--cif-reader)"
        )
    chosen = good[0]  # pymatgen first: it keeps mixed sites for the disorder policies
    for other in results:
        if (
            other is not chosen
            and other.structure is not None
            and other.problem
            and other not in good
        ):
            chosen.notes.append(f"{other.reader} rejected: {other.problem}")
    return chosen, None


def _formula_only(r: _Result, opts: CifOptions) -> bool:
    """A reading whose only problem is a formula mismatch, accepted (with a warning) under formula='warn'."""
    return opts.formula == "warn" and r.problem is not None and ("declared formula" in r.problem)


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
            ase_blocks = {
                b.name.lower(): b for b in parse_cif(io.StringIO(text)) if b.has_structure()
            }
    except Exception as exc:
        ase_blocks, ase_error = {}, _short(exc)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pmg_blocks = {name.lower(): b for name, b in CifFile.from_str(text).data.items()}
        pmg_blocks = {
            k: b
            for k, b in pmg_blocks.items()
            if "_atom_site_label" in b.data or "_atom_site_type_symbol" in b.data
        }
    except Exception as exc:
        pmg_blocks, pmg_error = {}, _short(exc)
    raw = raw_formula_sums(text)
    names = list(ase_blocks) if ase_error is None else list(pmg_blocks)
    if not names:
        if ase_error or pmg_error:
            raise UnreadableFileError(
                f"could not parse as cif (ase: {ase_error or 'no atom sites'}; pymatgen: {pmg_error or 'no atom sites'})",
                source,
            )
        raise UnreadableFileError("no data block with atom sites in the CIF", source)
    for i, name in enumerate(names):
        pmg = pmg_blocks.get(name)
        tags = _tags(ase_blocks.get(name), pmg)
        entry = _read_block(
            ase_blocks.get(name),
            None if pmg is None else str(pmg),
            tags,
            raw.get(name),
            opts,
            source,
            i,
            name,
            ase_error,
            len(names),
        )
        if isinstance(entry, StructureError) and entry.index is None:
            raise entry
        yield i, entry


def _tags(ase_block, pmg_block) -> dict[str, Any]:
    """The block's tags with lower-case names (from ASE's parse, else pymatgen's)."""
    if ase_block is not None:
        return dict(ase_block.items())
    return {k.lower(): v for k, v in pmg_block.data.items()}


def _read_block(
    block,
    pmg_text: str | None,
    tags: dict[str, Any],
    raw: list[str] | None,
    opts: CifOptions,
    source: str,
    i: int,
    name: str,
    ase_error: str | None,
    n_blocks: int = 1,
) -> Structure | StructureError:
    try:
        declared, z = declared_formula(tags, raw)
    except ValueError as exc:
        if opts.formula == "refuse":
            return UnreadableFileError(str(exc), source, i)
        declared, z = None, None
    group = next(
        (
            tags[k]
            for k in ("_symmetry_space_group_name_h-m", "_space_group_name_h-m_alt")
            if k in tags
        ),
        None,
    )
    number = next(
        (
            tags[k]
            for k in (
                "_space_group_it_number",
                "_symmetry_int_tables_number",
                "_space_group.it_number",
            )
            if k in tags
        ),
        None,
    )
    symmetry_named = not (
        (group is None or str(group).replace(" ", "") in ("P1", "?"))
        and (str(number) in ("None", "?", "1"))
    )
    setting = _setting(block) if block is not None else None
    results = []
    if pmg_text is not None:
        results.append(
            _pymatgen(pmg_text, declared, z, opts.merge_tolerance, symmetry_named, setting)
        )
    else:
        results.append(_Result("pymatgen", problem="found no atom sites in this block"))
    if block is not None:
        results.append(_ase(block, declared, z, opts.merge_tolerance, setting))
    else:
        results.append(_Result("ase", problem=ase_error or "found no atom sites in this block"))
    chosen, reason = _choose(results, opts, declared)
    if chosen is None:
        unknown = [
            r.problem for r in results if r.problem and "not a chemical element" in r.problem
        ]
        where = (
            None if (n_blocks == 1 and all(r.structure is None for r in results)) else i
        )  # nothing parsed: the file
        if unknown and all(r.structure is None for r in results):
            return UnknownElementError(unknown[0], source, i)
        return UnreadableFileError(reason or "unreadable", source, where)
    notes = list(chosen.notes)
    if chosen.problem:  # formula='warn'
        notes.append(chosen.problem)
    if chosen.merged:
        notes.append(
            f"merged {chosen.merged} symmetry-duplicate site(s) closer than {opts.merge_tolerance:g} A"
        )
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
