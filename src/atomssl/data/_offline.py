"""``all_offline``: every corpus that installs offline, in one list, each structure labelled ``corpus``.

Options leave out what a transfer evaluation tests on, so that pretraining stays inductive:
all of matbench_dielectric, or only the test rows of one official matbench fold, or parts of
the fixed QM9 split. :func:`all_offline_excluded_ids` returns exactly the ids left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ._matbench import _mb_id, load_matbench_dielectric, matbench_folds
from ._minerals import load_minerals
from ._molecular_crystals import load_csd_molecular_crystals
from ._prototypes import aflow_prototypes
from ._qm9 import load_qm9, qm9_split
from ._skipped import add_skipped, keep_valid, record_skipped
from ._structure import Structure

#: The corpora of ``all_offline``, in the order they are concatenated (the largest last).
OFFLINE_CORPORA = (
    "matbench_dielectric",
    "aflow_prototypes",
    "minerals",
    "csd_molecular_crystals",
    "qm9",
)


def _prototypes(limit: int | None = None) -> list[Structure]:
    return keep_valid(aflow_prototypes()[:limit], "aflow_prototypes", 288)


def _matbench(limit: int | None = None) -> list[Structure]:
    out = load_matbench_dielectric(limit)  # every row is validated when the file is parsed
    record_skipped("matbench_dielectric", [])
    return out


_LOADERS: dict[str, Callable[..., list[Structure]]] = {
    "matbench_dielectric": _matbench,
    "aflow_prototypes": _prototypes,
    "minerals": load_minerals,
    "csd_molecular_crystals": load_csd_molecular_crystals,
    "qm9": load_qm9,
}


def _qm9_parts(exclude_qm9: str | Sequence[str] | None) -> tuple[str, ...]:
    if exclude_qm9 is None:
        return ()
    parts = (exclude_qm9,) if isinstance(exclude_qm9, str) else tuple(exclude_qm9)
    for p in parts:
        if p not in ("train", "val", "test"):
            raise ValueError(
                f"exclude_qm9: parts of qm9_split are 'train', 'val', 'test'; got {p!r}"
            )
    return parts


def all_offline_excluded_ids(
    *,
    exclude_matbench: bool = False,
    exclude_matbench_fold: int | None = None,
    exclude_qm9: str | Sequence[str] | None = None,
    qm9_seed: int = 0,
    qm9_test_fraction: float = 0.1,
    qm9_val_fraction: float = 0.1,
) -> dict[str, list[str]]:
    """The ids :func:`load_all_offline` leaves out with these options, by corpus (sorted).

    ``exclude_matbench``: all 4,764 matbench_dielectric ids; ``exclude_matbench_fold=k``: the
    test rows of official matbench fold ``k`` (0..4, :func:`matbench_folds`); ``exclude_qm9``:
    ``"test"`` (and/or ``"val"``, ``"train"``) of :func:`qm9_split` with the given seed and fractions.
    """
    out: dict[str, list[str]] = {}
    if exclude_matbench:
        from ._matbench import MATBENCH_DIELECTRIC_COUNT

        out["matbench_dielectric"] = [_mb_id(i) for i in range(MATBENCH_DIELECTRIC_COUNT)]
    elif exclude_matbench_fold is not None:
        folds = matbench_folds("matbench_dielectric")
        k = int(exclude_matbench_fold)
        if not 0 <= k < len(folds) or k != exclude_matbench_fold:
            raise ValueError(
                f"exclude_matbench_fold must be an integer 0..{len(folds) - 1}, got {exclude_matbench_fold!r}"
            )
        out["matbench_dielectric"] = [_mb_id(int(i)) for i in sorted(folds[k][1])]
    parts = _qm9_parts(exclude_qm9)
    if parts:
        split = qm9_split(qm9_seed, qm9_test_fraction, qm9_val_fraction)
        out["qm9"] = sorted(i for p in parts for i in split[p].tolist())
    return out


def load_all_offline(
    limit: int | None = None,
    *,
    corpora: Sequence[str] | None = None,
    limit_per_corpus: int | None = None,
    exclude_matbench: bool = False,
    exclude_matbench_fold: int | None = None,
    exclude_qm9: str | Sequence[str] | None = None,
    qm9_seed: int = 0,
    qm9_test_fraction: float = 0.1,
    qm9_val_fraction: float = 0.1,
    drop_duplicates: bool = False,
) -> list[Structure]:
    """matbench_dielectric, aflow_prototypes, minerals, csd_molecular_crystals and qm9, in that
    order (``corpora`` picks some of them), each structure labelled ``corpus`` (its corpus name).

    ``limit``: at most that many structures in all (corpora after the limit are not read);
    ``limit_per_corpus``: at most that many from each. Exclusions: see
    :func:`all_offline_excluded_ids` (applied before the limits). Each corpus keeps its own ids,
    which are unique across corpora. Structures that fail validation are skipped and reported
    (:func:`skipped_structures`). ``drop_duplicates``: leave out a crystal identical (species and
    positions in stored order to 1e-4 A, cell) to one read before; the 180 minerals are all
    identical to AFLOW prototypes (robocrys took them from the same library), so this drops
    them, each recorded as skipped.
    """
    names = (
        OFFLINE_CORPORA
        if corpora is None
        else tuple([corpora] if isinstance(corpora, str) else corpora)
    )
    unknown = [c for c in names if c not in _LOADERS]
    if unknown:
        raise ValueError(
            f"unknown corpus {unknown[0]!r}; all_offline has {', '.join(OFFLINE_CORPORA)}"
        )
    for n in (limit, limit_per_corpus):
        if n is not None and n < 0:
            raise ValueError(f"limits must be >= 0, got {n}")
    excluded = {
        corpus: set(ids)
        for corpus, ids in all_offline_excluded_ids(
            exclude_matbench=exclude_matbench,
            exclude_matbench_fold=exclude_matbench_fold,
            exclude_qm9=exclude_qm9 if "qm9" in names else None,
            qm9_seed=qm9_seed,
            qm9_test_fraction=qm9_test_fraction,
            qm9_val_fraction=qm9_val_fraction,
        ).items()
    }
    out: list[Structure] = []
    seen: dict[bytes, list[tuple[Structure, str]]] = {}
    for corpus in names:
        room = [
            n
            for n in (limit_per_corpus, None if limit is None else limit - len(out))
            if n is not None
        ]
        cap = min(room) if room else None
        if cap == 0 or (
            corpus == "matbench_dielectric" and exclude_matbench
        ):  # left out entirely: not even read
            continue
        drop = excluded.get(corpus, set())
        # the first cap + len(drop) structures hold at least cap that are not left out
        structures = _LOADERS[corpus](None if cap is None else cap + len(drop))
        if drop:
            structures = [s for s in structures if s.id not in drop][:cap]
        if drop_duplicates:
            structures = _drop_seen(structures, corpus, seen)
        for s in structures:
            s.labels["corpus"] = corpus
        out.extend(structures)
    return out


def _same(a: Structure, b: Structure) -> bool:
    return np.allclose(a.cell, b.cell, rtol=0, atol=1e-5) and np.allclose(
        a.positions, b.positions, rtol=0, atol=1e-4
    )


def _drop_seen(
    structures: list[Structure], corpus: str, seen: dict[bytes, list[tuple[Structure, str]]]
) -> list[Structure]:
    """The periodic structures not identical (species and positions in stored order, cell) to one
    seen before; molecules are kept (QM9 has no crystal twin)."""
    keep, dups = [], []
    for s in structures:
        if not s.pbc.any():
            keep.append(s)
            continue
        bucket = seen.setdefault(s.numbers.tobytes() + s.pbc.tobytes(), [])
        twin = next((where for other, where in bucket if _same(s, other)), None)
        if twin is not None:
            dups.append((s.id, f"duplicate: identical to {twin}"))
            continue
        bucket.append((s, f"{s.id} ({corpus})"))
        keep.append(s)
    add_skipped(corpus, dups)
    return keep
