"""The matbench_dielectric dataset and the official matbench 5-fold splits, offline.

Both ship inside PyPI wheels that need not be importable (their dependency trees are not
installed): the structures and refractive indices in ``crystal-toolkit``
(``crystal_toolkit/apps/examples/matbench_dielectric.json.gz``), the splits in ``matbench``
(``matbench/matbench_v0.1_validation.json``). Files are located through package metadata,
never by importing those packages.

Row order: both wheels hold the matminer dataframe in its original order, and matbench names
row ``i`` ``mb-dielectric-{i+1:04d}``; the splits are sklearn's ``KFold(5, shuffle=True,
random_state=18012019)`` over those rows (the tests re-derive them that way).
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import json
import sys
import sysconfig
from pathlib import Path

import numpy as np

from ..errors import AtomsslError, MissingFileError, UnreadableFileError
from ._cache import (
    PACKED_KEYS,
    cache_dir,
    cache_path,
    load_cached,
    pack_structures,
    save_cached,
    source_key,
    unpack_structures,
)
from ._pmg_dict import structure_from_pmg_dict
from ._structure import Structure

MATBENCH_DIELECTRIC_COUNT = 4764
MATBENCH_DIELECTRIC_MAD = (
    0.8085347  # mean absolute deviation of n from its mean (matbench metadata)
)
_MAD_TOL = 1e-6

CRYSTAL_TOOLKIT_PIN = "crystal-toolkit==2026.7.20"
MATBENCH_PIN = "matbench==0.6"
_DIELECTRIC_FILE = (
    "crystal-toolkit",
    "crystal_toolkit",
    "apps/examples/matbench_dielectric.json.gz",
)
_VALIDATION_FILE = ("matbench", "matbench", "matbench_v0.1_validation.json")
_METADATA_FILE = ("matbench", "matbench", "matbench_v0.1_dataset_metadata.json")


class DatasetError(AtomsslError, ValueError):
    """A bundled dataset is present but does not hold what it should (count, labels, splits)."""


def find_package_file(distribution: str, package: str, relpath: str) -> Path | None:
    """Path of ``package/relpath`` inside an installed wheel, without importing ``package``."""
    candidates: list[Path] = []
    try:
        dist = importlib.metadata.distribution(distribution)
        # locate_file is typed as returning a SimplePath (a pathlib.Path at runtime)
        candidates.append(Path(str(dist.locate_file(f"{package}/{relpath}"))))
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        spec = importlib.util.find_spec(package)  # top-level: locates without executing it
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(loc) / relpath for loc in spec.submodule_search_locations]
    for key in ("purelib", "platlib"):
        candidates.append(Path(sysconfig.get_paths()[key]) / package / relpath)
    candidates += [Path(p) / package / relpath for p in sys.path if p]
    for path in candidates:
        if path.is_file():
            return path
    return None


def _require(spec: tuple[str, str, str], pin: str) -> Path:
    path = find_package_file(*spec)
    if path is None:
        raise MissingFileError(
            f"bundled data not installed; install it with `pip install --no-deps {pin}`",
            f"{spec[1]}/{spec[2]}",
        )
    return path


def matbench_dielectric_path() -> Path:
    """Location of ``matbench_dielectric.json.gz`` inside the installed crystal-toolkit wheel."""
    return _require(_DIELECTRIC_FILE, CRYSTAL_TOOLKIT_PIN)


def mean_absolute_deviation(values) -> float:
    """Mean absolute deviation of ``values`` from their mean: the MAE of always predicting the
    mean, the trivial baseline of a regression target."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.abs(values - values.mean()).mean())


def _mb_id(i: int) -> str:
    return f"mb-dielectric-{i + 1:04d}"


