"""CIF readers side by side: atomssl's checked reader, plain pymatgen and plain ASE (issue 23, item 2).

Every CIF that can be gathered from the installed packages is read three ways:

* ``atomssl.data.read(path, format="cif")`` (defaults: ``disorder="refuse"``, ``formula="refuse"``,
  ``cif_reader="auto"``, ``merge_tolerance=0.01``);
* plain pymatgen, ``CifParser(path).parse_structures(primitive=False)``;
* plain ASE, ``ase.io.read(path, index=":", format="cif")``.

Corpora (each file is streamed: written or found, read three ways, judged, forgotten):

* ``pymatgen-tests``: pymatgen's bundled test structures (``pymatgen/util/structures/*.json``) written
  with ``CifWriter(struct, symprec=0.01)`` (asymmetric unit + operations loop; P1 when symmetry finding
  fails). Ground truth: the source structure.
* ``robocrys-minerals``: the structures of robocrys's ``condense/mineral_db.json.gz``, written the same way.
* ``pyxtal-cifs``: pyxtal's ``database/cifs/*.cif`` (real files), found without importing pyxtal.
* ``site-packages``: every other ``*.cif`` / ``*.mcif`` in the venv's site-packages (ase's test minerals).
* ``corpus:DIR``: each ``--corpus DIR`` (repeatable), walked recursively.
* ``derived: ...``: real-world failure modes generated from the first ``--derived`` ground-truth
  structures: coordinates printed with 3 decimals (symmetry images land 0.001-0.01 A apart, like IZA
  zeolite CIFs); the primitive rhombohedral cell of an R space group with a setting note in the name
  (``'R 3 c {rhombohedral axes}'``, ``'R 3 c:R'`` or the bare name) and no operations loop; the
  operations loop removed with the space-group name kept; the file truncated in the middle of the
  atom-site loop (at a row boundary, and inside a row); hydrogen declared in ``_chemical_formula_sum``
  but its sites deleted (from the ground-truth structures with H, and from the real pyxtal CIFs with H).

Judging a reading (file by file; a file with several data blocks is judged block by block):

* generated files: *correct* when the reduced composition (occupancy-weighted) equals the source's
  (atom fractions within 0.001) and the number density (atoms per volume) is within 1%;
* real files: the formula the block declares, ``_chemical_formula_sum`` (reduced composition, each atom
  fraction within 1% relative; and, when ``_cell_formula_units_Z`` is given, the number of atoms
  within 1% of Z x formula atoms, or of the formula's atoms when the formula already is the cell content
  as pymatgen's CifWriter writes it, i.e. every amount is a multiple of Z). Without a sum formula,
  a ``_chemical_formula_moiety`` that parses (molecules summed, charges dropped) checks the composition
  only. Blocks with neither are *unknown*: only agreement between the readers is reported.
* a refusal (an exception) is never *wrong*; a reading that does not match is *wrong*, also when the
  reader printed a warning. A reader that returns a different number of structures than the file has
  data blocks with atom sites has read it wrongly (a block silently dropped).
* pymatgen's fractional (disordered) composition counts as a reading; ASE's one-species-per-site
  reading of a mixed or partially occupied site is wrong whenever it changes the composition or density.

Outputs ``readers.md`` (first line: the command) and ``readers.json`` in ``--out`` (default
``benchmarks/results``). ``--quick`` reads a few files per corpus and writes to a temporary folder
(or ``--out``, which must then not be ``benchmarks/results``). Generated files go to ``--work DIR``
(kept) or a temporary folder (deleted).

    .venv/bin/python benchmarks/readers.py            # full run, a few minutes on one core
    .venv/bin/python benchmarks/readers.py --quick    # smoke test
    .venv/bin/python benchmarks/readers.py --corpus ~/cifs --out /tmp/readers   # your own files
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import sys
import sysconfig
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
READERS = ("atomssl", "pymatgen", "ase")
PLAIN = ("pymatgen", "ase")
CIF_SUFFIX = re.compile(r"\.m?cif(\.(gz|bz2|xz))?$", re.IGNORECASE)
R_GROUPS = {
    146: "R 3",
    148: "R -3",
    155: "R 3 2",
    160: "R 3 m",
    161: "R 3 c",
    166: "R -3 m",
    167: "R -3 c",
}
# obverse hexagonal -> rhombohedral axes (ITA): rows are a_R, b_R, c_R in hexagonal fractions
HEX_TO_RHOMB = np.array([[2 / 3, 1 / 3, 1 / 3], [-1 / 3, 1 / 3, 1 / 3], [-1 / 3, -2 / 3, 1 / 3]])
RHOMB_STYLES = ("{rhombohedral axes}", ":R", "")  # cycled over the R-group structures

COMPOSITION_ATOL_GENERATED = 1e-3  # atom fractions, generated files (truth known exactly)
COMPOSITION_RTOL_DECLARED = 0.01  # atom fractions, relative, declared formulas (printed rounded)
COUNT_RTOL = 0.01  # number density / atom count
DISORDER_KIND = (
    "partial occupancy/disorder"  # atomssl's refusal by its default policy disorder="refuse"
)
# what an atomssl "unreadable file" refusal is about, from its reason (first match wins)
ATOMSSL_REASONS = [
    ("could not parse as cif", "not parseable"),
    ("no data block with atom sites", "no atom sites"),
    ("readers disagree", "readers disagree"),
    ("could not generate the operations", "space group not applied"),
    ("do not match the declared formula", "formula mismatch"),
    ("atoms read but the declared formula", "atom count vs Z"),
    ("not a text file", "not text"),
]

CORPUS_ORDER = [
    "pymatgen-tests",
    "robocrys-minerals",
    "pyxtal-cifs",
    "site-packages",
    "derived: 3-decimal coordinates",
    "derived: rhombohedral axes, no operations",
    "derived: operations loop removed",
    "derived: truncated at a row boundary",
    "derived: truncated inside a row",
    "derived: H declared, sites deleted",
]


# ================================================================================== truth
@dataclass
class Truth:
    """What one data block should read as. ``source`` None: unknown."""

    source: str | None
    composition: dict[str, float] = field(default_factory=dict)  # element -> amount (any scale)
    counts: list[float] = field(
        default_factory=list
    )  # allowed atom counts (declared formula with Z)
    density: float | None = None  # atoms per A^3 (generated files)

    def describe(self) -> str:
        if self.source is None:
            return "unknown"
        s = _formula(self.composition)
        if self.density is not None:
            s += f", {self.density:.5f} atoms/A^3"
        if self.counts:
            s += ", " + " or ".join(f"{c:g}" for c in self.counts) + " atoms"
        return f"{s} ({self.source})"


def _formula(comp: dict[str, float]) -> str:
    def num(x: float) -> str:
        return "" if abs(x - 1) < 1e-6 else (f"{x:.0f}" if abs(x - round(x)) < 1e-6 else f"{x:.4g}")

    return " ".join(f"{el}{num(n)}" for el, n in sorted(comp.items()) if n > 1e-9) or "(nothing)"


def _fractions(comp: dict[str, float]) -> dict[str, float]:
    total = sum(v for v in comp.values() if v > 0)
    return {k: v / total for k, v in comp.items() if v > 1e-9} if total > 0 else {}


def same_composition(
    a: dict[str, float], b: dict[str, float], atol: float = 0.0, rtol: float = 0.0
) -> bool:
    fa, fb = _fractions(a), _fractions(b)
    if set(fa) != set(fb) or not fa:
        return False
    return all(abs(fa[k] - fb[k]) <= atol + rtol * max(fa[k], fb[k]) for k in fa)


def truth_of_structure(struct) -> Truth:
    """Ground truth of a pymatgen structure: occupancy-weighted composition and number density."""
    comp = element_amounts(struct)
    return Truth("source structure", dict(comp), density=sum(comp.values()) / struct.volume)


def element_amounts(struct) -> Counter:
    """Element -> occupancy-weighted amount in the cell of a pymatgen structure (oxidation states dropped)."""
    out: Counter = Counter()
    for site in struct:
        for sp, occ in site.species.items():
            out[sp.element.symbol if hasattr(sp, "element") and sp.element else sp.symbol] += float(
                occ
            )
    return out


# ----------------------------------------------------------------------- CIF text (independent scan)
_DATA = re.compile(r"^\s*data_(\S*)", re.IGNORECASE)
_TOKEN = re.compile(r"'[^']*'(?=\s|$)|\"[^\"]*\"(?=\s|$)|\S+")
_ELEMENT_TOKEN = re.compile(r"^([A-Z][a-z]?)(\d*\.?\d*)$")


def split_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(name, lines) of each ``data_`` block (text before the first block is dropped)."""
    blocks: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        m = _DATA.match(line)
        if m:
            blocks.append((m.group(1), []))
        elif blocks:
            blocks[-1][1].append(line)
    return blocks


