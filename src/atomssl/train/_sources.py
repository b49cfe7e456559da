"""Training data sources: built-in datasets, files, stores and corpora, read lazily where they
can be; what the readers changed, recorded in the run folder. Graphs are in :mod:`._data`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from ..data import Structure
from ..errors import ConfigError, StructureError

log = logging.getLogger(__name__)

DATA_DEFAULTS: dict[str, Any] = {
    "sources": ["synthetic"],
    "limit": None,  # at most this many structures in all (after concatenating sources)
    "val_fraction": 0.1,
    "batch_size": 16,
    "num_workers": "auto",  # int, or auto: see train._data.resolve_num_workers
    "in_memory": True,  # False: stream (read *.db stores lazily, build graphs in workers); corpus folders always stream
    "skip_bad": True,  # skip (and count) structures that fail validation instead of stopping
}


# ------------------------------------------------------------------------------------ sources
# (prototype, a in A, element sets) for the synthetic set: simple binaries and elements
_PROTOTYPES: list[tuple[str, list[tuple[str, str | None, float]]]] = [
    (
        "rocksalt",
        [
            ("Na", "Cl", 5.64),
            ("Mg", "O", 4.21),
            ("K", "Br", 6.60),
            ("Li", "F", 4.03),
            ("Ca", "O", 4.81),
        ],
    ),
    ("zincblende", [("Ga", "As", 5.65), ("Zn", "S", 5.41), ("Si", "C", 4.36)]),
    ("cesiumchloride", [("Cs", "Cl", 4.12)]),
    ("fluorite", [("Ca", "F2", 5.46)]),
    ("fcc", [("Cu", None, 3.61), ("Al", None, 4.05), ("Ag", None, 4.09)]),
    ("bcc", [("Fe", None, 2.87), ("W", None, 3.16)]),
    ("diamond", [("Si", None, 5.43), ("Ge", None, 5.66)]),
]


def synthetic_crystals(
    n: int = 64, seed: int = 0, rattle: float = 0.05, strain: float = 0.03
) -> list[Structure]:
    """``n`` small periodic crystals (2-8 atoms) of common prototypes, randomly strained and rattled."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        proto, choices = _PROTOTYPES[rng.integers(len(_PROTOTYPES))]
        a_el, b_el, a = choices[rng.integers(len(choices))]
        symbol = a_el if b_el is None else a_el + b_el
        atoms = bulk(symbol, proto, a=a, cubic=bool(rng.integers(2)))
        eps = rng.uniform(-strain, strain, size=(3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
        s = Structure.from_ase(atoms)
        out.append(s.copy(id=f"synthetic-{i}", source="synthetic", index=i))
    return out


def _source_entry(entry: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and "name" in entry:
        entry = dict(entry)
        return str(entry.pop("name")), entry
    raise ConfigError(f"data source {entry!r}: give a name/path or a mapping with 'name'")


def load_source(entry: Any, skip_bad: bool = True, in_memory: bool = True) -> Sequence[Structure]:
    """The structures of one data source (see module docstring).

    A ``*.db`` store with ``in_memory=False`` and a corpus folder (``manifest.json``, always) come
    back as lazy sequences, read one structure at a time; ``limit`` then takes a lazy view.
    """
    from .. import data as atomssl_data

    name, opts = _source_entry(entry)
    limit = opts.pop("limit", None)
    if name == "synthetic":
        structures: Sequence[Structure] = synthetic_crystals(**opts)
    elif Path(name).is_dir() and (Path(name) / "manifest.json").is_file():
        corpus = getattr(atomssl_data, "ShardedCorpus", None)
        if corpus is None:
            raise ConfigError(
                f"data source {name!r}: a sharded corpus (manifest.json), but this build has no corpus reader"
            )
        structures = corpus(name, **opts)
    elif Path(name).suffix == ".db" and Path(name).is_file() and not in_memory:
        structures = atomssl_data.StructureStore(name)
    elif Path(name).exists():
        errors: list[StructureError] = []
        structures = list(
            atomssl_data.iter_structures(name, skip_bad=skip_bad, errors=errors, **opts)
        )
        if (
            errors and not structures
        ):  # nothing usable: the first reason, not a warning and then "empty"
            raise errors[0]
        if errors:
            log.warning("%s: skipped %d bad structure(s), first: %s", name, len(errors), errors[0])
    else:
        loader = getattr(atomssl_data, "load_dataset", None)
        if loader is None:
            raise ConfigError(
                f"data source {name!r}: no such file or folder (and no named datasets in this build)"
            )
        if limit is not None and _takes_limit(
            name
        ):  # read only the first rows (qm9: not all 130,831)
            opts["limit"] = int(limit)
        structures = loader(name, **opts)
    if limit is not None:
        structures = _head(structures, int(limit))
    return structures


def _takes_limit(name: str) -> bool:
    """Whether the built-in dataset ``name``'s loader reads only the first ``limit`` rows itself."""
    import inspect

    from ..data._datasets import DATASETS

    loader = DATASETS.get(name)
    return loader is not None and "limit" in inspect.signature(loader).parameters


def _head(structures: Sequence[Structure], n: int) -> Sequence[Structure]:
    if isinstance(structures, list):
        return structures[:n]
    if isinstance(structures, Sequence):
        return _Head(structures, n)
    return list(structures)[:n]


class _Head(Sequence):
    """The first ``n`` structures of a lazy sequence, read on access."""

    def __init__(self, base: Sequence[Structure], n: int):
        self.base, self.n = base, max(0, min(int(n), len(base)))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        j = int(i) + self.n if int(i) < 0 else int(i)
        if not 0 <= j < self.n:
            raise IndexError(i)
        return self.base[j]


class _Concat(Sequence):
    """Several structure sequences (lists or lazy stores) seen as one."""

    def __init__(self, parts: list[Sequence[Structure]]):
        self.parts = [p for p in parts if len(p)]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @overload
    def __getitem__(self, i: int) -> Structure: ...
    @overload
    def __getitem__(self, i: slice) -> list[Structure]: ...
    def __getitem__(self, i: int | slice) -> Structure | list[Structure]:
        if isinstance(i, slice):  # as Sequence promises (and _Head does)
            return [self[j] for j in range(*i.indices(len(self)))]
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.parts[k][i - int(self.offsets[k])]


def load_structures(cfg: dict[str, Any]) -> Sequence[Structure]:
    """All sources of a ``data`` config section, concatenated in order (``limit`` applied)."""
    sources = cfg.get("sources", DATA_DEFAULTS["sources"])
    if isinstance(sources, (str, dict)):
        sources = [sources]
    parts = [load_source(s, cfg.get("skip_bad", True), cfg.get("in_memory", True)) for s in sources]
    out: Sequence[Structure] = parts[0] if len(parts) == 1 else _Concat(parts)
    if cfg.get("limit") is not None:
        out = _head(out, int(cfg["limit"]))
    if len(out) == 0:
        raise ConfigError(f"data sources {sources!r} hold no structures")
    return out


def has_corpus(structures: Sequence[Structure]) -> bool:
    """Whether ``structures`` is (or contains) a sharded corpus, which is always streamed."""
    from .. import data as atomssl_data

    corpus = getattr(atomssl_data, "ShardedCorpus", None)
    if corpus is None or isinstance(structures, list):
        return False
    if isinstance(structures, corpus):
        return True
    inner = getattr(structures, "parts", None) or (
        [structures.base] if isinstance(structures, _Head) else []
    )
    return any(has_corpus(p) for p in inner)


def streams(cfg: dict[str, Any], structures: Sequence[Structure]) -> bool:
    """Whether a run on ``structures`` streams them (``data.in_memory: false``, or a corpus)."""
    return not cfg.get("in_memory", True) or has_corpus(structures)


def read_warnings(structures: Sequence[Structure], limit: int = 1000) -> dict[str, Any]:
    """What the readers changed or doubted in ``structures`` (``Structure.warnings``), for a run's
    record: ``{"structures_with_warnings": n, "warnings": [{"structure", "warnings"}, ...]}``.
    Lazily read stores are not scanned (their rows keep their own warnings)."""
    if not isinstance(structures, list):
        parts = getattr(structures, "parts", None)
        if parts is None or not all(isinstance(p, list) for p in parts):
            return {
                "structures_with_warnings": None,
                "warnings": [],
                "note": "lazily read store: see its rows",
            }
        structures = [s for p in parts for s in p]
    warned = [s for s in structures if s.warnings]
    return {
        "structures_with_warnings": len(warned),
        "warnings": [
            {"structure": s.where(), "warnings": list(s.warnings)} for s in warned[:limit]
        ],
    }


def record_read_warnings(structures: Sequence[Structure], run_dir: Path) -> int | None:
    """Write ``RUN/read_warnings.json`` when any structure was read with warnings; returns the count."""
    from ..utils import write_json

    record = read_warnings(structures)
    n = record["structures_with_warnings"]
    if n:
        write_json(Path(run_dir) / "read_warnings.json", record)
        first = record["warnings"][0]
        log.warning(
            "%d structure(s) were read with warnings (listed in %s), first: %s: %s",
            n,
            Path(run_dir) / "read_warnings.json",
            first["structure"],
            first["warnings"][0],
        )
    return n
