"""Named offline datasets and user folders/databases behind one call: :func:`load_dataset`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import MissingFileError, StructureError
from ._matbench import DatasetError, load_matbench_dielectric
from ._minerals import load_minerals
from ._molecular_crystals import load_csd_molecular_crystals
from ._offline import load_all_offline
from ._prototypes import aflow_prototypes, idealized_crystals
from ._qm9 import load_qm9
from ._structure import Structure

#: name -> loader returning ``list[Structure]`` (keyword arguments are passed through)
DATASETS: dict[str, Callable[..., list[Structure]]] = {
    "matbench_dielectric": load_matbench_dielectric,
    "aflow_prototypes": aflow_prototypes,
    "idealized_crystals": idealized_crystals,
    "qm9": load_qm9,
    "minerals": load_minerals,
    "csd_molecular_crystals": load_csd_molecular_crystals,
    "all_offline": load_all_offline,
}


def load_structures(
    path: str | os.PathLike,
    *,
    skip_bad: bool = False,
    errors: list[StructureError] | None = None,
    validate: bool = True,
    **options: Any,
) -> list[Structure]:
    """Every structure in a file, a folder (searched recursively) or an ASE database.

    Bad entries raise their :class:`StructureError`, or with ``skip_bad`` are appended to
    ``errors`` and skipped. ``options`` go to :func:`atomssl.data.read` (``format=``,
    ``species=`` ...).
    """
    from ._sources import iter_structures  # the readers pull in ASE/pymatgen I/O only when used

    path = Path(path)
    if not path.exists():
        raise MissingFileError("no such file or folder", str(path))
    structures = list(iter_structures(path, skip_bad, errors, validate=validate, **options))
    if not structures and path.is_dir() and not errors:
        raise DatasetError(f"{path}: the folder holds no structure files of a known format")
    return structures


class FolderDataset(Sequence[Structure]):
    """The structures of a folder/file/ASE database, read once and kept in memory.

    ``errors`` lists the entries skipped with ``skip_bad``; ``label_names`` the labels every
    structure carries.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        skip_bad: bool = False,
        validate: bool = True,
        **options: Any,
    ):
        self.path = Path(path)
        self.errors: list[StructureError] = []
        self.structures = load_structures(
            self.path, skip_bad=skip_bad, errors=self.errors, validate=validate, **options
        )

    def __len__(self) -> int:
        return len(self.structures)

    def __getitem__(self, i):
        return self.structures[i]

    def __iter__(self) -> Iterator[Structure]:
        return iter(self.structures)

    @property
    def label_names(self) -> list[str]:
        if not self.structures:
            return []
        common = set(self.structures[0].labels)
        for s in self.structures[1:]:
            common &= set(s.labels)
        return sorted(common)

    def __repr__(self) -> str:
        return (
            f"FolderDataset({str(self.path)!r}, {len(self)} structures, {len(self.errors)} skipped)"
        )


def load_dataset(name_or_path: str | os.PathLike, **kwargs: Any) -> list[Structure]:
    """A registered dataset by name (see :data:`DATASETS`), else the structures at a path."""
    key = str(name_or_path)
    if key in DATASETS:
        return DATASETS[key](**kwargs)
    if Path(key).exists():
        return load_structures(key, **kwargs)
    raise DatasetError(
        f"{key!r} is neither a dataset ({', '.join(sorted(DATASETS))}) nor an existing file or folder"
    )


DATASET_PREFIX = "dataset:"


def is_dataset_source(source: Any) -> bool:
    """Whether ``source`` names a built-in dataset: ``dataset:NAME`` (``dataset:NAME?key=value&...``)."""
    return isinstance(source, str) and source.startswith(DATASET_PREFIX)


def _option_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    special = {"true": True, "false": False, "none": None, "null": None}
    if text.lower() in special:
        return special[text.lower()]
    return text.split(",") if "," in text else text


def load_dataset_source(source: str) -> list[Structure]:
    """The structures of ``dataset:NAME?key=value&...``: ``load_dataset(NAME, key=value, ...)``.

    Values are numbers, ``true``/``false``/``none``, comma-separated lists or strings, e.g.
    ``dataset:all_offline?exclude_matbench_fold=0&exclude_qm9=test``, ``dataset:qm9?limit=1000``.
    """
    spec = source[len(DATASET_PREFIX) :] if is_dataset_source(source) else source
    name, _, query = spec.partition("?")
    if name not in DATASETS:
        raise DatasetError(
            f"{source!r}: no dataset {name!r} (known: {', '.join(sorted(DATASETS))})"
        )
    options: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise DatasetError(
                f"{source!r}: options are key=value pairs joined by '&', got {item!r}"
            )
        options[key] = _option_value(value)
    try:
        return DATASETS[name](**options)
    except TypeError as exc:
        raise DatasetError(f"{source!r}: {exc}") from None


def expand_dataset_sources(sources: Sequence[Any]) -> list[Any]:
    """``sources`` with every ``dataset:NAME`` replaced by its structures (in place, in order)."""
    out: list[Any] = []
    for src in sources:
        if is_dataset_source(src):
            out.extend(load_dataset_source(src))
        else:
            out.append(src)
    return out
