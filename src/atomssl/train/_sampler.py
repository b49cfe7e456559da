"""Which samples each process trains on: exact per-rank shares of every epoch, equal step counts,
and a data loader that resumes in the middle of an epoch.

The order of epoch ``e`` is a permutation of ``range(n)`` fixed by ``(seed, e)`` alone (the one
torch's ``DistributedSampler`` draws, so a single process sees the batches it always did), or
``range(n)`` without shuffling. Under DDP the permutation is cut into contiguous per-rank shares
that differ in size by at most one sample: every sample is used exactly once per epoch and the
union over ranks is the whole epoch (``DistributedSampler`` pads by repeating samples instead).

Every rank makes the same number of batches: DDP all-reduces gradients once per step, so a rank
with one batch more would wait for the others forever. The batch count is that of the largest
share; a rank with one sample less ends the epoch with a smaller last batch (and, when its share
would otherwise fill one batch fewer, takes one sample less in a batch before it).

:class:`ResumableLoader` counts the batches it has handed to the training loop; its
``state_dict()`` goes into each checkpoint and, resuming from a checkpoint written in the middle of
an epoch, ``load_state_dict()`` makes the epoch continue with the next batch, so no sample is
repeated or skipped. (Lightning 2.6 saves a stateful training loader's state itself but does not
restore it when ``configure_optimizers`` has already built the loader, as
``trainer.estimated_stepping_batches`` does: :class:`LoaderPosition` restores it.) Nothing here holds a list of all samples: one epoch's permutation is an
``int64`` tensor (8 bytes a sample), each batch a short list.

Batches built in DataLoader worker processes come back as bytes (:class:`PackedBatch`), which
costs the training process far less than torch's one shared-memory file per tensor.
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Iterator
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Sampler, get_worker_info

from ..errors import ConfigError

log = logging.getLogger(__name__)


def rank_share(n: int, num_replicas: int, rank: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of an epoch of ``n`` samples."""
    return rank * n // num_replicas, (rank + 1) * n // num_replicas


def steps_per_epoch(n: int, batch_size: int, num_replicas: int = 1) -> int:
    """Batches each of ``num_replicas`` ranks makes from an epoch of ``n`` samples (the same for all).

    That of the largest share, ``ceil(ceil(n / R) / B)``, unless the smallest share holds fewer
    samples than that (only possible with ``batch_size == 1``): then the smallest share's size.
    """
    if n < num_replicas:
        raise ConfigError(
            f"{n} sample(s) for {num_replicas} processes: each process needs at least one "
            "(use more data, a larger split or fewer processes)"
        )
    q_min, q_max = n // num_replicas, -(-n // num_replicas)
    return min(-(-q_max // batch_size), q_min)


def batch_sizes(share: int, n_batches: int, batch_size: int) -> list[int]:
    """Sizes of ``n_batches`` non-empty batches holding ``share`` samples: full batches first,
    and each later batch left at least one sample (a share one smaller than the largest ends with
    smaller batches). Only when ``share > n_batches * batch_size`` (``batch_size == 1`` with
    uneven shares) do batches hold more than ``batch_size``: the sizes are then as even as possible."""
    if not 0 < n_batches <= share:
        raise ValueError(f"cannot make {n_batches} non-empty batches of {share} samples")
    if share > n_batches * batch_size:
        q, r = divmod(share, n_batches)
        return [q + 1] * r + [q] * (n_batches - r)
    sizes, left = [], share
    for j in range(n_batches):
        size = min(batch_size, left - (n_batches - j - 1))
        sizes.append(size)
        left -= size
    return sizes


class EpochOrder(Sampler[int]):
    """All sample indices of one epoch, in the order fixed by ``(seed, epoch)`` (``set_epoch``)."""

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0):
        self.n, self.shuffle, self.seed = int(n), bool(shuffle), int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> torch.Tensor:
        """The epoch's order as an ``int64`` tensor (never a Python list of all samples)."""
        if not self.shuffle:
            return torch.arange(self.n, dtype=torch.int64)
        g = torch.Generator()
        g.manual_seed(
            self.seed + self.epoch
        )  # as DistributedSampler: one process keeps its old order
        return torch.randperm(self.n, generator=g)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())


