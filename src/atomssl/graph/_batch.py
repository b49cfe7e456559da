"""Torch graphs for training: one :class:`torch_geometric.data.Data` per structure, batched
with :class:`torch_geometric.data.Batch`.

Fields: ``z`` (n,) atomic numbers, ``pos`` (n, 3), ``cell`` (1, 3, 3), ``pbc`` (1, 3),
``edge_index`` (2, E) as [src, dst], ``shift`` (E, 3) image offsets of dst (float, in lattice
vectors), ``natoms``; per-structure labels as ``y_<name>`` (1,) tensors. Edge vectors are
recomputed from positions by :func:`edge_vectors`, so that gradients and position
corruptions flow through them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from ..data._neighbors import NeighborList, knn_graph, radius_graph, radius_graphs
from ..data._structure import MIN_DISTANCE, Structure
from ..errors import OverlapError


def build_neighbors(
    structure: Structure,
    cutoff: float | None = None,
    k: int | None = None,
    *,
    validate: bool = False,
    ties: bool = False,
) -> NeighborList:
    """Radius graph (``cutoff=``) or k-nearest-neighbour graph (``k=``; ``ties=True``: with whole
    tied k-th shells, see :func:`knn_graph`) of one structure."""
    if (cutoff is None) == (k is None):
        raise ValueError("give exactly one of cutoff= or k=")
    if cutoff is not None:
        if ties:
            raise ValueError("ties=True applies to k-nearest-neighbour graphs (k=) only")
        return radius_graph(structure, cutoff, validate=validate)
    assert k is not None  # exactly one of cutoff / k is given (checked above)
    return knn_graph(structure, k, validate=validate, ties=ties)


def _check_overlap(structure: Structure, nl: NeighborList) -> None:
    # Same check and message as Structure.validate(), read off the graph just built instead
    # of a second neighbour search (which would cost as much as the graph itself).
    if len(nl) == 0 or structure.n_atoms < 2:  # validate() skips single atoms too
        return
    if nl.distance.min() >= MIN_DISTANCE:  # the usual case, from the engine's distances
        return
    d = np.linalg.norm(nl.vec, axis=1)  # as validate() computes them, so the same pair is named
    e = int(np.argmin(d))
    raise OverlapError(
        f"atoms {int(nl.src[e])} and {int(nl.dst[e])} are {d[e]:.4f} A apart (< {MIN_DISTANCE} A)",
        structure.source or structure.id or None,
        structure.index,
    )


def _new_data(fields: dict) -> Data:
    # Data(**fields) routes every field through PyG's attribute machinery (~130 us per graph,
    # more than the neighbour search of a small crystal); filling the fresh store's mapping
    # directly gives the same object in ~20 us. Checked once; otherwise the public way.
    if _FAST_DATA:
        data = Data()
        data._store._mapping.update(fields)
        return data
    return Data(**fields)


def _fast_data_works() -> bool:
    try:
        fields = {
            "x": torch.zeros(2, 1),
            "edge_index": torch.zeros(2, 1, dtype=torch.long),
            "num_nodes": 2,
        }
        data = Data()
        data._store._mapping.update(fields)
        ref = Data(**fields)
        return data.num_nodes == 2 and data.keys() == ref.keys() and torch.equal(data.x, ref.x)
    except Exception:  # pragma: no cover - other torch_geometric versions
        return False


_FAST_DATA = _fast_data_works()


def _data(
    structure: Structure, nl: NeighborList, labels: Sequence[str], dtype: torch.dtype
) -> Data:
    n = structure.n_atoms
    fields = {
        "z": torch.from_numpy(structure.numbers.copy()),
        # torch.tensor copies (from_numpy warns on a read-only array, e.g. a cell from some readers)
        "pos": torch.tensor(structure.positions, dtype=dtype),
        "cell": torch.tensor(structure.cell, dtype=dtype).unsqueeze(0),
        "pbc": torch.from_numpy(structure.pbc.copy()).unsqueeze(0),
        "edge_index": torch.from_numpy(np.stack([nl.src, nl.dst])),
        "shift": torch.from_numpy(nl.shift).to(dtype),
        "natoms": torch.tensor([n]),
        "num_nodes": n,
    }
    for name in labels:
        if name not in structure.labels:
            raise KeyError(
                f"{structure.where()}: label {name!r} missing (has {sorted(structure.labels)})"
            )
        fields[f"y_{name}"] = torch.tensor([float(structure.labels[name])], dtype=dtype)
    return _new_data(fields)


def _reuse_graph_for_overlap(validate: bool, cutoff: float | None, k: int | None) -> bool:
    return validate and (k is not None or (cutoff is not None and cutoff > MIN_DISTANCE))


def to_graph(
    structure,
    cutoff: float | None = None,
    k: int | None = None,
    labels: Sequence[str] = (),
    dtype: torch.dtype = torch.float32,
    validate: bool = True,
    ties: bool = False,
) -> Data:
    """Convert one structure into a training-ready graph (see the module docstring for fields).

    ``validate`` runs :meth:`Structure.validate` (typed errors naming the structure); the
    overlap check reuses the graph when the cutoff (or the kNN graph) covers 0.1 A.
    ``ties=True`` (with ``k``): whole tied k-th shells (:func:`knn_graph`).
    """
    structure = Structure.coerce(structure)
    reuse = _reuse_graph_for_overlap(validate, cutoff, k)
    if validate:
        structure.validate(min_distance=0.0 if reuse else MIN_DISTANCE)
    nl = build_neighbors(structure, cutoff, k, ties=ties)
    if reuse:
        _check_overlap(structure, nl)
    return _data(structure, nl, labels, dtype)


def to_graphs(
    structures: Iterable,
    cutoff: float | None = None,
    k: int | None = None,
    labels: Sequence[str] = (),
    dtype: torch.dtype = torch.float32,
    validate: bool = True,
    ties: bool = False,
) -> list[Data]:
    """:func:`to_graph` of each of many structures (same checks, same graphs)."""
    structures = [Structure.coerce(s) for s in structures]
    reuse = _reuse_graph_for_overlap(validate, cutoff, k)
    if validate:
        for s in structures:
            s.validate(min_distance=0.0 if reuse else MIN_DISTANCE)
    if cutoff is not None and k is None:
        graphs = radius_graphs(structures, cutoff, validate=False)
    else:
        graphs = [build_neighbors(s, cutoff, k, ties=ties) for s in structures]
    out = []
    for s, nl in zip(structures, graphs):
        if reuse:
            _check_overlap(s, nl)
        out.append(_data(s, nl, labels, dtype))
    return out


def collate(graphs: Iterable[Data]) -> Batch:
    """Batch variable-size graphs (node/edge indices offset, ``batch`` vector added)."""
    return Batch.from_data_list(list(graphs))


def edge_vectors(graph: Data, pos: torch.Tensor | None = None) -> torch.Tensor:
    """``pos[dst] + shift @ cell - pos[src]`` for every edge (differentiable in ``pos``/``cell``)."""
    pos = graph.pos if pos is None else pos
    src, dst = graph.edge_index
    cell = graph.cell
    batch = getattr(graph, "batch", None)
    if batch is None:
        cell_e = (
            cell.expand(src.shape[0], 3, 3)
            if cell.dim() == 3
            else cell.unsqueeze(0).expand(src.shape[0], 3, 3)
        )
    else:
        cell_e = cell[batch[src]]
    offset = torch.einsum("ei,eij->ej", graph.shift.to(pos.dtype), cell_e.to(pos.dtype))
    return pos[dst] + offset - pos[src]


def restrict_cutoff(graph: Data, cutoff: float) -> Data:
    """A shallow copy of ``graph`` (or batch) keeping only edges not longer than ``cutoff``.

    Lets a backbone with a shorter radius read a graph built for a longer one (e.g. a 4 A MEGNet
    critic on the 5 A graphs of an equiformer generator); lengths come from the current positions.
    """
    import copy

    keep = edge_vectors(graph).norm(dim=-1) <= float(cutoff)
    if bool(keep.all()):
        return graph
    out = copy.copy(graph)
    out.edge_index = graph.edge_index[:, keep]
    out.shift = graph.shift[keep]
    return out
