"""QM9: 130,831 small organic molecules (H, C, N, O, F; up to 9 heavy atoms), B3LYP/6-31G(2df,p).

Read, without importing it, from the ``qm9pack`` wheel (MIT; Ramakrishnan et al., Sci. Data 1,
140022 (2014), doi:10.1038/sdata.2014.22): ``qm9pack/data/qm9_part{1,2,3}.csv`` (geometry in
Angstrom, SMILES, InChI, Mulliken charges, harmonic frequencies, the 15 scalar properties) and
``qm9pack/data/qm9_polarizability.csv`` (the polarizability tensor). The 3,054 molecules of the
original 133,885 that failed the QM9 consistency check are not in the wheel.

Labels keep the file's units (atomic units as computed): see :data:`QM9_TARGETS`. The four
atomization energies ``U0_atom``, ``U_atom``, ``H_atom``, ``G_atom`` (with the other 15 the
19 targets of the usual benchmarks, e.g. PyTorch Geometric's ``QM9``) are the total energies
minus QM9's own atomic reference energies (:data:`QM9_ATOMREF`, the ``atomref`` table of the
QM9 release), in Hartree. Molecules are non-periodic (``pbc`` False, zero cell); ids are
``qm9-000001`` ... after the QM9 index (``dsgdb9nsd_000001.xyz`` is ``qm9-000001``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import time
from pathlib import Path

import numpy as np

from ..errors import MissingFileError
from ._cache import cache_dir, load_cached, save_cached, source_key
from ._matbench import DatasetError
from ._qm9_parse import (
    _FLOAT_LABELS,
    _PARTS,
    _POLAR,
    _REQUIRED,
    _SOURCE,
    QM9_COUNT,
    QM9PACK_PIN,
    _cache_file,
    _count_rows,
    _parse,
    _qm9_id,
    _unstrings,
    _verify_arrays,
    _verify_count,
    qm9_paths,
)
from ._skipped import record_skipped
from ._structure import Structure

log = logging.getLogger(__name__)


def _arrays(
    path: str | Path | None = None, cache: bool = True
) -> tuple[dict[str, np.ndarray], str]:
    """All of QM9 as packed arrays (from the cache when it is current), and where it came from."""
    paths = _paths(path)
    source = str(paths[0].parent)
    cpath = _cache_file(paths)
    arrays = load_cached(cpath, _REQUIRED) if cache else None
    if arrays is not None:
        try:
            _verify_arrays(arrays, f"{source} (cache {cpath})")
        except DatasetError:  # a damaged cache is rebuilt from the source
            arrays = None
    if arrays is None:
        _verify_count(_count_rows(paths[:3]), source)  # a wrong file fails in a second
        t0 = time.perf_counter()
        log.info("parsing QM9 from %s (once; cached under %s)", source, cache_dir())
        arrays = _parse(paths)
        _verify_arrays(arrays, source)
        log.info(
            "parsed %d QM9 molecules in %.1f s", len(arrays["qm9_index"]), time.perf_counter() - t0
        )
        if cache:
            save_cached(cpath, arrays)
    return arrays, source


def _paths(path: str | Path | None) -> list[Path]:
    if path is None:
        return qm9_paths()
    folder = Path(path)
    paths = [folder / name for name in (*_PARTS, _POLAR)]
    for p in paths:
        if not p.is_file():
            raise MissingFileError(
                f"not a qm9pack data folder; install it with `pip install --no-deps {QM9PACK_PIN}`",
                str(p),
            )
    return paths


def _record(arrays: dict[str, np.ndarray], limited: bool) -> None:
    reasons = _unstrings(arrays["skipped_reason"])
    skipped = [(_qm9_id(int(q)), r) for q, r in zip(arrays["skipped_index"], reasons)]
    record_skipped(_SOURCE, skipped, None if limited else QM9_COUNT)


def _split_rows(
    all_ids: np.ndarray, split: str, seed: int, test_fraction: float, val_fraction: float
) -> np.ndarray:
    parts = qm9_split(seed, test_fraction, val_fraction)
    if split not in parts:
        raise ValueError(f"split must be one of {', '.join(parts)}, got {split!r}")
    return np.flatnonzero(np.isin(all_ids, parts[split]))


def load_qm9(
    limit: int | None = None,
    *,
    split: str | None = None,
    seed: int = 0,
    test_fraction: float = 0.1,
    val_fraction: float = 0.1,
    frequencies: bool = False,
    vdos: bool = False,
    vdos_sigma: float = 20.0,
    vdos_bins: int = 200,
    vdos_max: float = 4000.0,
    path: str | Path | None = None,
    cache: bool = True,
) -> list[Structure]:
    """QM9's 130,831 molecules (the first ``limit``), non-periodic, with the 19 targets as labels.

    Labels: :data:`QM9_TARGETS` (units there; energies in Hartree) and :data:`QM9_EXTRA_LABELS`;
    ``frequencies=True`` adds ``frequencies``, the harmonic frequencies (cm^-1) as an array (see
    also :func:`qm9_frequencies`). ``vdos=True`` adds ``vdos``, the vibrational density of states:
    each harmonic mode a Gaussian of width ``vdos_sigma`` (cm^-1) integrated over ``vdos_bins`` bins
    from 0 to ``vdos_max`` cm^-1, so the values sum to the number of modes, 3N-6 (3N-5 if linear),
    less tails outside the grid (imaginary modes, listed negative, are left out: see
    :func:`atomssl.data.vibrational_dos`). ``split`` (``"train"``, ``"val"``, ``"test"``) keeps one part of
    :func:`qm9_split` with the given ``seed`` and fractions. The row count is verified on every
    load; parsed arrays are cached under :func:`atomssl.data.cache_dir` (the first full load
    parses the tables once, ~30 s). A ``limit`` without a cache parses only the first rows.
    ``path``: a folder with qm9pack's four CSV files instead of the installed wheel.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    paths = _paths(path)
    source = str(paths[0].parent)
    if limit is not None and split is None and not (cache and _cache_file(paths).exists()):
        _verify_count(_count_rows(paths[:3]), source)
        arrays = _parse(paths, limit)
        _record(arrays, limited=True)
    else:
        arrays, source = _arrays(path, cache)
        _record(arrays, limited=False)
    n = len(arrays["qm9_index"])
    if split is None:
        rows = np.arange(n)
    else:
        ids_all = np.array([_qm9_id(int(q)) for q in arrays["qm9_index"]])
        rows = _split_rows(ids_all, split, seed, test_fraction, val_fraction)
    if limit is not None:
        rows = rows[:limit]
    out = _unpack(arrays, rows, frequencies or vdos)
    if vdos:
        from ._spectra import vibrational_dos

        for s in out:
            s.labels["vdos"] = vibrational_dos(
                s.labels["frequencies"], 0.0, vdos_max, vdos_bins, vdos_sigma
            )
            if not frequencies:
                del s.labels["frequencies"]
    return out