class ShardedBatchSampler(Sampler[list[int]]):
    """Batches of rank ``rank``'s share of each epoch (see the module docstring).

    ``sampler`` (an :class:`EpochOrder`) is where Lightning calls ``set_epoch`` at every epoch
    start (it looks for ``dataloader.batch_sampler.sampler.set_epoch``). ``resume_from(epoch, k)``
    makes the next iteration over ``epoch`` start at its batch ``k``.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
    ):
        if int(batch_size) < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {batch_size}")
        if not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        self.sampler = EpochOrder(n, shuffle, seed)
        self.batch_size, self.num_replicas, self.rank = (
            int(batch_size),
            int(num_replicas),
            int(rank),
        )
        self.n_batches = steps_per_epoch(self.sampler.n, self.batch_size, self.num_replicas)
        start, stop = rank_share(self.sampler.n, self.num_replicas, self.rank)
        self.start, self.stop = start, stop
        sizes = batch_sizes(stop - start, self.n_batches, self.batch_size)
        self.bounds = [0]
        for s in sizes:
            self.bounds.append(self.bounds[-1] + s)
        self._resume: tuple[int, int] | None = None

    @property
    def n(self) -> int:
        return self.sampler.n

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def resume_from(self, epoch: int, batches_done: int) -> None:
        """Skip the first ``batches_done`` batches the next time epoch ``epoch`` is iterated."""
        self._resume = (int(epoch), int(batches_done))

    def pending_skip(self) -> int:
        """Batches the next iteration skips (a resumed epoch), 0 otherwise."""
        if self._resume is not None and self._resume[0] == self.epoch:
            return min(self._resume[1], self.n_batches)
        return 0

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[int]]:
        skip = self.pending_skip()
        self._resume = None
        mine = self.sampler.indices()[self.start : self.stop]
        for j in range(skip, self.n_batches):
            yield mine[self.bounds[j] : self.bounds[j + 1]].tolist()


def _rebuild_tensor(data: bytes, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    if not data:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype).reshape(shape)


class _BytesPickler(pickle.Pickler):
    """Pickles CPU tensors as their raw bytes (numpy-supported dtypes; others the usual way)."""

    def reducer_override(self, obj):
        if (
            type(obj) is torch.Tensor
            and obj.device.type == "cpu"
            and not obj.requires_grad
            and obj.dtype in _NUMPY_DTYPES
        ):
            return _rebuild_tensor, (
                obj.contiguous().numpy().tobytes(),
                obj.dtype,
                tuple(obj.shape),
            )
        return NotImplemented


_NUMPY_DTYPES = {
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.float32,
    torch.float64,
}


class PackedBatch:
    """A batch a worker process pickled with its tensors as plain bytes.

    DataLoader workers otherwise hand each tensor over in its own shared-memory file: a graph
    batch holds ~25 small tensors, and receiving them cost the training process ~180 us a
    structure (about what building the graph costs); as bytes it is ~25 us.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data

    @classmethod
    def pack(cls, batch) -> PackedBatch:
        buf = io.BytesIO()
        _BytesPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(batch)
        return cls(buf.getvalue())

    def unpack(self):
        return pickle.loads(self.data)


class PackingCollate:
    """``collate_fn``, whose batches are packed (:class:`PackedBatch`) when made in a worker."""

    def __init__(self, collate_fn):
        self.collate_fn = collate_fn

    def __call__(self, items):
        batch = self.collate_fn(items)
        return batch if get_worker_info() is None else PackedBatch.pack(batch)


class _LoaderIterator:
    """A :class:`GraphLoader`'s iterator: made on the first ``next()`` (Lightning calls ``iter()``
    before ``set_epoch`` at the start of a fit, and worker processes would otherwise prefetch the
    wrong epoch); unpacks workers' batches; tells the loader of each batch handed out."""

    def __init__(self, loader: GraphLoader):
        self.loader = loader
        self._it: Iterator | None = None

    def __iter__(self) -> _LoaderIterator:
        return self

    def __next__(self):
        loader = self.loader
        if self._it is None:
            loader._on_start()
            self._it = DataLoader.__iter__(loader)
        batch = next(self._it)
        if isinstance(batch, PackedBatch):
            batch = batch.unpack()
            if loader.pin_memory and torch.cuda.is_available():
                batch = batch.pin_memory()
        loader._on_batch()
        return batch

    def __len__(self) -> int:
        return len(self.loader)


