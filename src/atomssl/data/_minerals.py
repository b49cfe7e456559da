"""The 180 structures of robocrys's mineral database, read without importing robocrys.

``robocrys/condense/mineral_db.json.gz`` (robocrys 0.2.13, LBNL BSD licence; Ganose & Jain,
MRS Commun. 9, 874 (2019)) is a pandas ``orient="split"`` table: one row per AFLOW prototype
(the row key is its AFLOW label) with a pymatgen structure, the mineral name, Pearson symbol,
Strukturbericht designation, a site fingerprint and the number of elements.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections import Counter
from pathlib import Path

from ..errors import UnreadableFileError
from ._matbench import DatasetError, _require
from ._pmg_dict import structure_from_pmg_dict
from ._skipped import record_skipped, split_valid
from ._structure import Structure

ROBOCRYS_PIN = "robocrys==0.2.13"
MINERALS_COUNT = 180
_FILE = ("robocrys", "robocrys", "condense/mineral_db.json.gz")
_COLUMNS = ["structure", "mineral", "pearson", "strukturbericht", "fingerprint", "n_elems"]
_SOURCE = "minerals"


def minerals_path() -> Path:
    """Location of ``mineral_db.json.gz`` inside the installed robocrys wheel."""
    return _require(_FILE, ROBOCRYS_PIN)


@functools.lru_cache(maxsize=4)
def _table(
    path: Path, stamp: tuple[int, int]
) -> tuple[tuple[Structure, ...], tuple[tuple[str, str], ...]]:
    source = str(path)
    try:
        with gzip.open(path, "rb") as fh:
            table = json.loads(fh.read())
        columns, keys, rows = table["columns"], table["index"], table["data"]
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableFileError(
            f"not robocrys's mineral table ({type(exc).__name__}: {exc})", source
        ) from None
    if columns != _COLUMNS:
        raise DatasetError(f"{source}: unexpected columns {columns} (expected {_COLUMNS})")
    if len(rows) != MINERALS_COUNT or len(keys) != len(rows):
        raise DatasetError(
            f"{source}: expected {MINERALS_COUNT} minerals, found {len(rows)}; "
            f"reinstall with `pip install --no-deps {ROBOCRYS_PIN}`"
        )
    out, bad = [], []
    names = Counter(row[1] for row in rows)
    for i, (aflow, row) in enumerate(zip(keys, rows)):
        d = dict(zip(columns, row))
        mineral = str(d["mineral"])
        ident = mineral if names[mineral] == 1 else f"{mineral} [{aflow}]"
        try:
            s = structure_from_pmg_dict(d["structure"], _SOURCE, i, id=ident)
        except UnreadableFileError as err:  # counted and reported like a validation failure
            bad.append((ident, f"{err.kind}: {err.reason}"))
            continue
        strukturbericht = d["strukturbericht"]
        s.labels = {
            "mineral": mineral,
            "aflow": str(aflow),
            "pearson": str(d["pearson"]),
            "strukturbericht": "" if strukturbericht in (None, "None") else str(strukturbericht),
            "n_elems": int(d["n_elems"]),
        }
        out.append(s)
    ids = Counter(s.id for s in out) + Counter(i for i, _ in bad)
    dup = [i for i, n in ids.items() if n > 1]
    if dup:
        raise DatasetError(f"{source}: mineral ids are not unique ({dup[:5]})")
    good, invalid = split_valid(out)
    return tuple(good), tuple(bad + invalid)


def load_minerals(limit: int | None = None) -> list[Structure]:
    """robocrys's 180 mineral structures (the first ``limit``), periodic, in the file's order.

    ``id``: the mineral name, with the AFLOW label appended in brackets where several prototypes
    share a name (e.g. ``Clathrate [A_cP46_223_dik]``). Labels: ``mineral``, ``aflow`` (AFLOW
    prototype label), ``pearson``, ``strukturbericht`` (``""`` when none), ``n_elems``.
    Structures that fail validation are skipped and reported (see :func:`skipped_structures`).
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    path = minerals_path()
    st = path.stat()
    good, skipped = _table(path, (st.st_size, st.st_mtime_ns))
    record_skipped(_SOURCE, skipped, MINERALS_COUNT)
    return [s.copy() for s in good[:limit]]
