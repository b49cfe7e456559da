"""Embeddings from a pretrained backbone: one row per structure and one per atom.

Output arrays (``.npz``, written atomically):
``structure`` (n_structures, embedding_dim) in input order (float32, or float64 when computed so); ``atom`` (n_atoms_total, node_dim);
``atom_index`` (n_atoms_total,) the structure row of each atom row (atoms keep their input order);
``ids`` and ``sources`` name each structure row: ``ids`` is the structure's own id when it has one
and no other row shares it (a database row's ``unique_id``, an extxyz ``id=``, a CIF data block
name), else ``SOURCE@INDEX`` (``SOURCE`` for a file holding one structure; ``#ROW`` for an
in-memory structure with neither); ``sources`` is
``SOURCE@INDEX``. ``skipped`` lists the inputs left out with ``skip_bad`` (``SOURCE [index I]:
KIND: REASON``, one string each), so every row of the output stays traceable to its input.

Large structures are processed in chunks, exactly (the same numbers as one forward pass up to
float round-off), once a batch has more than ``max_edges_per_chunk`` bonds (default
:data:`DEFAULT_MAX_EDGES_PER_CHUNK`): backbones with an ``edge_chunk`` attribute (MEGNet) run
their per-bond work that many bonds at a time; backbones with ``receptive_hops`` and
``graph_from_nodes`` (Equiformer) run one spatial block of atoms at a time, together with every
atom within ``receptive_hops`` bonds of it (the halo), keep the block's node outputs and pool them
at the end. Other backbones (GAA, whose kNN clouds need every atom's full cloud) run whole.
Batches are also cut once they hold that many bonds.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import Structure
from ..errors import CheckpointError, EmptyInputError, StructureError
from ..graph import collate, to_graph
from ..utils import atomic_save_npz
from ._checkpoint import load_backbone

#: name of the checkpoint shipped in package data ``atomssl/weights/`` (used when none is given)
DEFAULT_CHECKPOINT_NAME = "default.pt"
#: bonds above which a batch is embedded in chunks (MEGNet, 100 Gaussians, float32: ~50 MB per chunk)
DEFAULT_MAX_EDGES_PER_CHUNK = 2**17


def default_checkpoint() -> Path | None:
    """The checkpoint shipped with atomssl, or ``None`` when this build ships none."""
    try:
        path = resources.files("atomssl") / "weights" / DEFAULT_CHECKPOINT_NAME
    except (ModuleNotFoundError, FileNotFoundError):  # pragma: no cover
        return None
    return Path(str(path)) if path.is_file() else None


def resolve_checkpoint(checkpoint: str | os.PathLike | None) -> Path:
    if checkpoint is not None:
        return Path(checkpoint)
    found = default_checkpoint()
    if found is None:
        raise CheckpointError(
            "no --checkpoint given and this atomssl ships no default checkpoint (atomssl/weights/)"
        )
    return found


def _atom_blocks(pos: torch.Tensor, n_blocks: int) -> list[torch.Tensor]:
    """Atom indices grouped into ~``n_blocks`` boxes of a grid over their bounding box (compact
    blocks keep the halo around each small)."""
    per_axis = max(1, math.ceil(n_blocks ** (1 / 3) - 1e-9))
    lo, hi = pos.min(0).values, pos.max(0).values
    ijk = ((pos - lo) / (hi - lo).clamp(min=1e-9) * per_axis).long().clamp(0, per_axis - 1)
    key = (ijk[:, 0] * per_axis + ijk[:, 1]) * per_axis + ijk[:, 2]
    order = torch.argsort(key, stable=True)
    counts = torch.bincount(key, minlength=per_axis**3).tolist()
    return [b for b in torch.split(order, counts) if len(b)]


def _halo_forward(backbone, graph, max_edges: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(graph row, node rows) of one structure, block by block with a ``receptive_hops`` halo."""
    from torch_geometric.data import Data

    n = graph.num_nodes
    src, dst = graph.edge_index
    node = None
    for core in _atom_blocks(graph.pos, math.ceil(src.shape[0] / max_edges)):
        keep = torch.zeros(n, dtype=torch.bool)
        keep[core] = True
        for _ in range(backbone.receptive_hops):  # centres gather from their neighbours (dst)
            keep[dst[keep[src]]] = True
        atoms = keep.nonzero().squeeze(1)
        edges = keep[src] & keep[dst]  # every bond of the atoms within receptive_hops - 1 hops
        local = torch.full((n,), -1, dtype=torch.long)
        local[atoms] = torch.arange(len(atoms))
        sub = Data(z=graph.z[atoms], pos=graph.pos[atoms], cell=graph.cell, pbc=graph.pbc,
                   edge_index=local[graph.edge_index[:, edges]], shift=graph.shift[edges],
                   natoms=torch.tensor([len(atoms)]), num_nodes=len(atoms))  # fmt: skip
        out = backbone(collate([sub]).to(device)).node
        if node is None:
            node = out.new_empty((n, out.shape[1]))
        node[core.to(out.device)] = out[local[core].to(out.device)]
        del out, sub
    assert node is not None  # at least one block: the structure has atoms
    rows = backbone.graph_from_nodes(node, torch.zeros(n, dtype=torch.long, device=node.device), 1)
    return rows, node