def block_has_atoms(lines: list[str]) -> bool:
    return any(re.match(r"^\s*_atom_site_(fract|cartn)_x\s*$", ln, re.IGNORECASE) for ln in lines)


def tag_value(lines: list[str], tag: str) -> str | None:
    """The first non-empty value of a single-valued tag (same line, next line, or a ;-text field);
    None if absent. Files from some databases (AMCSD) repeat a tag with an empty value ('') after the
    real one; both pymatgen and ASE keep the last value, the truth here is the non-empty one."""
    for value in _tag_values(lines, tag):
        if value and value not in ("?", "."):
            return value
    return None


def _tag_values(lines: list[str], tag: str) -> Iterator[str]:
    for i, line in enumerate(lines):
        parts = line.split(None, 1)
        if not parts or parts[0].lower() != tag.lower():
            continue
        if len(parts) == 2 and parts[1].strip():
            value = parts[1].strip()
        else:
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j >= len(lines):
                return
            if lines[j].startswith(";"):
                body = [lines[j][1:]]
                j += 1
                while j < len(lines) and not lines[j].startswith(";"):
                    body.append(lines[j])
                    j += 1
                value = " ".join(body)
            else:
                value = lines[j].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        yield value.strip()


def parse_formula(text: str | None) -> dict[str, float] | None:
    """'C9 H10 N2 O2' -> amounts; None when it is not a plain element list."""
    from ase.data import atomic_numbers

    if not text or text.strip() in ("?", "."):
        return None
    out: Counter = Counter()
    for tok in text.replace(",", " ").split():
        m = _ELEMENT_TOKEN.match(tok)
        if not m:
            return None
        el = "H" if m.group(1) == "D" else m.group(1)
        if el not in atomic_numbers or el == "X":
            return None
        try:
            out[el] += float(m.group(2)) if m.group(2) not in ("", ".") else 1.0
        except ValueError:
            return None
    return dict(out) if out and sum(out.values()) > 0 else None


def parse_moiety(text: str | None) -> dict[str, float] | None:
    """'2(C6 H8 N2 2+), 2(Cl1 1-), H2 O' -> summed amounts (charges dropped); None if anything is odd."""
    if not text or text.strip() in ("?", "."):
        return None
    total: Counter = Counter()
    for part in text.split(","):
        part = part.strip()
        m = re.match(r"^(\d*\.?\d+)\s*\((.*)\)$", part)
        mult, body = (float(m.group(1)), m.group(2)) if m else (1.0, part)
        body = re.sub(r"(?<=\s)\d*[+-](?=\s|$)", " ", " " + body + " ")  # '2+', '1-', '+'
        amounts = parse_formula(body)
        if amounts is None:
            return None
        for k, v in amounts.items():
            total[k] += mult * v
    return dict(total) or None


