"""Structures -> graphs -> batches for training.

Two ways to feed a run:

* in memory (default for files, folders, datasets and ``synthetic``): graphs are built once per
  backbone ``graph_spec`` and kept (a small process-wide cache lets several runs on the same data
  share them);
* streamed (``data.in_memory: false``, and always for a sharded corpus folder, one holding
  ``manifest.json``): structures are read lazily from an ASE database store
  (:class:`atomssl.data.StructureStore`, ``*.db``) or a corpus, and each graph is built when its
  batch is, in the DataLoader's worker processes (``data.num_workers``). No list of all
  structures or graphs is made.

Either way the order of epoch ``e`` depends only on ``(seed, e)``, and under DDP each process
trains on its own exact share of every epoch with the same number of steps as the others
(:mod:`atomssl.train._sampler`); the training loader's position is saved in checkpoints, so a run
resumed from a mid-epoch checkpoint continues the epoch without repeating or skipping samples.
Every graph carries ``sample_id``, its index in the concatenated sources.

A data source is a dataset name (``atomssl.data.load_dataset``), a file, a folder, a store, a
corpus folder, or ``synthetic`` (small rattled, strained crystals built with ASE, for tests and
demos); in a config each is a string or a mapping ``{name: ..., limit: N, ...options}``.
"""

from __future__ import annotations