@torch.no_grad()
def embed_structures(
    structures: Iterable[Any],
    backbone,
    batch_size: int = 32,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    max_edges_per_chunk: int | None = DEFAULT_MAX_EDGES_PER_CHUNK,
    skip_bad: bool = False,
    errors: list[StructureError] | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Run ``backbone`` (eval mode) on ``structures`` and collect graph and node embeddings.

    ``max_edges_per_chunk``: bonds above which a batch is cut and a structure embedded in
    chunks (see the module docstring; ``None`` or 0: never). ``structures`` may hold
    :class:`StructureError` entries (as :func:`atomssl.data.iter_entries` yields them): the first
    bad entry (or one whose graph cannot be built) raises, unless ``skip_bad``: then it is left
    out, appended to ``errors`` (when given) and listed in the ``skipped`` array.
    Raises :class:`EmptyInputError` when no structure is left to embed. ``progress``: a bar
    over the structures (on stderr, once the loop has run a few seconds)."""
    # the caller's module is converted in place by .to(): note its state and restore it at the end
    first = next(iter(backbone.parameters()), None)
    restore = (first.dtype, first.device, backbone.training) if first is not None else None
    backbone = backbone.to(device=device, dtype=dtype).eval()
    try:
        if progress:
            from ..utils import progress_bar

            structures = progress_bar(structures, desc="embed", unit="struct", leave=False)
        return _embed(
            structures, backbone, batch_size, dtype, device, max_edges_per_chunk, skip_bad, errors
        )
    finally:
        if restore is not None:
            backbone.to(device=restore[1], dtype=restore[0]).train(restore[2])


def _embed(
    structures, backbone, batch_size, dtype, device, max_edges_per_chunk, skip_bad, errors
) -> dict[str, np.ndarray]:
    spec = backbone.inference_graph_spec
    limit = int(max_edges_per_chunk) if max_edges_per_chunk else None
    halo = (
        limit is not None
        and hasattr(backbone, "receptive_hops")
        and hasattr(backbone, "graph_from_nodes")
    )
    graph_rows, atom_rows, rows, skipped = [], [], [], []
    frames: dict[
        str, int
    ] = {}  # source -> frames seen in it (good or bad): one frame -> id is the source

    def seen(source: str | None, index: int | None) -> None:
        if source and index is not None:
            frames[source] = max(frames.get(source, 0), index + 1)

    def bad(err: StructureError) -> None:
        seen(err.source, err.index)
        if not skip_bad:
            raise err
        skipped.append(err)
        if errors is not None:
            errors.append(err)

    pending: list = []

    def keep(graph: torch.Tensor, node: torch.Tensor) -> None:
        graph_rows.append(graph.detach().double().cpu().numpy())
        atom_rows.append(node.detach().double().cpu().numpy())

    def flush() -> None:
        if pending:
            keep(*_forward(backbone, collate(pending), device))
            pending.clear()

    counts = []
    saved_chunk = getattr(backbone, "edge_chunk", None)
    if hasattr(backbone, "edge_chunk"):
        backbone.edge_chunk = limit
    try:
        pending_edges = 0
        for s in structures:
            if isinstance(s, StructureError):
                bad(s)
                continue
            s = Structure.coerce(s)
            seen(s.source, s.index)
            try:
                graph = to_graph(s, dtype=dtype, **spec)  # validates: a bad input raises, naming it
            except StructureError as err:
                bad(err.located(s.source or None, s.index))
                continue
            counts.append(s.n_atoms)
            rows.append((s.id or "", s.source or "", s.index))
            n_edges = graph.edge_index.shape[1]
            if halo and limit is not None and n_edges > limit:  # halo implies a limit
                flush()
                keep(*_halo_forward(backbone, graph, limit, device))
                continue
            if pending and limit is not None and pending_edges + n_edges > limit:
                flush()
            if not pending:
                pending_edges = 0
            pending.append(graph)
            pending_edges += n_edges
            if len(pending) >= batch_size:
                flush()
        flush()
    finally:
        if hasattr(backbone, "edge_chunk"):
            backbone.edge_chunk = saved_chunk
    if not counts:
        if skipped:
            raise EmptyInputError(
                f"no structures to embed: all {len(skipped)} input entr{'y was' if len(skipped) == 1 else 'ies were'} bad and skipped"
            )
        raise EmptyInputError("no structures to embed")
    out_dtype = np.float64 if dtype == torch.float64 else np.float32
    ids, sources = [], []
    n_own = Counter(own for own, _, _ in rows if own)
    for row, (own, source, index) in enumerate(rows):
        where = f"{source}@{index}" if source and index is not None else source
        sources.append(where)
        if own and n_own[own] == 1:
            ids.append(own)
        elif source:
            ids.append(source if index == 0 and frames.get(source) == 1 else where)
        else:
            ids.append(f"#{row}" if index is None else f"#{index}")
    return {
        "structure": np.concatenate(graph_rows).astype(out_dtype),
        "atom": np.concatenate(atom_rows).astype(out_dtype),
        "atom_index": np.repeat(np.arange(len(counts)), counts).astype(np.int64),
        "ids": np.array(ids, dtype=str),
        "sources": np.array(sources, dtype=str),
        "skipped": np.array([str(e) for e in skipped], dtype=str),
    }


def _forward(backbone, batch, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The one forward pass of embedding inference: (structure, atom) embeddings of a batch."""
    out = backbone(batch.to(device))
    return out.graph, out.node


@torch.no_grad()
def embed_graphs(backbone, graphs: Sequence, batch_size: int = 64) -> np.ndarray:
    """Structure embeddings (``BackboneOutput.graph``, eval mode) of prebuilt graphs, float64
    (fine-tuning's linear probe; :func:`embed_structures` reads and checks structures first)."""
    from ._data import graph_batches

    was = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    try:
        rows = [
            _forward(backbone, batch, device)[0].double().cpu().numpy()
            for batch in graph_batches(graphs, batch_size)
        ]
    finally:
        backbone.train(was)
    return np.concatenate(rows)


def embed_files(
    paths: Sequence[str | os.PathLike],
    checkpoint: str | os.PathLike | None,
    out: str | os.PathLike,
    batch_size: int = 32,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    max_edges_per_chunk: int | None = DEFAULT_MAX_EDGES_PER_CHUNK,
    skip_bad: bool = False,
    errors: list[StructureError] | None = None,
    format: str | None = None,
    progress: bool = False,
    **read_options: Any,
) -> dict[str, np.ndarray]:
    """Embed every structure of ``paths`` (files, folders, stores) and write ``out`` (.npz).

    ``format`` and ``read_options`` (``species=``, ``disorder=``, ...) go to the readers
    (:func:`atomssl.data.read`).

    Without ``skip_bad`` the first bad entry raises its :class:`StructureError` and nothing is
    written; with it, bad entries are left out, appended to ``errors`` and listed in ``skipped``.
    """
    from ..data import iter_entries

    backbone = load_backbone(resolve_checkpoint(checkpoint), map_location="cpu")
    arrays = embed_structures(
        iter_entries(
            list(paths), format=format, **{k: v for k, v in read_options.items() if v is not None}
        ),
        backbone,
        batch_size,
        dtype,
        device,
        max_edges_per_chunk,
        skip_bad=skip_bad,
        errors=errors,
        progress=progress,
    )
    atomic_save_npz(out, **arrays)
    return arrays