class GraphLoader(DataLoader):
    """A ``DataLoader`` of graph batches whose worker processes hand batches over as bytes
    (:class:`PackedBatch`) and whose iterator starts on the first ``next()``."""

    def __init__(self, dataset, collate_fn=None, **kwargs: Any):
        if collate_fn is not None and int(kwargs.get("num_workers") or 0) > 0:
            collate_fn = PackingCollate(collate_fn)
        super().__init__(dataset, collate_fn=collate_fn, **kwargs)

    def __iter__(self) -> _LoaderIterator:  # type: ignore[override]
        return _LoaderIterator(self)

    def _on_start(self) -> None:
        pass

    def _on_batch(self) -> None:
        pass


class ResumableLoader(GraphLoader):
    """A :class:`GraphLoader` over a :class:`ShardedBatchSampler` whose position within an epoch
    is saved in checkpoints and restored on resume (``state_dict`` / ``load_state_dict``).

    The saved position is the number of batches handed to the training loop, not the number of
    index batches drawn (worker processes prefetch ahead). Every rank makes the same number of
    batches in lockstep, so rank 0's position (the one saved) is every rank's.
    """

    batch_sampler: ShardedBatchSampler

    def __init__(self, dataset, batch_sampler: ShardedBatchSampler, **kwargs: Any):
        if not isinstance(batch_sampler, ShardedBatchSampler):
            raise TypeError("ResumableLoader needs a ShardedBatchSampler")
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self._epoch: int | None = None
        self._done = 0

    def _on_start(self) -> None:
        sampler = self.batch_sampler
        self._epoch, self._done = sampler.epoch, sampler.pending_skip()

    def _on_batch(self) -> None:
        self._done += 1

    def _layout(self) -> dict[str, Any]:
        s = self.batch_sampler
        return {
            "samples": s.n,
            "processes": s.num_replicas,
            "batch_size": s.batch_size,
            "shuffle": s.sampler.shuffle,
            "seed": s.sampler.seed,
        }

    def state_dict(self) -> dict[str, Any]:
        epoch = self.batch_sampler.epoch if self._epoch is None else self._epoch
        return {"epoch": int(epoch), "batches": int(self._done), **self._layout()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        layout = self._layout()
        saved = {k: state.get(k) for k in layout}
        if saved != layout:
            changed = ", ".join(
                f"{k} {saved[k]} -> {layout[k]}" for k in layout if saved[k] != layout[k]
            )
            log.warning(
                "resuming epoch %s: the data layout changed since the checkpoint (%s): the epoch restarts "
                "from its first batch (samples may be seen twice in it)",
                state.get("epoch"),
                changed,
            )
            return
        self.batch_sampler.resume_from(int(state["epoch"]), int(state["batches"]))
        self._epoch, self._done = int(state["epoch"]), int(state["batches"])
        log.info(
            "resuming epoch %d at batch %d of %d", self._epoch, self._done, len(self.batch_sampler)
        )


class LoaderPosition(Callback):
    """Saves the training :class:`ResumableLoader`'s position with the callbacks' state of each
    checkpoint and restores it when a fit resumes (before the first batch is drawn)."""

    def __init__(self) -> None:
        self._trainer = None
        self._pending: dict[str, Any] | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        loader = (
            getattr(self._trainer, "train_dataloader", None) if self._trainer is not None else None
        )
        return {"loader": loader.state_dict()} if isinstance(loader, ResumableLoader) else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict.get("loader")

    def on_train_start(self, trainer, pl_module) -> None:
        loader = trainer.train_dataloader
        if self._pending is not None and isinstance(loader, ResumableLoader):
            loader.load_state_dict(self._pending)
        self._pending = None