def _unpack(arrays: dict[str, np.ndarray], rows: np.ndarray, frequencies: bool) -> list[Structure]:
    off = arrays["offsets"].tolist()
    numbers = arrays["numbers"].astype(np.int64)
    positions = arrays["positions"]
    qidx = arrays["qm9_index"].tolist()
    keys = (*_FLOAT_LABELS, "qm9_index", "smiles", "inchi")
    columns = [arrays[f"label_{name}"][rows].tolist() for name in _FLOAT_LABELS]
    smiles, inchi = _unstrings(arrays["smiles"]), _unstrings(arrays["inchi"])
    rows = rows.tolist()
    values = list(
        zip(*columns, [qidx[i] for i in rows], [smiles[i] for i in rows], [inchi[i] for i in rows])
    )
    foff, freqs = arrays["freq_offsets"], arrays["frequencies"]
    doubled = (
        dict(zip(arrays["freq_doubled_index"].tolist(), arrays["freq_doubled_diff"].tolist()))
        if frequencies
        else {}
    )
    zero_cell = np.zeros((3, 3))
    no_pbc = np.zeros(3, dtype=bool)
    out = []
    for k, i in enumerate(rows):
        a, b = off[i], off[i + 1]
        lab = dict(zip(keys, values[k]))
        if frequencies:
            lab["frequencies"] = freqs[foff[i] : foff[i + 1]]
        s = Structure(
            numbers[a:b],
            positions[a:b],
            zero_cell,
            no_pbc,
            lab,
            id=_qm9_id(qidx[i]),
            source=_SOURCE,
            index=i,
        )
        if qidx[i] in doubled:
            s.warnings.append(
                f"qm9pack lists two sets of harmonic frequencies (differing by up to {doubled[qidx[i]]:.4g} cm^-1); the first is kept"
            )
        out.append(s)
    return out


