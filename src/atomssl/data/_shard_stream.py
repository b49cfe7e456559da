"""The input of a shard import as one ordered stream of entries, parsed by worker processes.

The stream: the sources (files, folders expanded in sorted order, in-memory structures) in order,
each file's frames in order. A position in it is ``[item, ordinal]``: the ``ordinal``-th entry
(structure, or the :class:`StructureError` of a bad entry) of source ``item``. With ``workers``
> 1 whole source files are parsed (and validated) by a pool of worker processes, a few files
ahead, and handed on in order: the stream is the same for any number of workers. A single large
file gains nothing from workers (it is one task, held in memory once by the worker). Workers
start with the platform's default method (fork on Linux; spawn elsewhere needs the usual
``if __name__ == "__main__":`` guard in a script). A source
``dataset:NAME?key=value`` is a built-in dataset (:func:`atomssl.data.load_dataset`), one task;
consecutive in-memory structures are one source, handled in the writer's process.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..errors import AtomsslError, StructureError
from ._sources import iter_entries, object_entry
from ._structure import Structure


def is_path(item: Any) -> bool:
    return isinstance(item, (str, os.PathLike))


def _encode(entry: Structure | StructureError) -> tuple:
    if isinstance(entry, StructureError):  # exceptions pickle by message only: send the fields
        return ("e", type(entry), entry.reason, entry.source, entry.index)
    return ("s", entry)


def _decode(packed: tuple) -> Structure | StructureError:
    if packed[0] == "s":
        return packed[1]
    _, cls, reason, source, index = packed
    return cls(reason, source, index)


def is_dataset(item: Any) -> bool:
    """``dataset:NAME?key=value&...``: a built-in dataset, loaded by :func:`load_dataset_source`."""
    if not isinstance(item, str):
        return False
    from ._datasets import is_dataset_source

    return is_dataset_source(item)


class ObjectRun(list):
    """Consecutive in-memory structures among the sources: one source of the stream."""


def group_objects(items: list[Any]) -> list[Any]:
    """``items`` with each run of consecutive in-memory structures made one :class:`ObjectRun`."""
    out: list[Any] = []
    for x in items:
        if is_path(x):
            out.append(x)
        elif out and isinstance(out[-1], ObjectRun):
            out[-1].append(x)
        else:
            out.append(ObjectRun([x]))
    return out


def _item_entries(
    item: Any, n_object: int, validate: bool, format: str | None, options: dict[str, Any]
):
    """The entries of one source: a file, a built-in dataset, or a run of in-memory structures
    (``index``: the place among all in-memory sources, as :func:`iter_entries` numbers them)."""
    if is_dataset(item):
        from ._datasets import load_dataset_source

        yield from iter_entries(load_dataset_source(item), validate=validate)
    elif isinstance(item, ObjectRun):
        for n, obj in enumerate(item, start=n_object):
            yield object_entry(obj, n, validate)
    else:
        yield from iter_entries([item], validate=validate, format=format, **options)


def _parse_item(
    item: str, validate: bool, format: str | None, options: dict[str, Any]
) -> list[tuple]:
    """All entries of one source file or dataset (run in a worker process)."""
    return [_encode(e) for e in _item_entries(item, 0, validate, format, options)]


def stream_entries(
    items: list[Any],
    start: list[int],
    workers: int,
    validate: bool,
    format: str | None,
    options: dict[str, Any],
    done=None,
) -> Iterator[tuple[int, int, Structure | StructureError]]:
    """(item, ordinal, entry) from position ``start`` on, in stream order, however many workers."""
    first, skip = start
    n_objects, seen = [], 0
    for x in items:
        n_objects.append(seen)
        seen += len(x) if isinstance(x, ObjectRun) else 0

    def local(k: int):
        return _item_entries(items[k], n_objects[k], validate, format, options)

    pool = None
    if workers > 1 and sum(is_path(x) for x in items[first:]) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # the platform's default start method (fork on Linux before Python 3.14): "spawn" would
        # import atomssl again in each worker, and cannot run from a script read on stdin
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context())
    failed = True
    try:
        if pool is None:
            sequence = ((k, local(k)) for k in range(first, len(items)))
        else:
            sequence = _parsed_ahead(
                pool, items, first, 2 * workers, local, (validate, format, options)
            )
        for k, entries in sequence:
            for n, entry in enumerate(entries):
                if k == first and n < skip:
                    continue  # in a shard already complete
                yield k, n, entry
            if done is not None:
                done()
        failed = False
    finally:
        if pool is not None:  # after an error, waiting could hang on a broken pool (CPython 3.11)
            pool.shutdown(wait=not failed, cancel_futures=True)


def _parsed_ahead(pool, items: list[Any], first: int, window: int, local, args: tuple):
    """(item, its entries) in order, source files parsed by ``pool`` up to ``window`` files ahead."""
    ahead: deque = deque()
    todo = iter(range(first, len(items)))
    while True:
        while len(ahead) < window:
            k = next(todo, None)
            if k is None:
                break
            ahead.append(
                (
                    k,
                    pool.submit(_parse_item, os.fspath(items[k]), *args)
                    if is_path(items[k])
                    else None,
                )
            )
        if not ahead:
            return
        k, fut = ahead.popleft()
        if fut is None:
            yield k, local(k)
            continue
        try:
            packed = fut.result()
        except BrokenProcessPool as exc:
            raise AtomsslError(f"{items[k]}: the worker process parsing it died ({exc}); run the import again "
                               "(it resumes) with fewer workers") from None  # fmt: skip
        yield k, (_decode(p) for p in packed)
