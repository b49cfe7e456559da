"""Torch graphs for training: one :class:`torch_geometric.data.Data` per structure, batched
with :class:`torch_geometric.data.Batch`.

Fields: ``z`` (n,) atomic numbers, ``pos`` (n, 3), ``cell`` (1, 3, 3), ``pbc`` (1, 3),
``edge_index`` (2, E) as [src, dst], ``shift`` (E, 3) image offsets of dst (float, in lattice
vectors), ``natoms``; per-structure labels as ``y_<name>`` (1,) tensors. Edge vectors are
recomputed from positions by :func:`edge_vectors`, so that gradients and position
corruptions flow through them.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from ..data._structure import Structure
from ._neighbors import NeighborList, knn_graph, radius_graph


def build_neighbors(structure: Structure, cutoff: float | None = None, k: int | None = None) -> NeighborList:
    if (cutoff is None) == (k is None):
        raise ValueError("give exactly one of cutoff= or k=")
    return radius_graph(structure, cutoff, validate=False) if cutoff is not None else knn_graph(structure, k, validate=False)


def to_graph(
    structure,
    cutoff: float | None = None,
    k: int | None = None,
    labels: Sequence[str] = (),
    dtype: torch.dtype = torch.float32,
    validate: bool = True,
) -> Data:
    """Convert one structure into a training-ready graph."""
    structure = Structure.coerce(structure)
    if validate:
        structure.validate()
    nl = build_neighbors(structure, cutoff, k)
    data = Data(
        z=torch.from_numpy(structure.numbers.copy()),
        pos=torch.tensor(structure.positions, dtype=dtype),
        cell=torch.tensor(structure.cell, dtype=dtype).unsqueeze(0),
        pbc=torch.from_numpy(structure.pbc.copy()).unsqueeze(0),
        edge_index=torch.from_numpy(np.stack([nl.src, nl.dst])),
        shift=torch.tensor(nl.shift, dtype=dtype),
        natoms=torch.tensor([structure.n_atoms]),
        num_nodes=structure.n_atoms,
    )
    for name in labels:
        if name not in structure.labels:
            raise KeyError(f"{structure.where()}: label {name!r} missing (has {sorted(structure.labels)})")
        data[f"y_{name}"] = torch.tensor([float(structure.labels[name])], dtype=dtype)
    return data


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
        cell_e = cell.expand(src.shape[0], 3, 3) if cell.dim() == 3 else cell.unsqueeze(0).expand(src.shape[0], 3, 3)
    else:
        cell_e = cell[batch[src]]
    offset = torch.einsum("ei,eij->ej", graph.shift.to(pos.dtype), cell_e.to(pos.dtype))
    return pos[dst] + offset - pos[src]
