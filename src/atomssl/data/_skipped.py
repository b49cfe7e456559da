"""Structures of the offline corpora left out (failing :meth:`Structure.validate`, unreadable, or
duplicates): skipped, counted, logged.

Every loader of a bundled corpus keeps only structures that validate; each one it leaves out is
recorded here with its reason (never silently) and reported in one log warning per load.
:func:`skipped_structures` returns what the last load of a corpus left out.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

from ..errors import StructureError
from ._structure import Structure

log = logging.getLogger("atomssl.data")

_SKIPPED: dict[str, list[tuple[str, str]]] = {}


def record_skipped(
    corpus: str, skipped: Iterable[tuple[str, str]], total: int | None = None
) -> None:
    """Remember (and log) the ``(id, reason)`` pairs a load of ``corpus`` left out."""
    skipped = list(skipped)
    _SKIPPED[corpus] = skipped
    if skipped:
        kinds = Counter(reason.split(":", 1)[0] for _, reason in skipped)
        of = f" of {total}" if total is not None else ""
        # known duplicates are expected (documented); anything else is a warning
        level = (
            logging.INFO if all(r.startswith("duplicate") for _, r in skipped) else logging.WARNING
        )
        log.log(
            level,
            "%s: skipped %d structure(s)%s (%s); first: %s: %s",
            corpus,
            len(skipped),
            of,
            ", ".join(f"{n} {k}" for k, n in kinds.most_common()),
            *skipped[0],
        )


def add_skipped(corpus: str, skipped: Iterable[tuple[str, str]]) -> None:
    """Record (and log) more ``(id, reason)`` pairs for ``corpus`` after its load (e.g. duplicates)."""
    skipped = list(skipped)
    if skipped:
        record_skipped(corpus, _SKIPPED.get(corpus, []) + skipped)


def split_valid(structures: Iterable[Structure]) -> tuple[list[Structure], list[tuple[str, str]]]:
    """The structures that pass :meth:`Structure.validate`, and ``(id, reason)`` of the others."""
    good, bad = [], []
    for s in structures:
        try:
            good.append(s.validate())
        except StructureError as err:
            bad.append((s.id, f"{err.kind}: {err.reason}"))
    return good, bad


def keep_valid(
    structures: Iterable[Structure], corpus: str, total: int | None = None
) -> list[Structure]:
    """The structures that pass :meth:`Structure.validate`; the others are recorded for ``corpus``."""
    good, bad = split_valid(structures)
    record_skipped(corpus, bad, total)
    return good


def skipped_structures(
    corpus: str | None = None,
) -> dict[str, list[tuple[str, str]]] | list[tuple[str, str]]:
    """``(id, reason)`` of every structure the last load of ``corpus`` skipped (all corpora loaded
    so far when ``corpus`` is ``None``). Empty when everything validated, or nothing was loaded."""
    if corpus is None:
        return {k: list(v) for k, v in _SKIPPED.items()}
    return list(_SKIPPED.get(corpus, []))
