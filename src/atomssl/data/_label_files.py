"""Readers of label tables in CSV, JSON or NumPy ``.npz`` files (``{key: value}``, values checked)."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

log = logging.getLogger(__name__)


_KEY_NAMES = ("file", "id", "name", "structure", "filename", "path")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"key {key!r} appears twice")
        seen[key] = value
    return seen


def _label_value(value: Any, numeric: bool, where: str, column: str) -> Any:
    """``value`` as a float when ``numeric`` (refused, naming ``where``, when it is not a finite number)."""
    if not numeric:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {column!r} is {value!r}, not a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where}: {column!r} is {value!r}, not a finite number")
    return number


def _pick_label(
    label: str | None, columns: list[str], key_column: str | None, what: str, available: str
) -> str:
    """The value column: ``label`` when it is one of ``columns`` (refused otherwise, naming the
    available ones); without ``label``, the only value column there is (and say so)."""
    values = [c for c in columns if c != key_column]
    if label is not None:
        if label not in columns:
            raise ConfigError(
                f"label {label!r} not found in {what}; available {available}: {', '.join(map(str, columns)) or 'none'}"
            )
        if label == key_column:
            raise ConfigError(
                f"label {label!r} is the key column of {what}; name a value column: {', '.join(values) or 'none'}"
            )
        return label
    if len(values) != 1:
        raise ConfigError(
            f"{what} has {len(values)} value columns ({', '.join(values) or 'none'}): name the one to learn with data.label"
        )
    log.info(
        "labels: column %r of %s (its only value column; name another with data.label)",
        values[0],
        what,
    )
    return values[0]


def read_labels_file(
    path: str | os.PathLike, label: str | None, *, numeric: bool = False
) -> dict[str, Any]:
    """``{file-or-id: value}`` from a CSV (header; key column ``file``/``id``/``name``/``structure``
    or the first one; value column ``label``, or the only other column when ``label`` is None) or a
    JSON file (a mapping ``{key: value}``, ``{key: {label: value}}``, or a list of records).

    Refused with a :class:`ConfigError`: a ``label`` that is not a column (naming the columns
    there are), several value columns and no ``label``, a key given twice, a row without a key,
    and with ``numeric`` a value that is not a finite number (naming its line or record).
    Rows with an empty value are left out (those structures are unlabelled).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: labels file not found")
    try:
        if path.suffix.lower() == ".npz":
            return _read_labels_npz(path, label, numeric)
        if path.suffix.lower() == ".json":
            return _read_labels_json(path, label, numeric)
        return _read_labels_csv(path, label, numeric)
    except (ValueError, KeyError, UnicodeDecodeError, csv.Error) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{path}: not a labels table: {exc}") from None


def _read_labels_csv(path: Path, label: str | None, numeric: bool) -> dict[str, Any]:
    with open(
        path, newline="", encoding="utf-8-sig"
    ) as fh:  # -sig: a spreadsheet's byte-order mark
        reader = csv.reader(fh)
        header = next(reader, None)
        cols = [c.strip() for c in header or []]
        if len(cols) < 2:
            raise ConfigError(
                f"{path}: need a header with a key column and a label column, got {cols}"
            )
        twice = sorted({c for c in cols if cols.count(c) > 1})
        if twice:
            raise ConfigError(
                f"{path}: column(s) {', '.join(map(repr, twice))} appear more than once in the header"
            )
        kcol = next((c for c in cols if c.lower() in _KEY_NAMES), cols[0])
        vcol = _pick_label(label, cols, kcol, str(path), "columns")
        k, v = cols.index(kcol), cols.index(vcol)
        out: dict[str, Any] = {}
        line_of: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # a blank line
            key = row[k].strip() if k < len(row) else ""
            if not key:
                raise ConfigError(f"{path}: line {line} has no {kcol!r}")
            if key in line_of:
                raise ConfigError(
                    f"{path}: {kcol} {key!r} appears twice (lines {line_of[key]} and {line})"
                )
            line_of[key] = line
            value = row[v].strip() if v < len(row) else ""
            if value == "":
                continue  # unlabelled
            out[key] = _label_value(value, numeric, f"{path}: line {line} ({kcol} {key!r})", vcol)
    return out


