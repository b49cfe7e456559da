"""A compact on-disk cache of parsed structures (no pickle): concatenated numpy arrays + offsets.

Parsing thousands of JSON/CIF structures takes seconds; the cache loads them in milliseconds.
Files live under ``$ATOMSSL_CACHE`` (default ``~/.cache/atomssl``), are written atomically, and
are named by a key that includes the source file's size and mtime, so that a changed source
is re-parsed instead of served stale.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._structure import Structure

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def cache_dir() -> Path:
    """``$ATOMSSL_CACHE`` when set, else ``~/.cache/atomssl`` (honouring ``$XDG_CACHE_HOME``)."""
    env = os.environ.get("ATOMSSL_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "atomssl"


def source_key(path: str | os.PathLike) -> str:
    """``<path hash>-<size>-<mtime_ns>``: changes whenever the source file is moved, replaced or edited."""
    st = os.stat(path)
    where = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:8]
    return f"{where}-{st.st_size}-{st.st_mtime_ns}"


def cache_path(name: str, source: str | os.PathLike) -> Path:
    return cache_dir() / f"{name}-{source_key(source)}-v{CACHE_VERSION}.npz"


def pack_structures(
    structures: Sequence[Structure], labels: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """Flatten structures into a dict of plain arrays (float labels only)."""
    counts = np.array([s.n_atoms for s in structures], dtype=np.int64)
    arrays: dict[str, np.ndarray] = {
        "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "numbers": np.concatenate([s.numbers for s in structures]).astype(np.int16),
        "positions": np.concatenate([s.positions for s in structures]).astype(np.float64),
        "cells": np.stack([s.cell for s in structures]).astype(np.float64),
        "pbc": np.stack([s.pbc for s in structures]).astype(bool),
        "ids": np.array([s.id for s in structures], dtype=str),
    }
    for name in labels:
        arrays[f"label_{name}"] = np.array(
            [float(s.labels[name]) for s in structures], dtype=np.float64
        )
    return arrays


def unpack_structures(arrays, source: str | None = None) -> list[Structure]:
    """Inverse of :func:`pack_structures`; each structure gets ``source`` and its ``index``."""
    off = arrays["offsets"]
    numbers, positions = arrays["numbers"].astype(np.int64), arrays["positions"]
    cells, pbc, ids = arrays["cells"], arrays["pbc"], arrays["ids"].tolist()
    label_names = [k[len("label_") :] for k in arrays if k.startswith("label_")]
    label_values = {name: arrays[f"label_{name}"].tolist() for name in label_names}
    out = []
    for i in range(len(off) - 1):
        a, b = off[i], off[i + 1]
        out.append(
            Structure(
                numbers[a:b],
                positions[a:b],
                cells[i],
                pbc[i],
                {name: label_values[name][i] for name in label_names},
                id=ids[i],
                source=source,
                index=i,
            )
        )
    return out


PACKED_KEYS = frozenset({"offsets", "numbers", "positions", "cells", "pbc", "ids"})


def load_cached(
    path: Path, required: frozenset[str] | set[str] = frozenset()
) -> dict[str, np.ndarray] | None:
    """The arrays stored at ``path``, or ``None`` when absent, unreadable or lacking a
    ``required`` key (the caller then rebuilds it from the source)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # a corrupt cache is not an error: it is rebuilt from the source
        log.warning("ignoring unreadable cache %s (%s)", path, exc)
        return None
    missing = set(required) - set(arrays)
    if missing:
        log.warning("ignoring incomplete cache %s (missing %s)", path, sorted(missing))
        return None
    return arrays


def save_cached(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically; a read-only cache folder only costs speed, so failures are logged."""
    from ..utils import atomic_save_npz

    try:
        atomic_save_npz(path, **arrays)
    except OSError as exc:
        log.warning("could not write cache %s (%s); continuing without it", path, exc)
