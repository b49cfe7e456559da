"""Structure sources: the :class:`Structure` record, file readers, offline datasets, stores."""

from ._structure import Structure
from ._readers import FORMATS, FrameIndexError, detect_format, expand_sources, iter_entries, iter_structures, read
from ._store import ImportReport, StructureStore, import_structures
from ._cache import cache_dir
from ._matbench import (
    MATBENCH_DIELECTRIC_COUNT,
    MATBENCH_DIELECTRIC_MAD,
    DatasetError,
    load_matbench_dielectric,
    matbench_folds,
    matbench_metadata,
    mean_absolute_deviation,
)
from ._prototypes import (
    PRETRAINING_PROTOTYPES,
    aflow_prototypes,
    get_prototype,
    idealized_crystal,
    idealized_crystals,
    nearest_distance,
    prototype_names,
)
from ._datasets import DATASETS, FolderDataset, load_dataset, load_structures

__all__ = [
    "Structure",
    "read",
    "iter_structures",
    "iter_entries",
    "expand_sources",
    "detect_format",
    "FORMATS",
    "FrameIndexError",
    "StructureStore",
    "import_structures",
    "ImportReport",
    "cache_dir",
    "DatasetError",
    "MATBENCH_DIELECTRIC_COUNT",
    "MATBENCH_DIELECTRIC_MAD",
    "load_matbench_dielectric",
    "matbench_folds",
    "matbench_metadata",
    "mean_absolute_deviation",
    "PRETRAINING_PROTOTYPES",
    "aflow_prototypes",
    "get_prototype",
    "prototype_names",
    "idealized_crystal",
    "idealized_crystals",
    "nearest_distance",
    "DATASETS",
    "FolderDataset",
    "load_dataset",
    "load_structures",
]