def _read_labels_npz(path: Path, label: str | None, numeric: bool) -> dict[str, Any]:
    """NumPy ``.npz``: a key array (``id``/``file``/``name``/...: n strings) and value arrays with n
    rows: (n,) scalars or (n, n_bins) vectors (spectra)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    kcol = next((k for k in _KEY_NAMES if k in arrays), None)
    if kcol is None:
        raise ConfigError(
            f"{path}: no key array ({', '.join(_KEY_NAMES)}) among {', '.join(arrays) or 'none'}"
        )
    keys = [str(k) for k in arrays[kcol].tolist()]
    vcol = _pick_label(label, list(arrays), kcol, str(path), "arrays")
    values = arrays[vcol]
    if len(values) != len(keys):
        raise ConfigError(
            f"{path}: array {vcol!r} has {len(values)} rows, {kcol!r} has {len(keys)}"
        )
    out: dict[str, Any] = {}
    for n, (key, value) in enumerate(zip(keys, values)):
        if key in out:
            raise ConfigError(
                f"{path}: {kcol} {key!r} appears twice (rows {keys.index(key)} and {n})"
            )
        out[key] = (
            _label_value(value, numeric, f"{path}: row {n} ({kcol} {key!r})", vcol)
            if values.ndim == 1
            else value
        )
    return out


def _read_labels_json(path: Path, label: str | None, numeric: bool) -> dict[str, Any]:
    obj = json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=_no_duplicate_keys)
    if isinstance(obj, dict) and not any(isinstance(v, dict) for v in obj.values()):
        # {key: value}: the values are the labels (there is no column to check data.label against)
        return {
            str(key): _label_value(value, numeric, f"{path}: key {key!r}", label or "value")
            for key, value in obj.items()
            if value is not None
        }
    if isinstance(obj, dict):
        bad = next((key for key, value in obj.items() if not isinstance(value, dict)), None)
        if bad is not None:
            raise ConfigError(
                f"{path}: key {bad!r} maps to a {type(obj[bad]).__name__}; the other keys map to records"
            )
        rows = [(f"key {key!r}", str(key), rec) for key, rec in obj.items()]
        kcol = None
    elif isinstance(obj, list):
        rows = []
        kcol = None
        for n, rec in enumerate(obj):
            if not isinstance(rec, dict):
                raise ConfigError(
                    f"{path}: record {n} is a {type(rec).__name__}: a list of labels must hold records (mappings)"
                )
            kcol = next((k for k in _KEY_NAMES if k in rec), None)
            if kcol is None or rec[kcol] in (None, ""):
                raise ConfigError(
                    f"{path}: record {n} has no key field ({', '.join(_KEY_NAMES)}): {rec}"
                )
            rows.append(
                (
                    f"record {n} ({kcol} {rec[kcol]!r})",
                    str(rec[kcol]),
                    {f: x for f, x in rec.items() if f != kcol},
                )
            )
    else:
        raise ConfigError(
            f"{path}: top level must be a mapping or a list of records, not a {type(obj).__name__}"
        )
    fields: list[str] = []
    for _, _, rec in rows:
        fields += [f for f in rec if f not in fields]
    vcol = _pick_label(label, fields, None, str(path), "fields")
    out: dict[str, Any] = {}
    first: dict[str, str] = {}
    for where, key, rec in rows:
        if key in first:
            raise ConfigError(f"{path}: key {key!r} appears twice ({first[key]} and {where})")
        first[key] = where
        if rec.get(vcol) is None:
            continue  # unlabelled
        out[key] = _label_value(rec[vcol], numeric, f"{path}: {where}", vcol)
    return out
