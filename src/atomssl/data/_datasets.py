"""Named offline datasets and user folders/databases behind one call: :func:`load_dataset`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..errors import MissingFileError, StructureError
from ._matbench import DatasetError, load_matbench_dielectric
from ._prototypes import aflow_prototypes, idealized_crystals
from ._structure import Structure

#: name -> loader returning ``list[Structure]`` (keyword arguments are passed through)
DATASETS: dict[str, Callable[..., list[Structure]]] = {
    "matbench_dielectric": load_matbench_dielectric,
    "aflow_prototypes": aflow_prototypes,
    "idealized_crystals": idealized_crystals,
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
    from ._readers import iter_structures  # the readers pull in ASE/pymatgen I/O only when used

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

    def __init__(self, path: str | os.PathLike, *, skip_bad: bool = False, validate: bool = True, **options: Any):
        self.path = Path(path)
        self.errors: list[StructureError] = []
        self.structures = load_structures(self.path, skip_bad=skip_bad, errors=self.errors, validate=validate, **options)

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
        return f"FolderDataset({str(self.path)!r}, {len(self)} structures, {len(self.errors)} skipped)"


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