def qm9_frequencies(
    limit: int | None = None, *, path: str | Path | None = None, cache: bool = True
) -> dict[str, np.ndarray]:
    """Harmonic vibrational frequencies (cm^-1, B3LYP/6-31G(2df,p), unscaled) by molecule id, in
    :func:`load_qm9` order: 3N-6 per molecule (3N-5 for the 5 linear ones).

    For 334 molecules qm9pack lists two sets one after the other (333 agree to 0.42 cm^-1,
    ``qm9-129152``'s differ by up to 484 cm^-1); the first set is kept, and those molecules carry a
    ``warnings`` entry saying so when loaded with ``load_qm9(frequencies=True)``."""
    return {
        s.id: s.labels["frequencies"]
        for s in load_qm9(limit, frequencies=True, path=path, cache=cache)
    }


def qm9_split(
    seed: int = 0, test_fraction: float = 0.1, val_fraction: float = 0.1
) -> dict[str, np.ndarray]:
    """A fixed train/val/test split of all 130,831 QM9 ids: ``{"train", "val", "test"}`` -> sorted ids.

    Deterministic and independent of library versions: molecules are ranked by a hash of
    ``(seed, id)``; the first ``round(test_fraction * 130831)`` are the test set, the next
    ``round(val_fraction * 130831)`` the validation set. Molecules skipped by validation keep
    their place, so the split never depends on what validates. Use ``load_qm9(split="train")``,
    or ``load_dataset("all_offline", exclude_qm9_test=True)``, to keep test molecules out of pretraining.
    """
    if not (0 <= test_fraction and 0 <= val_fraction and test_fraction + val_fraction <= 1):
        raise ValueError(
            f"fractions must be >= 0 and sum to <= 1, got test {test_fraction}, val {val_fraction}"
        )
    ids = np.array([_qm9_id(int(q)) for q in _all_indices()])
    keys = np.array(
        [
            int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(), "big")
            for i in ids
        ],
        dtype=np.uint64,
    )
    order = np.argsort(keys, kind="stable")
    n_test, n_val = round(test_fraction * len(ids)), round(val_fraction * len(ids))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return {"train": ids[np.sort(train)], "val": ids[np.sort(val)], "test": ids[np.sort(test)]}


def _all_indices() -> np.ndarray:
    """QM9 indices of all 130,831 molecules in the wheel, validated or not: from the parsed
    cache when there is one, else read off the tables' first column (~1 s); kept per process."""
    paths = qm9_paths()
    return _indices_of(tuple(paths), tuple(source_key(p) for p in paths)).copy()


@functools.lru_cache(maxsize=2)
def _indices_of(paths: tuple[Path, ...], stamps: tuple[str, ...]) -> np.ndarray:
    try:  # two small arrays of the cache, read without loading the rest
        with np.load(_cache_file(paths), allow_pickle=False) as z:
            idx = np.concatenate([z["qm9_index"].astype(np.int64), z["skipped_index"]])
    except (OSError, KeyError, ValueError, EOFError):
        first = re.compile(rb'^"dsgdb9nsd_(\d{6})\.xyz",', re.M)
        idx = np.array(
            [int(m) for p in paths[:3] for m in first.findall(p.read_bytes())], dtype=np.int64
        )
    _verify_count(len(idx), str(paths[0].parent))
    if len(np.unique(idx)) != len(idx):
        raise DatasetError(f"{paths[0].parent}: QM9 indices are not unique")
    return np.sort(idx)