def _parse_dielectric(path: Path) -> list[Structure]:
    source = str(path)
    try:
        with gzip.open(path, "rb") as fh:
            table = json.loads(fh.read())
        structures, labels = table["structure"], table["n"]
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableFileError(
            f"not a matbench_dielectric table ({type(exc).__name__}: {exc})", source
        ) from None
    if set(structures) != set(labels):
        raise DatasetError(f"{source}: structure and label rows differ")
    try:
        keys = sorted(structures, key=int)
    except ValueError:
        raise DatasetError(f"{source}: row keys are not integers") from None
    # labels first: a wrong file fails in a second instead of after parsing every structure
    try:
        values = np.array([labels[k] for k in keys], dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{source}: refractive indices are not all numbers") from None
    _verify_dielectric(values, source)
    out = []
    for i, key in enumerate(keys):
        s = structure_from_pmg_dict(structures[key], source, i, id=_mb_id(int(key)))
        s.labels["n"] = float(values[i])
        out.append(s.validate())
    return out


def _verify_dielectric(n: np.ndarray, source: str) -> None:
    if len(n) != MATBENCH_DIELECTRIC_COUNT:
        raise DatasetError(
            f"{source}: expected {MATBENCH_DIELECTRIC_COUNT} structures, found {len(n)}; "
            f"reinstall with `pip install --no-deps {CRYSTAL_TOOLKIT_PIN}`"
        )
    mad = mean_absolute_deviation(n)
    if not abs(mad - MATBENCH_DIELECTRIC_MAD) < _MAD_TOL:
        raise DatasetError(
            f"{source}: label MAD {mad:.7f} != expected {MATBENCH_DIELECTRIC_MAD}; "
            f"reinstall with `pip install --no-deps {CRYSTAL_TOOLKIT_PIN}`"
        )


#: per-crystal columns of the bundled table besides ``n``: labels with ``load_matbench_dielectric(metadata=True)``
DIELECTRIC_METADATA = ("crystal_sys", "spg_symbol", "spg_num")


def matbench_dielectric_metadata(path: str | Path | None = None) -> dict[str, dict]:
    """``{id: {crystal_sys, spg_symbol, spg_num}}`` from the bundled table's own columns (Materials
    Project's symmetry analysis of each crystal, as shipped with the data)."""
    path = Path(path) if path is not None else matbench_dielectric_path()
    try:
        with gzip.open(path, "rb") as fh:
            table = json.loads(fh.read())
        columns = {c: table[c] for c in DIELECTRIC_METADATA}
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableFileError(
            f"no crystal-system columns ({type(exc).__name__}: {exc})", str(path)
        ) from None
    keys = sorted(columns["crystal_sys"], key=int)
    if len(keys) != MATBENCH_DIELECTRIC_COUNT:
        raise DatasetError(
            f"{path}: expected {MATBENCH_DIELECTRIC_COUNT} crystal systems, found {len(keys)}"
        )
    return {_mb_id(int(k)): {c: columns[c][k] for c in DIELECTRIC_METADATA} for k in keys}


def load_matbench_dielectric(
    limit: int | None = None,
    *,
    path: str | Path | None = None,
    cache: bool = True,
    metadata: bool = False,
) -> list[Structure]:
    """The 4764 matbench_dielectric structures, in matbench order, label ``n`` (refractive index).

    ``metadata=True`` adds the table's ``crystal_sys`` (cubic, tetragonal, ...), ``spg_symbol`` and
    ``spg_num`` labels (for grouping, e.g. ``data.group_by=crystal_sys``; name ``data.label=n``).

    Each structure has ``id`` ``mb-dielectric-0001`` ... (the ids used by :func:`matbench_folds`),
    ``source`` ``"matbench_dielectric"`` and ``index`` its row. The count and the label MAD are verified on
    every load (over all rows, also when ``limit`` keeps only the first ``limit``). Parsed arrays
    are cached (see :func:`atomssl.data.cache_dir`); ``path`` overrides the bundled file.
    """
    path = Path(path) if path is not None else matbench_dielectric_path()
    if not path.is_file():
        raise MissingFileError(
            f"install it with `pip install --no-deps {CRYSTAL_TOOLKIT_PIN}`", str(path)
        )
    source = str(path)
    cpath = cache_path("matbench_dielectric", path)
    arrays = load_cached(cpath, PACKED_KEYS | {"label_n"}) if cache else None
    if arrays is not None:
        try:
            _verify_dielectric(arrays["label_n"], f"{source} (cache {cpath})")
        except DatasetError:  # a damaged cache is rebuilt from the source
            arrays = None
    if arrays is None:
        arrays = pack_structures(_parse_dielectric(path), labels=["n"])
        _verify_dielectric(arrays["label_n"], source)
        if cache:
            save_cached(cpath, arrays)
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        arrays = _head(arrays, limit)
    out = unpack_structures(arrays, source="matbench_dielectric")
    if metadata:
        meta = matbench_dielectric_metadata(path)
        for st in out:
            st.labels.update(meta[st.id])
    return out


def _head(arrays: dict[str, np.ndarray], limit: int) -> dict[str, np.ndarray]:
    """The first ``limit`` structures of packed arrays."""
    n = len(arrays["offsets"]) - 1
    limit = min(limit, n)
    end = int(arrays["offsets"][limit])
    out = {}
    for key, value in arrays.items():
        if key == "offsets":
            out[key] = value[: limit + 1]
        elif key in ("numbers", "positions"):
            out[key] = value[:end]
        else:
            out[key] = value[:limit]
    return out


# --------------------------------------------------------------------------- splits
def matbench_metadata(task: str = "matbench_dielectric") -> dict:
    """matbench's own metadata of ``task`` (``n_samples``, ``mad``, ``target``, ``unit`` ...)."""
    path = _require(_METADATA_FILE, MATBENCH_PIN)
    meta = json.loads(path.read_text())
    if task not in meta:
        raise DatasetError(
            f"{path}: unknown matbench task {task!r} (known: {', '.join(sorted(meta))})"
        )
    return meta[task]


def _row_of(mbid: str, source: str) -> int:
    try:
        return int(mbid.rsplit("-", 1)[1]) - 1
    except (IndexError, ValueError):
        raise DatasetError(f"{source}: malformed matbench id {mbid!r}") from None


def matbench_folds(task: str = "matbench_dielectric") -> list[tuple[np.ndarray, np.ndarray]]:
    """The official matbench v0.1 splits of ``task``: 5 ``(train_idx, test_idx)`` row-index arrays.

    Indices are positions in the dataset as loaded (``mb-...-0001`` is row 0). Checked on load:
    test sets are disjoint and cover every row; each train set is the complement of its test set.
    """
    path = _require(_VALIDATION_FILE, MATBENCH_PIN)
    n_samples = int(matbench_metadata(task)["n_samples"])
    source = str(path)
    cpath = cache_dir() / f"matbench_folds-{task}-{source_key(path)}-v1.npz"
    arrays = load_cached(cpath)
    if arrays is not None:
        try:
            _verify_folds(arrays, n_samples, f"{source} [{task}] (cache {cpath})")
        except DatasetError:  # a damaged cache is rebuilt from the source
            arrays = None
    if arrays is None:
        try:
            with open(path, "rb") as fh:
                splits = json.loads(fh.read())["splits"]
        except (OSError, ValueError, KeyError) as exc:
            raise UnreadableFileError(
                f"not a matbench validation file ({type(exc).__name__}: {exc})", source
            ) from None
        if task not in splits:
            raise DatasetError(f"{source}: no splits for {task!r}")
        folds = splits[task]
        arrays = {}
        for k, name in enumerate(sorted(folds, key=lambda f: int(f.rsplit("_", 1)[1]))):
            for part in ("train", "test"):
                idx = np.array(
                    sorted(_row_of(i, source) for i in folds[name][part]), dtype=np.int64
                )
                arrays[f"fold{k}_{part}"] = idx
        _verify_folds(arrays, n_samples, f"{source} [{task}]")
        save_cached(cpath, arrays)
    n_folds = len(arrays) // 2
    return [(arrays[f"fold{k}_train"], arrays[f"fold{k}_test"]) for k in range(n_folds)]


def _verify_folds(arrays: dict[str, np.ndarray], n_samples: int, source: str) -> None:
    n_folds = len(arrays) // 2
    if n_folds < 2 or set(arrays) != {
        f"fold{k}_{p}" for k in range(n_folds) for p in ("train", "test")
    }:
        raise DatasetError(f"{source}: malformed folds ({sorted(arrays)})")
    tests = np.concatenate([arrays[f"fold{k}_test"] for k in range(n_folds)])
    if len(tests) != n_samples or not np.array_equal(np.sort(tests), np.arange(n_samples)):
        raise DatasetError(f"{source}: test sets do not partition the {n_samples} rows")
    everything = np.arange(n_samples)
    for k in range(n_folds):
        complement = np.setdiff1d(everything, arrays[f"fold{k}_test"])
        if not np.array_equal(np.sort(arrays[f"fold{k}_train"]), complement):
            raise DatasetError(
                f"{source}: fold {k} train set is not the complement of its test set"
            )
