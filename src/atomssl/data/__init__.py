"""Structure sources: the :class:`Structure` record, file readers, offline datasets, stores."""

from ._cache import cache_dir
from ._datasets import DATASETS, FolderDataset, load_dataset, load_structures
from ._formats import FORMATS, FrameIndexError, detect_format
from ._matbench import (
    DIELECTRIC_METADATA,
    MATBENCH_DIELECTRIC_COUNT,
    MATBENCH_DIELECTRIC_MAD,
    DatasetError,
    load_matbench_dielectric,
    matbench_dielectric_metadata,
    matbench_folds,
    matbench_metadata,
    mean_absolute_deviation,
)
from ._minerals import MINERALS_COUNT, load_minerals
from ._molecular_crystals import CSD_MOLECULAR_CRYSTALS_COUNT, load_csd_molecular_crystals
from ._offline import OFFLINE_CORPORA, all_offline_excluded_ids, load_all_offline
from ._prototypes import (
    PRETRAINING_PROTOTYPES,
    aflow_prototypes,
    get_prototype,
    idealized_crystal,
    idealized_crystals,
    nearest_distance,
    prototype_names,
)
from ._qm9 import load_qm9, qm9_frequencies, qm9_split
from ._qm9_parse import QM9_ATOMREF, QM9_COUNT, QM9_EXTRA_LABELS, QM9_TARGETS
from ._readers import read
from ._shard_import import ShardImportReport, import_shards
from ._shards import ShardedCorpus
from ._skipped import skipped_structures
from ._sources import expand_sources, iter_entries, iter_structures
from ._spectra import VDOS_GRID, VDOS_SIGMA, broaden, grid_edges, vibrational_dos
from ._store import StructureStore
from ._store_import import ImportReport, import_structures
from ._structure import Structure

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
    "ShardedCorpus",
    "import_shards",
    "ShardImportReport",
    "cache_dir",
    "DatasetError",
    "MATBENCH_DIELECTRIC_COUNT",
    "MATBENCH_DIELECTRIC_MAD",
    "load_matbench_dielectric",
    "DIELECTRIC_METADATA",
    "matbench_dielectric_metadata",
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
    "QM9_ATOMREF",
    "QM9_COUNT",
    "QM9_EXTRA_LABELS",
    "QM9_TARGETS",
    "load_qm9",
    "VDOS_GRID",
    "VDOS_SIGMA",
    "broaden",
    "grid_edges",
    "vibrational_dos",
    "qm9_frequencies",
    "qm9_split",
    "MINERALS_COUNT",
    "load_minerals",
    "CSD_MOLECULAR_CRYSTALS_COUNT",
    "load_csd_molecular_crystals",
    "OFFLINE_CORPORA",
    "all_offline_excluded_ids",
    "load_all_offline",
    "skipped_structures",
]
