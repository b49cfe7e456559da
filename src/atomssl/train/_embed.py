"""Embeddings from a pretrained backbone: one row per structure and one per atom.

Output arrays (``.npz``, written atomically):
``structure`` (n_structures, embedding_dim) in input order (float32, or float64 when computed so); ``atom`` (n_atoms_total, node_dim);
``atom_index`` (n_atoms_total,) the structure row of each atom row (atoms keep their input order);
``ids`` and ``sources`` name each structure.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..data import Structure
from ..errors import CheckpointError
from ..graph import collate, to_graph
from ..utils import atomic_save_npz
from ._checkpoint import load_backbone

#: name of the checkpoint shipped in package data ``atomssl/weights/`` (used when none is given)
DEFAULT_CHECKPOINT_NAME = "default.pt"


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
        raise CheckpointError("no --checkpoint given and this atomssl ships no default checkpoint (atomssl/weights/)")
    return found


@torch.no_grad()
def embed_structures(
    structures: Iterable[Any],
    backbone,
    batch_size: int = 32,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> dict[str, np.ndarray]:
    """Run ``backbone`` (eval mode) on ``structures`` and collect graph and node embeddings."""
    backbone = backbone.to(device=device, dtype=dtype).eval()
    spec = backbone.graph_spec
    graph_rows, atom_rows, ids, sources = [], [], [], []
    pending: list = []

    def flush() -> None:
        out = backbone(collate(pending).to(device))
        graph_rows.append(out.graph.detach().double().cpu().numpy())
        atom_rows.append(out.node.detach().double().cpu().numpy())
        pending.clear()

    counts = []
    for s in structures:
        s = Structure.coerce(s)
        pending.append(to_graph(s, dtype=dtype, **spec))  # validates: a bad input raises, naming it
        counts.append(s.n_atoms)
        ids.append(s.id or "")
        sources.append(f"{s.source}" + (f"@{s.index}" if s.index is not None else "") if s.source else "")
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()
    if not counts:
        raise ValueError("no structures to embed")
    out_dtype = np.float64 if dtype == torch.float64 else np.float32
    return {
        "structure": np.concatenate(graph_rows).astype(out_dtype),
        "atom": np.concatenate(atom_rows).astype(out_dtype),
        "atom_index": np.repeat(np.arange(len(counts)), counts).astype(np.int64),
        "ids": np.array(ids, dtype=str),
        "sources": np.array(sources, dtype=str),
    }


def embed_files(
    paths: Sequence[str | os.PathLike],
    checkpoint: str | os.PathLike | None,
    out: str | os.PathLike,
    batch_size: int = 32,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """Embed every structure of ``paths`` (files, folders, stores) and write ``out`` (.npz)."""
    from ..data import iter_structures

    backbone = load_backbone(resolve_checkpoint(checkpoint), map_location="cpu")
    arrays = embed_structures(iter_structures(list(paths)), backbone, batch_size, dtype, device)
    atomic_save_npz(out, **arrays)
    return arrays
