"""Labels of structures for supervised tasks: tables in CSV, JSON or NumPy ``.npz`` files, or the
structures' own labels (built-in datasets, ASE database keys and data arrays, extxyz info), matched
to structures and checked (numbers for regression, classes, spectra as vectors).

:func:`resolve_labels` gives the targets of a list of structures for ``data`` options
(``label``, ``labels``, ``skip_unlabelled``); every refusal is a :class:`ConfigError` that names
the file, line or structure and what there is instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ._label_files import _label_value, read_labels_file

log = logging.getLogger(__name__)


def _structure_keys(s) -> list[str]:
    """Names under which a labels file may refer to structure ``s``."""
    keys = []
    if s.id:
        keys.append(str(s.id))
    if s.source:
        src = Path(str(s.source))
        for base in (src.name, src.stem, str(s.source)):
            if s.index is not None:
                keys += [f"{base}@{s.index}", f"{base}:{s.index}"]
            keys.append(base)
    return keys


def _locate_labels(path: str, sources: Sequence[Any]) -> Path:
    p = Path(path)
    if p.is_file() or p.is_absolute():
        return p
    for src in sources:
        name = src if isinstance(src, str) else src.get("name") if isinstance(src, dict) else None
        if name and Path(name).exists():
            base = Path(name) if Path(name).is_dir() else Path(name).parent
            if (base / p).is_file():
                return base / p
    return p


def _source_names(data_cfg: dict) -> list[str]:
    sources = data_cfg.get("sources") or []
    sources = [sources] if isinstance(sources, (str, dict)) else sources
    return [str(s.get("name")) if isinstance(s, dict) else str(s) for s in sources]


def labels_table(data_cfg: dict, kind: str) -> dict[str, Any] | None:
    """The ``data.labels`` table as ``{key: value}`` (None without one); read before the
    structures, so a wrong column or value fails at once."""
    if not data_cfg.get("labels"):
        return None
    sources = data_cfg.get("sources") or []
    sources = [sources] if isinstance(sources, (str, dict)) else sources
    path = _locate_labels(str(data_cfg["labels"]), sources)
    return read_labels_file(path, data_cfg.get("label"), numeric=kind == "regression")


def _names(structures, indices, n: int = 5) -> str:
    shown = []
    for i in list(indices)[:n]:
        s = structures[int(i)]
        shown.append(s.id or (f"{s.source}@{s.index}" if s.source else f"#{int(i)}"))
    more = len(indices) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def resolve_labels(
    structures, data_cfg: dict, kind: str, table: dict[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Targets of ``structures``: ``(values, kept_indices, classes)``.

    From ``data.labels`` (a file; ``table`` when already read by :func:`labels_table`) when
    given, else each structure's ``labels[data.label]`` (built-in datasets, ASE db keys, extxyz
    info). A ``data.label`` that no table column / no structure carries is refused, naming those
    there are; without ``data.label`` the only label there is is used (and logged), several are
    refused. A table whose keys match no structure, or one key that matches several structures,
    is refused. Classification maps labels to indices of the sorted distinct ``classes``.
    Unlabelled structures raise, or are dropped with ``data.skip_unlabelled``.
    """
    label = data_cfg.get("label")
    if table is None and data_cfg.get("labels"):
        table = labels_table(data_cfg, kind)
    if table is None:
        counts: dict[str, int] = {}
        for i in range(len(structures)):
            for name in structures[i].labels:
                counts[name] = counts.get(name, 0) + 1
        what = ", ".join(_source_names(data_cfg)) or "the structures"
        if not counts:
            raise ConfigError(
                f"the structures of {what} carry no labels: give a table of labels with data.labels=FILE (CSV/JSON)"
            )
        names = sorted(counts)
        if label is None:
            if len(names) != 1:
                raise ConfigError(
                    f"the structures of {what} carry {len(names)} labels ({', '.join(names)}): name the one to learn with data.label"
                )
            label = names[0]
            log.info(
                "labels: %r, the only label the structures of %s carry (name another with data.label)",
                label,
                what,
            )
        elif label not in counts:
            raise ConfigError(
                f"label {label!r} not found in {what}; available labels: {', '.join(names)}"
                + ("" if len(set(counts.values())) == 1 else " (not all on every structure)")
            )
    raw, kept, missing = [], [], []
    used: dict[str, list[int]] = {}
    for i in range(len(structures)):
        s = structures[i]
        if table is not None:
            key = next((k for k in _structure_keys(s) if k in table), None)
            value = None if key is None else table[key]
            if key is not None:
                used.setdefault(key, []).append(i)
        else:
            value = s.labels.get(label)
        if value is None:
            missing.append(i)
            continue
        raw.append(value)
        kept.append(i)
    if table is not None:
        if table and not used and len(structures):
            shown = ", ".join(list(table)[:5])
            raise ConfigError(
                f"no structure matches a key of {data_cfg['labels']} (first keys there: {shown}; first structures: "
                f"{_names(structures, range(len(structures)), 3)}); keys are a structure's id, file name, "
                "file stem or name@frame"
            )
        shared = next(((k, ix) for k, ix in used.items() if len(ix) > 1), None)
        if shared is not None:
            raise ConfigError(
                f"key {shared[0]!r} of {data_cfg['labels']} matches {len(shared[1])} structures "
                f"({_names(structures, shared[1], 3)}); give each its own row (e.g. name@frame)"
            )
    if missing and not data_cfg.get("skip_unlabelled"):
        where = f"file {data_cfg['labels']}" if table is not None else f"label {label!r}"
        raise ConfigError(
            f"{len(missing)} structure(s) have no value in {where} (first: {_names(structures, missing)}); "
            "set data.skip_unlabelled=true to drop them"
        )
    if not kept:
        raise ConfigError("no labelled structures")
    classes = None
    if kind == "spectrum":
        wheres = [_names(structures, [i]) for i in kept]
        if table is not None:
            wheres = [f"{data_cfg['labels']} (structure {w})" for w in wheres]
        column = label or "value"
        vectors = [spectrum_vector(v, w, column) for v, w in zip(raw, wheres)]
        return spectrum_matrix(vectors, wheres, column), np.asarray(kept, dtype=np.int64), None
    if kind == "classification":
        classes = sorted({str(v) for v in raw}, key=_natural)
        index = {c: k for k, c in enumerate(classes)}
        values = np.array([index[str(v)] for v in raw], dtype=np.int64)
    else:
        for v, i in zip(raw, kept):
            where = _names(structures, [i])
            _label_value(
                v,
                True,
                where if table is None else f"{data_cfg['labels']} (structure {where})",
                label or "value",
            )
        values = np.array([float(v) for v in raw], dtype=np.float64)
    return values, np.asarray(kept, dtype=np.int64), classes


def _natural(v: str):
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def spectrum_vector(value: Any, where: str, column: str) -> np.ndarray:
    """``value`` as a 1-D float64 vector of finite, non-negative numbers (refused, naming ``where``)."""
    try:
        v = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {column!r} is not a vector of numbers") from None
    if v.ndim != 1 or len(v) < 2:
        raise ConfigError(
            f"{where}: {column!r} must be a vector of >= 2 values (a spectrum), got shape {v.shape}"
        )
    if not np.isfinite(v).all():
        raise ConfigError(f"{where}: {column!r} holds a value that is not a finite number")
    if (v < 0).any():
        raise ConfigError(f"{where}: {column!r} holds a negative value; spectra are non-negative")
    return v


def spectrum_matrix(values: Sequence[np.ndarray], wheres: Sequence[str], column: str) -> np.ndarray:
    """Stack label vectors (n, B); all must have the same length (refused, naming the first that differs)."""
    if not len(values):
        return np.zeros((0, 0))
    n_bins = len(values[0])
    for v, where in zip(values, wheres):
        if len(v) != n_bins:
            raise ConfigError(
                f"{where}: {column!r} has {len(v)} values, the first structure's has {n_bins}"
            )
    return np.stack(values)