def declared_truth(lines: list[str]) -> Truth:
    """Truth of a real file's block: its _chemical_formula_sum (with Z), else a parseable moiety, else unknown."""
    formula = parse_formula(tag_value(lines, "_chemical_formula_sum"))
    if formula is not None:
        counts: list[float] = []
        z_text = tag_value(lines, "_cell_formula_units_Z")
        m = re.match(r"^\s*(\d*\.?\d+)", z_text or "")
        z = float(m.group(1)) if m else None
        if z and z > 0:
            per_unit = sum(formula.values())
            counts.append(z * per_unit)
            if (
                all(abs(v / z - round(v / z)) < 1e-6 for v in formula.values())
                and abs(z - 1) > 1e-9
            ):
                counts.append(
                    per_unit
                )  # the formula already is the cell content (pymatgen's CifWriter)
        return Truth("_chemical_formula_sum" + (" and Z" if counts else ""), formula, counts)
    moiety = parse_moiety(tag_value(lines, "_chemical_formula_moiety"))
    if moiety is not None:
        return Truth("_chemical_formula_moiety (composition only)", moiety)
    return Truth(None)


def truths_of_text(text: str) -> list[Truth]:
    return [declared_truth(lines) for _, lines in split_blocks(text) if block_has_atoms(lines)]


# ================================================================================== readings
@dataclass
class Reading:
    """One reader's result on one file: structures (per block) or the refusal."""

    blocks: list[dict] = field(default_factory=list)  # {"composition", "n_atoms", "volume"}
    refused: str | None = None  # category: atomssl error kind / exception type
    detail: str = ""  # the message
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    crashed: bool = False  # atomssl raised something other than a StructureError

    def describe(self) -> str:
        if self.refused is not None:
            return f"refused: {self.refused}: {self.detail}"
        return "; ".join(
            f"{_formula(b['composition'])} ({b['n_atoms']:g} atoms, {b['n_atoms'] / b['volume']:.5f}/A^3)"
            if b["volume"] > 0
            else f"{_formula(b['composition'])} ({b['n_atoms']:g} atoms, no volume)"
            for b in self.blocks
        )