import copy
import json
import logging
from collections import OrderedDict
from collections.abc import Sequence, Sized
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data import Structure
from ..errors import ConfigError, StructureError
from ..graph import collate, to_graph
from ._sampler import GraphLoader, ResumableLoader, ShardedBatchSampler
from ._sources import (  # noqa: F401  (re-exported)
    _PROTOTYPES,
    DATA_DEFAULTS,
    _Concat,
    _Head,
    _head,
    _source_entry,
    has_corpus,
    load_source,
    load_structures,
    read_warnings,
    record_read_warnings,
    streams,
    synthetic_crystals,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- graphs
_GRAPH_CACHE: OrderedDict[str, tuple[list, list[int]]] = OrderedDict()  # -> (graphs, kept)
_CACHE_SIZE = 2


def build_graphs(
    structures: Sequence[Structure],
    graph_spec: dict,
    skip_bad: bool = True,
    cache_key: str | None = None,
):
    """Graphs of ``structures`` for ``graph_spec`` (``{"cutoff": r}`` or ``{"k": k}``).

    Returns ``(graphs, kept_indices)``; structures failing validation are skipped with a warning
    when ``skip_bad`` (else their :class:`StructureError` is raised). With ``cache_key`` the
    result is remembered for the next call with the same key and spec.
    """
    key = None if cache_key is None else json.dumps([cache_key, graph_spec], sort_keys=True)
    if key is not None and key in _GRAPH_CACHE:
        _GRAPH_CACHE.move_to_end(key)
        return _GRAPH_CACHE[key]
    graphs, kept, bad = [], [], []
    for i in range(len(structures)):
        s = structures[i]
        try:
            graphs.append(to_graph(s, **graph_spec))
            kept.append(i)
        except StructureError as err:
            if not skip_bad:
                raise
            bad.append(err)
    if bad:
        log.warning("skipped %d structure(s) that failed validation; first: %s", len(bad), bad[0])
    if not graphs:
        raise ConfigError("no usable structure left to build graphs from")
    result = (graphs, kept)
    if key is not None:
        _GRAPH_CACHE[key] = result
        while len(_GRAPH_CACHE) > _CACHE_SIZE:
            _GRAPH_CACHE.popitem(last=False)
    return result


class GraphDataset(Dataset):
    """Graphs for a backbone: prebuilt in memory, or built on access from a lazy sequence.

    Each item is a graph carrying ``sample_id`` (its index here); a prebuilt graph is shallow-copied
    first, so cached graphs stay untouched. Built on access, a structure failing validation gives
    ``None`` with ``skip_bad`` (and a warning; :func:`collate_skipping` drops it), else raises.
    """

    def __init__(
        self,
        structures: Sequence[Structure],
        graph_spec: dict,
        graphs: list | None = None,
        skip_bad: bool = False,
    ):
        self.structures, self.graph_spec, self.graphs = structures, dict(graph_spec), graphs
        self.skip_bad = bool(skip_bad)

    def __len__(self) -> int:
        return len(self.graphs) if self.graphs is not None else len(self.structures)

    def __getitem__(self, i: int):
        if self.graphs is not None:
            g = copy.copy(self.graphs[i])
        else:
            try:
                g = to_graph(self.structures[i], **self.graph_spec)
            except StructureError as err:
                if not self.skip_bad:
                    raise
                log.warning("skipped a structure that failed validation: %s", err)
                return None
        g.sample_id = torch.tensor([int(i)])
        return g


def collate_skipping(items: list):
    """:func:`atomssl.graph.collate` of the graphs of ``items`` that are not ``None``."""
    graphs = [g for g in items if g is not None]
    if not graphs:
        raise ConfigError(
            f"all {len(items)} structure(s) of a batch failed validation (see the warnings above)"
        )
    return collate(graphs)


#: most graph-building worker processes ``data.num_workers: auto`` starts per training process
AUTO_WORKERS_MAX = 4


def resolve_num_workers(value: int | str, streamed: bool, processes: int = 1) -> int:
    """The DataLoader worker processes of one training process for ``data.num_workers``.

    An integer is taken as it is. ``auto`` (the default) builds graphs in workers only when the
    data streams (graphs of data held in memory are built once before training, so workers would
    only add traffic) and the run is a single process (``processes``, the world size, is 1): one
    worker per CPU core the process may run on beyond the one it trains on, at most
    :data:`AUTO_WORKERS_MAX`. A run of several processes (DDP, on one node or many) gets none:
    workers are forked from a process that has started ``torch.distributed``, and such a fork can
    deadlock (seen here: two gloo nodes on one machine hung with each node's single-threaded worker
    blocked on a futex). Set an integer to use workers there anyway.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"data.num_workers must be an integer >= 0 or auto, got {value!r}")
    if isinstance(value, str):
        if value.strip().lower() != "auto":
            raise ConfigError(f"data.num_workers must be an integer >= 0 or auto, got {value!r}")
        if not streamed or int(processes) > 1:
            return 0
        import os

        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cores = os.cpu_count() or 1
        return max(0, min(AUTO_WORKERS_MAX, cores - 1))
    if value < 0:
        raise ConfigError(f"data.num_workers must be an integer >= 0 or auto, got {value}")
    return value


class StreamedGraphs(Sequence):
    """Graphs of ``structures[indices[i]]``, built on access (streamed fine-tuning): a slice gives
    a list; ``subset(idx)`` another lazy view. ``num_workers`` (an integer or ``auto``, see
    :func:`resolve_num_workers`) is what loaders over it use."""

    def __init__(
        self,
        structures: Sequence[Structure],
        indices,
        graph_spec: dict,
        num_workers: int | str = 0,
    ):
        self.structures, self.graph_spec = structures, dict(graph_spec)
        self.indices = np.asarray(indices, dtype=np.int64)
        resolve_num_workers(num_workers, True)  # a bad value fails here, before any training
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return to_graph(self.structures[int(self.indices[i])], **self.graph_spec)

    def subset(self, idx) -> StreamedGraphs:
        return StreamedGraphs(
            self.structures,
            self.indices[np.asarray(idx, dtype=np.int64)],
            self.graph_spec,
            self.num_workers,
        )


class StreamedIds(Sequence):
    """Ids of ``structures[indices[i]]`` (read on access), as fine-tuning names its rows."""

    def __init__(self, structures: Sequence[Structure], indices):
        self.structures, self.indices = structures, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        s = self.structures[int(self.indices[i])]
        return s.id or (f"{s.source}@{s.index}" if s.source else str(int(self.indices[i])))

    def subset(self, idx) -> StreamedIds:
        return StreamedIds(self.structures, self.indices[np.asarray(idx, dtype=np.int64)])


def graph_batches(graphs: Sequence, batch_size: int):
    """Collated batches of ``graphs`` in order; :class:`StreamedGraphs` are built in its workers."""
    if isinstance(graphs, StreamedGraphs):
        workers = resolve_num_workers(graphs.num_workers, True)
        yield from GraphLoader(
            graphs,
            batch_size=int(batch_size),
            shuffle=False,
            collate_fn=collate,
            num_workers=workers,
        )
        return
    for i in range(0, len(graphs), batch_size):
        yield collate(list(graphs[i : i + batch_size]))


class _Subset(Dataset):
    def __init__(self, base: Dataset, indices: np.ndarray):
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.base[int(self.indices[i])]


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random train/validation split (held-out structures), fixed by ``seed``."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n_val == 0 and n > 1:
        n_val = 1
    if n - n_val < 1:
        raise ConfigError(
            f"only {n} structure(s): nothing left to train on after the validation split"
        )
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class PretrainDataModule(L.LightningDataModule):
    """Train/validation loaders of graphs for one backbone ``graph_spec``.

    The shuffle of epoch ``e`` is a function of ``(seed, e)`` only; each process takes an exact
    share of it with the same number of batches as the others (:class:`ShardedBatchSampler`), and
    the training loader resumes mid-epoch (:class:`ResumableLoader`). ``data.in_memory: false``
    (or a corpus folder) streams: graphs are built in ``data.num_workers`` worker processes.
    """

    def __init__(self, cfg: dict[str, Any], graph_spec: dict, seed: int = 0):
        super().__init__()
        self.cfg = {**DATA_DEFAULTS, **cfg}
        self.graph_spec, self.seed = dict(graph_spec), int(seed)
        self.train_set: _Subset | None = None
        self.val_set: _Subset | None = None
        self.streamed = False

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        structures = load_structures(self.cfg)
        self.structures = structures
        self.streamed = streams(self.cfg, structures)
        if self.streamed:
            dataset = GraphDataset(structures, self.graph_spec, skip_bad=bool(self.cfg["skip_bad"]))
        else:
            key = json.dumps(
                {k: self.cfg[k] for k in ("sources", "limit", "skip_bad")},
                sort_keys=True,
                default=str,
            )
            graphs, _ = build_graphs(
                structures, self.graph_spec, self.cfg["skip_bad"], cache_key=key
            )
            dataset = GraphDataset(structures, self.graph_spec, graphs)
        train_idx, val_idx = split_indices(len(dataset), float(self.cfg["val_fraction"]), self.seed)
        self.train_set, self.val_set = _Subset(dataset, train_idx), _Subset(dataset, val_idx)
        log.info(
            "data: %d training, %d validation structures%s",
            len(train_idx),
            len(val_idx),
            " (streamed)" if self.streamed else "",
        )

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        workers = resolve_num_workers(self.cfg["num_workers"], self.streamed, world)
        if shuffle and rank == 0:
            log.info(
                "data: graphs built in %s",
                f"{workers} worker process(es)" if workers else "the training process",
            )
        return make_loader(dataset, int(self.cfg["batch_size"]), world, rank, shuffle, self.seed, workers,
                           resumable=shuffle, pin_memory=_on_cuda(trainer))  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None  # setup() ran
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        assert self.val_set is not None  # setup() ran
        return self._loader(self.val_set, shuffle=False) if len(self.val_set) else []


def make_loader(
    dataset: Dataset,
    batch_size: int,
    num_replicas: int = 1,
    rank: int = 0,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    resumable: bool = True,
    pin_memory: bool = False,
    collate_fn=collate_skipping,
) -> DataLoader:
    """Batches of rank ``rank``'s share of ``dataset`` (see :mod:`atomssl.train._sampler`): a
    :class:`ResumableLoader` for training (``resumable``), a :class:`GraphLoader` otherwise."""
    if not isinstance(dataset, Sized):
        raise TypeError(f"make_loader needs a dataset with a length, not {type(dataset).__name__}")
    sampler = ShardedBatchSampler(len(dataset), batch_size, num_replicas, rank, shuffle, seed)
    cls = ResumableLoader if resumable else GraphLoader
    workers = int(num_workers)
    return cls(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=workers,
               persistent_workers=workers > 0, pin_memory=bool(pin_memory))  # fmt: skip


def _on_cuda(trainer) -> bool:
    try:
        return trainer is not None and trainer.strategy.root_device.type == "cuda"
    except Exception:  # no strategy set up yet
        return False