def _one_line(msg: Any, limit: int = 300) -> str:
    s = " ".join(str(msg).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _block(comp: dict[str, float], volume: float) -> dict:
    return {
        "composition": dict(comp),
        "n_atoms": float(sum(comp.values())),
        "volume": float(volume),
    }


def read_atomssl(path: Path) -> Reading:
    from atomssl.data import read
    from atomssl.errors import StructureError

    res = Reading()
    t = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structs = read(path, format="cif")
    except StructureError as err:
        res.refused, res.detail = err.kind, _one_line(err.reason)
    except Exception as exc:  # a bug: atomssl must only raise StructureError on bad input
        res.refused, res.detail, res.crashed = f"CRASH {type(exc).__name__}", _one_line(exc), True
    else:
        from ase.data import chemical_symbols

        for s in structs:
            comp = Counter(chemical_symbols[int(z)] for z in s.numbers)
            res.blocks.append(_block(comp, float(s.volume)))
            res.warnings += [_one_line(w) for w in s.warnings]
        if not structs:
            res.refused, res.detail = "no structure returned", ""
    res.seconds = time.perf_counter() - t
    return res


def read_pymatgen(path: Path) -> Reading:
    from pymatgen.io.cif import CifParser

    res = Reading()
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structs = CifParser(path).parse_structures(primitive=False)
        except Exception as exc:
            res.refused, res.detail = type(exc).__name__, _one_line(exc)
            structs = []
        else:
            for s in structs:
                res.blocks.append(_block(element_amounts(s), s.volume))
            if not structs:
                res.refused = "no structure returned"
    res.warnings = _dedupe(_one_line(w.message) for w in caught if not _is_deprecation(w))
    res.seconds = time.perf_counter() - t
    return res


def read_ase(path: Path) -> Reading:
    import ase.io

    res = Reading()
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            images = ase.io.read(path, index=":", format="cif")
        except Exception as exc:
            res.refused, res.detail = type(exc).__name__, _one_line(exc)
            images = []
        else:
            for atoms in images:
                vol = float(abs(np.linalg.det(atoms.cell.array))) if atoms.cell.rank == 3 else 0.0
                res.blocks.append(_block(Counter(atoms.get_chemical_symbols()), vol))
            if not images:
                res.refused = "no structure returned"
    res.warnings = _dedupe(_one_line(w.message) for w in caught if not _is_deprecation(w))
    res.seconds = time.perf_counter() - t
    return res


def _is_deprecation(w) -> bool:
    return issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


READ_FUNCTIONS = {"atomssl": read_atomssl, "pymatgen": read_pymatgen, "ase": read_ase}


# ================================================================================== judging
def judge_block(block: dict, truth: Truth) -> tuple[str, str]:
    """('correct' | 'wrong' | 'unknown', why) for one structure against one block's truth."""
    if truth.source is None:
        return "unknown", ""
    comp = block["composition"]
    if truth.density is not None:  # generated: exact truth
        if not same_composition(comp, truth.composition, atol=COMPOSITION_ATOL_GENERATED):
            return "wrong", f"composition {_formula(comp)} instead of {_formula(truth.composition)}"
        density = block["n_atoms"] / block["volume"] if block["volume"] > 0 else float("nan")
        if not abs(density - truth.density) <= COUNT_RTOL * truth.density:
            return "wrong", f"number density {density:.5f} instead of {truth.density:.5f} atoms/A^3"
        return "correct", ""
    if not same_composition(comp, truth.composition, rtol=COMPOSITION_RTOL_DECLARED):
        return "wrong", f"composition {_formula(comp)}, declared {_formula(truth.composition)}"
    if truth.counts and not any(
        abs(block["n_atoms"] - c) <= COUNT_RTOL * c + 1e-6 for c in truth.counts
    ):
        return (
            "wrong",
            f"{block['n_atoms']:g} atoms, declared formula and Z make {' or '.join(f'{c:g}' for c in truth.counts)}",
        )
    return "correct", ""


def judge(reading: Reading, truths: list[Truth]) -> tuple[str, str]:
    """Verdict of one reader on one file: correct / wrong / refused / unknown, with the reason."""
    if reading.refused is not None:
        return "refused", reading.refused
    if len(reading.blocks) != len(truths):
        return (
            "wrong",
            f"{len(reading.blocks)} structure(s) for {len(truths)} data block(s) with atom sites",
        )
    verdicts = [judge_block(b, t) for b, t in zip(reading.blocks, truths)]
    wrong = [why for v, why in verdicts if v == "wrong"]
    if wrong:
        return "wrong", "; ".join(wrong)
    if all(v == "correct" for v, _ in verdicts):
        return "correct", ""
    return "unknown", ""


def refusal_about(reason: str) -> str:
    """A short category for an atomssl refusal reason (its error kinds are coarse)."""
    for needle, label in ATOMSSL_REASONS:
        if needle in reason:
            return label
    return "other"


def agree(a: Reading, b: Reading) -> bool | None:
    """Whether two readings match (composition within 1%, density within 1%, block by block); None if
    either refused."""
    if a.refused is not None or b.refused is not None:
        return None
    if len(a.blocks) != len(b.blocks):
        return False
    for x, y in zip(a.blocks, b.blocks):
        if not same_composition(x["composition"], y["composition"], rtol=0.01):
            return False
        if x["volume"] <= 0 or y["volume"] <= 0:
            return False
        dx, dy = x["n_atoms"] / x["volume"], y["n_atoms"] / y["volume"]
        if abs(dx - dy) > 0.01 * max(dx, dy):
            return False
    return True


@dataclass
class Item:
    """One file to read: where it is, which corpus, and (generated files) its truth."""

    corpus: str
    name: str  # shown in the report
    path: Path
    truths: list[Truth] | None = None  # None: taken from the file's declared formulas
    note: str = ""


def evaluate(item: Item) -> dict:
    """Read one file three ways and judge each reading: the file's record for the report."""
    truths = item.truths
    if truths is None:
        try:
            with _open_text(item.path) as fh:
                truths = truths_of_text(fh.read())
        except (OSError, UnicodeDecodeError, EOFError):
            truths = []
    readings = {name: fn(item.path) for name, fn in READ_FUNCTIONS.items()}
    rec: dict[str, Any] = {
        "corpus": item.corpus,
        "file": item.name,
        "note": item.note,
        "truth": [t.describe() for t in truths],
        "truth_known": bool(truths) and all(t.source is not None for t in truths),
        "readers": {},
        "agreement": {
            "atomssl~pymatgen": agree(readings["atomssl"], readings["pymatgen"]),
            "atomssl~ase": agree(readings["atomssl"], readings["ase"]),
            "pymatgen~ase": agree(readings["pymatgen"], readings["ase"]),
        },
    }
    for name, r in readings.items():
        verdict, why = judge(r, truths)
        rec["readers"][name] = {
            "verdict": verdict,
            "why": why,
            "read": r.describe(),
            "warnings": r.warnings[:5],
            "n_warnings": len(r.warnings),
            "seconds": round(r.seconds, 4),
            "crashed": r.crashed,
        }
        if name == "atomssl" and verdict == "refused" and why == "unreadable file":
            rec["readers"][name]["about"] = refusal_about(r.detail)
    return rec


def _open_text(path: Path):
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    if name.endswith(".bz2"):
        import bz2

        return bz2.open(path, "rt", encoding="utf-8", errors="replace")
    if name.endswith(".xz"):
        import lzma

        return lzma.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


# ================================================================================== corpora
def site_packages() -> list[Path]:
    paths = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    return sorted(p for p in paths if p.is_dir())


def package_dir(name: str) -> Path | None:
    """An installed package's folder, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    for sp in site_packages():
        if (sp / name).is_dir():
            return sp / name
    return None


def display_path(path: Path) -> str:
    p = path.resolve()
    for sp in site_packages():
        if p.is_relative_to(sp):
            return "site-packages/" + str(p.relative_to(sp))
    return str(path)


def walk_cifs(root: Path, exclude: Iterable[Path] = ()) -> Iterator[Path]:
    """CIF files under ``root`` in a stable order, streamed (folders walked one at a time)."""
    excluded = {Path(e).resolve() for e in exclude}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath).resolve()
        dirnames[:] = sorted(
            d for d in dirnames if (here / d).resolve() not in excluded and d != "__pycache__"
        )
        for f in sorted(filenames):
            if CIF_SUFFIX.search(f):
                yield Path(dirpath) / f


def pymatgen_test_structures() -> Iterator[tuple[str, Any]]:
    from pymatgen.core import Structure

    folder = package_dir("pymatgen")
    for f in sorted((folder / "util" / "structures").glob("*.json")) if folder else []:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield f.stem, Structure.from_file(f)


def robocrys_minerals() -> Iterator[tuple[str, Any]]:
    """robocrys's mineral database: a pandas 'split' JSON table whose 'structure' column holds
    pymatgen Structure dicts (read without pandas or robocrys)."""
    from pymatgen.core import Structure

    folder = package_dir("robocrys")
    path = folder / "condense" / "mineral_db.json.gz" if folder else None
    if path is None or not path.is_file():
        return
    with gzip.open(path, "rt") as fh:
        table = json.load(fh)
    cols = table["columns"]
    for i, (label, row) in enumerate(zip(table["index"], table["data"])):
        rec = dict(zip(cols, row))
        mineral = re.sub(r"[^A-Za-z0-9_-]+", "-", str(rec.get("mineral") or "mineral")).strip("-")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield f"{i:03d}_{mineral}_{label}", Structure.from_dict(rec["structure"])


def symmetrized_cif(struct) -> tuple[str, bool]:
    """CifWriter(struct, symprec=0.01) text, or P1 when symmetry finding fails; (text, symmetrized)."""
    from pymatgen.io.cif import CifWriter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return str(CifWriter(struct, symprec=0.01)), True
        except Exception:
            return str(CifWriter(struct)), False


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ----------------------------------------------------------------------- CIF loop editing
@dataclass
class Loop:
    start: int  # index of the 'loop_' line
    tags: list[str]  # lower-case
    rows: list[int]  # line indices, one row per line


def find_loop(lines: list[str], tag: str) -> Loop | None:
    """The loop holding ``tag`` when each of its rows is one line with one value per tag."""
    i = 0
    while i < len(lines):
        if lines[i].strip().lower() != "loop_":
            i += 1
            continue
        start, j, tags = i, i + 1, []
        while j < len(lines) and lines[j].strip().startswith("_"):
            tags.append(lines[j].split()[0].lower())
            j += 1
        rows = []
        while j < len(lines):
            s = lines[j].strip()
            if not s or s.lower() == "loop_" or s.startswith(("_", "#")) or _DATA.match(s):
                break
            rows.append(j)
            j += 1
        if tag.lower() in tags:
            if rows and all(len(_TOKEN.findall(lines[r])) == len(tags) for r in rows):
                return Loop(start, tags, rows)
            return None
        i = j
    return None


def row_values(line: str) -> list[str]:
    return _TOKEN.findall(line)


def row_element(loop: Loop, line: str) -> str | None:
    vals = row_values(line)
    col = "_atom_site_type_symbol" if "_atom_site_type_symbol" in loop.tags else "_atom_site_label"
    m = re.match(r"[A-Z][a-z]?", vals[loop.tags.index(col)].strip("'\""))
    if not m:
        return None
    el = m.group(0)
    from ase.data import atomic_numbers

    if el not in atomic_numbers and el[:1] in atomic_numbers:
        el = el[:1]  # 'Ha1' style labels
    return "H" if el == "D" else el


def three_decimals(text: str) -> str | None:
    """Fractional coordinates of the atom-site loop printed with 3 decimals."""
    lines = text.splitlines()
    loop = find_loop(lines, "_atom_site_fract_x")
    if loop is None:
        return None
    cols = [
        loop.tags.index(t)
        for t in ("_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z")
    ]
    for r in loop.rows:
        vals = row_values(lines[r])
        for c in cols:
            vals[c] = f"{float(vals[c]):.3f}"
        lines[r] = "  " + "  ".join(vals)
    return "\n".join(lines) + "\n"


def without_operations(text: str) -> str | None:
    """The symmetry-operations loop removed, the space-group name and number kept."""
    lines = text.splitlines()
    for tag in ("_symmetry_equiv_pos_as_xyz", "_space_group_symop_operation_xyz"):
        loop = find_loop(lines, tag)
        if loop is not None:
            end = loop.rows[-1] + 1
            return "\n".join(lines[: loop.start] + lines[end:]) + "\n"
    return None


def truncated(text: str, inside_row: bool) -> str | None:
    """The file cut in the middle of the atom-site loop: after half its rows, or inside the next row."""
    lines = text.splitlines()
    loop = find_loop(lines, "_atom_site_fract_x")
    if loop is None or (not inside_row and len(loop.rows) < 2):
        return None
    keep = len(loop.rows) // 2
    if inside_row:
        line = lines[loop.rows[keep]]
        cut = line[: len(line) // 2].rstrip()
        return "\n".join(lines[: loop.rows[keep]] + [cut])  # no final newline: cut mid-file
    return "\n".join(lines[: loop.rows[keep]]) + "\n"


def without_hydrogen(text: str) -> str | None:
    """Every H/D atom-site row deleted (the formula still declares them); None if none or unparseable."""
    lines = text.splitlines()
    loop = find_loop(lines, "_atom_site_fract_x")
    if loop is None:
        return None
    drop = {r for r in loop.rows if row_element(loop, lines[r]) == "H"}
    if not drop or len(drop) == len(loop.rows):
        return None
    return "\n".join(ln for i, ln in enumerate(lines) if i not in drop) + "\n"


def rhombohedral_cif(struct, name: str, style: str) -> str | None:
    """The primitive rhombohedral cell of an R-group structure, written with the asymmetric-unit sites
    only and a space-group name with a setting note, no operations loop (what a user gets from some
    databases); None if the structure is not in an R group (or is disordered). Its truth is the source
    structure's (same composition and number density)."""
    from pymatgen.core import Lattice
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    if not struct.is_ordered:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sga = SpacegroupAnalyzer(struct, symprec=0.01)
        number = sga.get_space_group_number()
        if number not in R_GROUPS:
            return None
        conv = sga.get_refined_structure()  # hexagonal axes, obverse
        sym = SpacegroupAnalyzer(conv, symprec=0.01).get_symmetrized_structure()
    hexagonal = conv.lattice.matrix
    rhomb = HEX_TO_RHOMB @ hexagonal
    to_rhomb = np.linalg.inv(HEX_TO_RHOMB)
    lat = Lattice(rhomb)
    reps = []
    for sites in sym.equivalent_sites:
        site = min(sites, key=lambda s: tuple(abs(x) for x in s.frac_coords))
        r = np.mod(site.frac_coords @ to_rhomb, 1.0)
        reps.append(
            (
                site.specie.element.symbol
                if hasattr(site.specie, "element")
                else site.specie.symbol,
                r,
            )
        )
    comp = element_amounts(conv)
    reduced, factor = _reduce(comp)
    z = factor / 3
    if abs(z - round(z)) > 1e-6:
        return None
    full = f"'{R_GROUPS[number]}{(' ' + style) if style.startswith('{') else style}'"
    lines = [
        f"data_{name}",
        f"_chemical_formula_sum '{' '.join(f'{el}{_int(n)}' for el, n in sorted(reduced.items()))}'",
        f"_cell_formula_units_Z {round(z)}",
        f"_cell_length_a {lat.a:.6f}",
        f"_cell_length_b {lat.b:.6f}",
        f"_cell_length_c {lat.c:.6f}",
        f"_cell_angle_alpha {lat.alpha:.5f}",
        f"_cell_angle_beta {lat.beta:.5f}",
        f"_cell_angle_gamma {lat.gamma:.5f}",
        f"_symmetry_space_group_name_H-M {full}",
        "loop_",
        "_atom_site_label",
        "_atom_site_type_symbol",
        "_atom_site_fract_x",
        "_atom_site_fract_y",
        "_atom_site_fract_z",
    ]
    for k, (el, r) in enumerate(reps, 1):
        lines.append(f"{el}{k} {el} {r[0]:.6f} {r[1]:.6f} {r[2]:.6f}")
    return "\n".join(lines) + "\n"


def _reduce(comp: dict[str, float]) -> tuple[dict[str, float], int]:
    from math import gcd

    ints = {k: int(round(v)) for k, v in comp.items()}
    g = 0
    for v in ints.values():
        g = gcd(g, v)
    g = g or 1
    return {k: v // g for k, v in ints.items()}, g


def _int(n: float) -> str:
    return "" if n == 1 else f"{n:g}"


# ----------------------------------------------------------------------- the corpora
def ground_truth_structures() -> Iterator[tuple[str, str, Any]]:
    for name, s in pymatgen_test_structures():
        yield "pymatgen-tests", name, s
    for name, s in robocrys_minerals():
        yield "robocrys-minerals", name, s


def generated_items(work: Path, limit: int | None, derived_limit: int) -> Iterator[Item]:
    """The ground-truth corpora and the derived set, each file written to ``work`` just before it is read."""
    per_corpus: Counter = Counter()
    derived: Counter = Counter()
    rhomb_index = 0
    for i, (corpus, name, struct) in enumerate(ground_truth_structures()):
        text, symmetrized = symmetrized_cif(struct)
        truth = [truth_of_structure(struct)]
        is_p1 = (
            not symmetrized
            or re.search(r"_symmetry_space_group_name_H-M\s+'?P\s*1'?\s*$", text, re.M) is not None
        )
        if limit is None or per_corpus[corpus] < limit:
            per_corpus[corpus] += 1
            note = "" if symmetrized else "symmetry finding failed: written in P1"
            yield Item(
                corpus,
                f"{corpus}/{name}.cif",
                _write(work / corpus / f"{name}.cif", text),
                truth,
                note,
            )

        def want(kind: str) -> bool:
            return derived[kind] < (derived_limit if limit is None else min(limit, derived_limit))

        def emit(
            kind: str, fname: str, body: str | None, note: str = "", truth=truth
        ) -> Iterator[Item]:
            if body is None or not want(kind):
                return
            derived[kind] += 1
            slug = kind.split(": ", 1)[1].replace(" ", "-").replace(",", "")
            yield Item(
                kind,
                f"derived/{slug}/{fname}",
                _write(work / "derived" / slug / fname, body),
                truth,
                note,
            )

        first = i < derived_limit
        if first and not is_p1:
            yield from emit("derived: 3-decimal coordinates", f"{name}.cif", three_decimals(text))
            yield from emit(
                "derived: operations loop removed", f"{name}.cif", without_operations(text)
            )
        if first:
            yield from emit(
                "derived: truncated at a row boundary", f"{name}.cif", truncated(text, False)
            )
            yield from emit("derived: truncated inside a row", f"{name}.cif", truncated(text, True))
        if "H" in element_amounts(struct):
            yield from emit(
                "derived: H declared, sites deleted", f"{name}.cif", without_hydrogen(text)
            )
        if want("derived: rhombohedral axes, no operations"):
            style = RHOMB_STYLES[rhomb_index % len(RHOMB_STYLES)]
            made = rhombohedral_cif(struct, name, style)
            if made is not None:
                rhomb_index += 1
                tag = {"{rhombohedral axes}": "braces", ":R": "colon-R", "": "bare"}[style]
                yield from emit(
                    "derived: rhombohedral axes, no operations",
                    f"{name}_{tag}.cif",
                    made,
                    f"name style {style or 'bare'!r}",
                )


def real_items(
    corpora: list[Path], limit: int | None, work: Path, derived_limit: int
) -> Iterator[Item]:
    """pyxtal's database CIFs, the rest of site-packages, the user's folders; plus H-deleted
    copies of the real files with H (truth: their declared formula)."""
    pyxtal = package_dir("pyxtal")
    pyxtal_cifs = pyxtal / "database" / "cifs" if pyxtal else None
    h_deleted = 0

    def take(corpus: str, paths: Iterable[Path]) -> Iterator[Item]:
        nonlocal h_deleted
        n = 0
        for p in paths:
            if limit is not None and n >= limit:
                return
            n += 1
            yield Item(corpus, display_path(p), p)
            if corpus != "pyxtal-cifs" or h_deleted >= (
                derived_limit if limit is None else min(limit, derived_limit)
            ):
                continue
            try:
                text = p.read_text(errors="replace")
            except OSError:
                continue
            truths = truths_of_text(text)
            if (
                len(truths) != 1
                or not truths[0].source
                or not truths[0].source.startswith("_chemical_formula_sum")
            ):
                continue
            if "H" not in truths[0].composition:
                continue
            body = without_hydrogen(text)
            if body is not None:
                h_deleted += 1
                kind = "derived: H declared, sites deleted"
                out = _write(
                    work / "derived" / "H-declared-sites-deleted" / f"pyxtal_{p.name}", body
                )
                yield Item(
                    kind,
                    f"derived/H-declared-sites-deleted/pyxtal_{p.name}",
                    out,
                    None,
                    "from a real pyxtal CIF",
                )

    if pyxtal_cifs and pyxtal_cifs.is_dir():
        yield from take(
            "pyxtal-cifs", (p for p in sorted(pyxtal_cifs.iterdir()) if CIF_SUFFIX.search(p.name))
        )
    user = [Path(c).resolve() for c in corpora]
    for sp in site_packages():
        yield from take(
            "site-packages", walk_cifs(sp, exclude=[pyxtal_cifs] if pyxtal_cifs else [])
        )
    for c in user:
        yield from take(f"corpus:{c}", walk_cifs(c))


# ================================================================================== summary
def summarize(records: list[dict]) -> dict:
    """Counts per corpus and reader: files, correct, wrong (and wrong without any warning), refused
    by reason, unknown; plus reader agreement on the files whose truth is unknown."""
    out: dict[str, dict] = {}
    for rec in records:
        for key in (rec["corpus"], "all"):
            c = out.setdefault(key, {"files": 0, "readers": {}, "unknown_agreement": Counter()})
            c["files"] += 1
            for name in READERS:
                r = rec["readers"][name]
                s = c["readers"].setdefault(
                    name,
                    {
                        "correct": 0,
                        "wrong": 0,
                        "wrong_silent": 0,
                        "refused": 0,
                        "unknown": 0,
                        "refused_by": Counter(),
                        "seconds": 0.0,
                    },
                )
                s[r["verdict"]] += 1
                s["seconds"] += r["seconds"]
                if r["verdict"] == "wrong" and not r["n_warnings"]:
                    s["wrong_silent"] += 1
                if r["verdict"] == "refused":
                    s["refused_by"][r["why"]] += 1
                    if name == "atomssl" and r.get("about"):
                        s.setdefault("refused_about", Counter())[r["about"]] += 1
            if not rec["truth_known"]:
                for pair, ok in rec["agreement"].items():
                    c["unknown_agreement"][
                        f"{pair} {'agree' if ok else 'differ' if ok is False else 'n/a'}"
                    ] += 1
    for c in out.values():
        c["unknown_agreement"] = dict(sorted(c["unknown_agreement"].items()))
        for s in c["readers"].values():
            s["refused_by"] = dict(s["refused_by"].most_common())
            if "refused_about" in s:
                s["refused_about"] = dict(s["refused_about"].most_common())
            s["seconds"] = round(s["seconds"], 2)
    return out


def problem_lists(records: list[dict]) -> dict[str, list[dict]]:
    """The files that show a bug in atomssl's reader (goal: all lists empty, review the last)."""
    wrong, refused_but_readable, by_policy, crashes, disagree_unknown = [], [], [], [], []
    for rec in records:
        a = rec["readers"]["atomssl"]
        base = {
            "file": rec["file"],
            "corpus": rec["corpus"],
            "truth": rec["truth"],
            "note": rec["note"],
        }
        if a["verdict"] == "wrong":
            wrong.append(
                base
                | {"atomssl_read": a["read"], "why": a["why"], "atomssl_warnings": a["warnings"]}
            )
        plain_ok = [p for p in PLAIN if rec["readers"][p]["verdict"] == "correct"]
        if a["verdict"] == "refused" and plain_ok:
            entry = base | {
                "atomssl_refused": a["read"],
                "read_correctly_by": plain_ok,
                "plain_read": {p: rec["readers"][p]["read"] for p in plain_ok},
            }
            (by_policy if a["why"] == DISORDER_KIND else refused_but_readable).append(entry)
        if a["crashed"]:
            crashes.append(base | {"atomssl": a["read"]})
        if not rec["truth_known"] and a["verdict"] != "refused":
            differ = [p for p in PLAIN if rec["agreement"][f"atomssl~{p}"] is False]
            if differ:
                disagree_unknown.append(
                    base
                    | {
                        "atomssl_read": a["read"],
                        "differs_from": {p: rec["readers"][p]["read"] for p in differ},
                    }
                )
    return {
        "atomssl_wrong": wrong,
        "atomssl_refused_plain_correct": refused_but_readable,
        "atomssl_refused_by_disorder_policy": by_policy,
        "atomssl_crashed": crashes,
        "unknown_truth_atomssl_disagrees": disagree_unknown,
    }


def _cell_reasons(s: dict) -> str:
    text = "; ".join(f"{k} x{v}" for k, v in s["refused_by"].items()) or "-"
    if s.get("refused_about"):
        text += " (about: " + ", ".join(f"{k} {v}" for k, v in s["refused_about"].items()) + ")"
    return text


def render_markdown(rep: dict) -> str:
    lines = [
        f"`{rep['command']}`",
        "",
        "# CIF readers side by side: atomssl, plain pymatgen, plain ASE",
        "",
        f"- date: {rep['date']}; run time {rep['seconds_total']:.0f} s (one process, shared 2-core machine)",
        f"- versions: {', '.join(f'{k} {v}' for k, v in rep['versions'].items())}",
        '- readers: atomssl `read(path, format="cif")` (defaults: disorder=refuse, formula=refuse, cif_reader=auto, '
        "merge_tolerance=0.01); pymatgen `CifParser(path).parse_structures(primitive=False)`; ASE "
        '`ase.io.read(path, index=":", format="cif")`',
        "- truth: generated files (pymatgen-tests, robocrys-minerals, derived: ...) are judged against their source "
        "structure (composition with atom fractions within 0.001, number density within 1%); real files against "
        "their `_chemical_formula_sum` (fractions within 1%; with `_cell_formula_units_Z` the atom count within 1% of "
        "Z x formula atoms, or of the formula's atoms when every amount is a multiple of Z, CifWriter's convention), "
        "else a parseable `_chemical_formula_moiety` (composition only), else unknown. A refusal is never wrong; "
        "'wrong, silent' = read wrongly without a single warning.",
    ]
    if rep["quick"]:
        lines.append(f"- QUICK run: at most {rep['settings']['limit']} files per corpus")
    lines += ["", "## All corpora", ""]
    lines += _table(rep["summary"]["all"])
    lines += ["", "## Per corpus", ""]
    for corpus, c in rep["summary"].items():
        if corpus == "all":
            continue
        lines += [f"### {corpus} ({c['files']} files)", ""]
        lines += _table(c)
        if c["unknown_agreement"]:
            lines += [
                "",
                "Agreement on files without a known truth: "
                + ", ".join(f"{k} {v}" for k, v in c["unknown_agreement"].items()),
            ]
        lines.append("")
    p = rep["problems"]
    lines += ["## Files atomssl reads wrongly (goal: none)", ""]
    lines += [
        f"- `{x['file']}`: truth {' | '.join(x['truth'])}; atomssl read {x['atomssl_read']}: {x['why']}"
        + (
            f"; warnings: {' | '.join(x['atomssl_warnings'])}"
            if x["atomssl_warnings"]
            else "; no warning"
        )
        for x in p["atomssl_wrong"]
    ] or ["None."]
    lines += ["", "## Files a plain reader reads correctly but atomssl refuses (goal: none)", ""]
    lines.append("Other than by the disorder policy:")
    lines.append("")
    lines += [
        f"- `{x['file']}` (read correctly by {', '.join(x['read_correctly_by'])}; truth {' | '.join(x['truth'])}"
        + (f"; {x['note']}" if x["note"] else "")
        + f"): atomssl {x['atomssl_refused']}"
        for x in p["atomssl_refused_plain_correct"]
    ] or ["None."]
    lines += [
        "",
        'Refused by atomssl\'s default disorder policy (`disorder="refuse"`, intended; `disorder="majority"` or '
        '`"order"` reads them as an ordered approximation, whose composition then differs from the fractional truth):',
        "",
    ]
    lines += [
        f"- `{x['file']}` (read correctly by {', '.join(x['read_correctly_by'])}): atomssl {x['atomssl_refused']}"
        for x in p["atomssl_refused_by_disorder_policy"]
    ] or ["None."]
    lines += ["", "## atomssl crashes: exceptions other than StructureError (goal: none)", ""]
    lines += [f"- `{x['file']}`: {x['atomssl']}" for x in p["atomssl_crashed"]] or ["None."]
    lines += [
        "",
        "## Files without a known truth where atomssl's reading differs from a plain reader's (review)",
        "",
    ]
    lines += [
        f"- `{x['file']}`: atomssl {x['atomssl_read']}; "
        + "; ".join(f"{k} {v}" for k, v in x["differs_from"].items())
        for x in p["unknown_truth_atomssl_disagrees"]
    ] or ["None."]
    lines += [
        "",
        "Per-file records (verdicts, what each reader read, warnings, timings): `readers.json`.",
        "",
    ]
    return "\n".join(lines)


def _table(c: dict) -> list[str]:
    rows = [
        "| reader | files | correct | wrong | wrong, silent | refused | unknown | refused by reason | s |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for name in READERS:
        s = c["readers"].get(name)
        if s is None:
            continue
        rows.append(
            f"| {name} | {c['files']} | {s['correct']} | {s['wrong']} | {s['wrong_silent']} | {s['refused']} | "
            f"{s['unknown']} | {_cell_reasons(s)} | {s['seconds']:.1f} |"
        )
    return rows


# ================================================================================== main
def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("atomssl", "pymatgen", "ase", "pyxtal", "robocrys"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _command(argv: list[str]) -> str:
    env = "OMP_NUM_THREADS=1 " if os.environ.get("OMP_NUM_THREADS") == "1" else ""
    return f"{env}.venv/bin/python benchmarks/readers.py" + (" " + shlex.join(argv) if argv else "")


def output_folder(out: Path | None, quick: bool) -> Path:
    """Where the report goes: benchmarks/results for a full run; elsewhere (never there) for --quick."""
    if not quick:
        return out or RESULTS
    if out is None:
        return Path(tempfile.mkdtemp(prefix="atomssl-readers-quick-"))
    if out.resolve() == RESULTS.resolve() or out.resolve().is_relative_to(RESULTS.resolve()):
        raise SystemExit("--quick must not write into benchmarks/results: give another --out")
    return out


def run(items: Iterable[Item], verbose: bool = False) -> list[dict]:
    records = []
    for item in items:
        rec = evaluate(item)
        records.append(rec)
        v = {k: r["verdict"] for k, r in rec["readers"].items()}
        a = rec["readers"]["atomssl"]
        flag = (
            v["atomssl"] == "wrong"
            or a["crashed"]
            or (v["atomssl"] == "refused" and "correct" in (v["pymatgen"], v["ase"]))
        )
        mark = "  " if not flag else ("~~" if a["why"] == DISORDER_KIND else "!!")
        if verbose or flag:
            print(f"{mark} {item.name}: " + ", ".join(f"{k} {x}" for k, x in v.items()), flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--corpus", action="append", type=Path, default=[], help="a folder of CIFs (repeatable)"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a few files per corpus; report outside benchmarks/results",
    )
    ap.add_argument(
        "--limit", type=int, default=None, help="at most this many files per corpus (--quick: 3)"
    )
    ap.add_argument(
        "--derived",
        type=int,
        default=60,
        help="derive failure modes from this many ground-truth structures",
    )
    ap.add_argument(
        "--work",
        type=Path,
        default=None,
        help="keep the generated CIFs here (default: a temporary folder)",
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="report folder (default benchmarks/results)"
    )
    ap.add_argument("--no-builtin", action="store_true", help="only the --corpus folders")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per file")
    args = ap.parse_args(argv)
    for c in args.corpus:
        if not c.is_dir():
            ap.error(f"--corpus {c}: not a folder")
    out = output_folder(args.out, args.quick)
    limit = args.limit if args.limit is not None else (3 if args.quick else None)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="atomssl-readers-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        items: list[Iterable[Item]] = []
        if not args.no_builtin:
            items.append(generated_items(work, limit, args.derived))
            items.append(real_items(args.corpus, limit, work, args.derived))
        else:
            items.append(_only_user(args.corpus, limit))
        records = run((it for group in items for it in group), args.verbose)
    order = {c: i for i, c in enumerate(CORPUS_ORDER)}
    records.sort(
        key=lambda r: (order.get(r["corpus"], len(order)), r["corpus"])
    )  # stable within a corpus
    rep = {
        "command": _command(argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds_total": time.perf_counter() - t0,
        "quick": args.quick,
        "settings": {
            "limit": limit,
            "derived": args.derived,
            "corpus": [str(c) for c in args.corpus],
        },
        "versions": _versions(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs visible, load {os.getloadavg()}",
        "summary": summarize(records),
        "problems": problem_lists(records),
        "files": records,
    }
    from atomssl.utils import atomic_write, write_json

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "readers.json", rep)
    with atomic_write(out / "readers.md", "w") as fh:
        fh.write(render_markdown(rep))
    a = rep["summary"].get("all", {"files": 0, "readers": {}})
    for name, s in a["readers"].items():
        print(
            f"{name:9s} {a['files']} files: correct {s['correct']}, wrong {s['wrong']}, refused {s['refused']}, unknown {s['unknown']}"
        )
    print(f"{rep['seconds_total']:.0f} s; wrote {out / 'readers.md'} and readers.json")
    return 0


def _only_user(corpora: list[Path], limit: int | None) -> Iterator[Item]:
    for c in corpora:
        n = 0
        for p in walk_cifs(c.resolve()):
            if limit is not None and n >= limit:
                break
            n += 1
            yield Item(f"corpus:{c.resolve()}", display_path(p), p)


if __name__ == "__main__":
    sys.exit(main())
