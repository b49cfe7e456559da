"""Per-particle neighbour clouds of frames, fed to a cloud backbone without rebuilding graphs.

A frame's clouds are the vectors to each particle's ``k`` nearest neighbours divided by the frame's
shortest neighbour distance. :func:`cloud_batch` packs any set of clouds (e.g. a random subsample of
environments from many frames) into a graph batch whose edge vectors are exactly those clouds: every
centre sits at the origin and its edges point to itself through a "shift" equal to the bond vector
(cell = identity), so ``edge_vectors`` returns the cloud unchanged. This lets a kNN backbone run on a
subsample of environments, which full-frame graphs cannot do.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import Structure
from ..graph import neighbor_clouds

#: species index given to every particle: the order analysis treats a frame as one-component
PARTICLE_Z = 1


def frame_clouds(structure: Structure, k: int = 12, dtype=np.float32) -> np.ndarray:
    """(n, K, 3) neighbour vectors divided by the frame's shortest neighbour distance.

    Each cloud holds its ``k`` nearest neighbours and, where the ``k``-th shell is tied (ideal
    rock salt, bcc, diamond...), the whole shell: K >= k is the largest cloud of the frame and
    shorter clouds are padded with zero vectors. A liquid or thermal frame has no ties: K = k.
    :func:`atomssl.graph.tie_weights` gives the weights that :func:`embed_clouds` applies.
    """
    vectors, _ = neighbor_clouds(
        Structure.coerce(structure), k, normalize="min_distance", ties=True
    )
    return np.ascontiguousarray(vectors, dtype=dtype)


def pad_clouds(clouds) -> np.ndarray:
    """Concatenate clouds of different widths (n_i, K_i, 3) into one (sum n_i, max K_i, 3) array,
    padding with zero vectors (absent neighbours)."""
    clouds = [np.asarray(c) for c in clouds]
    if not clouds:
        raise ValueError("pad_clouds needs at least one array of clouds")
    width = max(c.shape[1] for c in clouds)
    return np.concatenate([np.pad(c, ((0, 0), (0, width - c.shape[1]), (0, 0))) for c in clouds])


def cloud_batch(clouds, z: int = PARTICLE_Z, dtype=torch.float32):
    """A torch_geometric ``Data`` whose per-centre edge vectors equal ``clouds`` (n, K, 3).

    Zero vectors (padding, see :func:`frame_clouds`) are left out, so a centre has as many edges
    as neighbours; a cloud with more than ``k`` neighbours is read by the backbone with tie weights."""
    from torch_geometric.data import Data

    c = torch.as_tensor(np.asarray(clouds), dtype=dtype)
    n, width, _ = c.shape
    src = torch.arange(n).repeat_interleave(width)
    shift = c.reshape(n * width, 3)
    present = shift.ne(0).any(dim=1)
    if not bool(present.all()):
        src, shift = src[present], shift[present]
    return Data(
        z=torch.full((n,), int(z), dtype=torch.long),
        pos=torch.zeros(n, 3, dtype=dtype),
        cell=torch.eye(3, dtype=dtype).unsqueeze(0),
        pbc=torch.ones(1, 3, dtype=torch.bool),
        edge_index=torch.stack([src, src]),
        shift=shift,
        natoms=torch.tensor([n]),
        batch=torch.zeros(n, dtype=torch.long),
    )


@torch.no_grad()
def embed_clouds(
    backbone, clouds, chunk: int = 2048, blocks: bool = False, device=None
) -> np.ndarray:
    """Invariant per-particle embeddings (n, width) of ``clouds``, computed in chunks in eval mode.

    ``device``: where the chunks are sent (the backbone must already be there); default the CPU.
    The chunks run in the backbone's dtype (float64 for exact checks).

    ``blocks=True`` appends, for every block of the backbone (``backbone.blocks``, e.g. ``gaa``), the
    mean over each cloud's bonds of that block's invariant per-bond features: (n, width * (1 + n_blocks)),
    a multi-depth description that stays invariant (means over bonds of invariants, each bond weighted
    by its tie weight).
    """
    from ..graph import tie_weights

    was_training = backbone.training
    backbone.eval()
    layers = list(getattr(backbone, "blocks", [])) if blocks else []
    if blocks and not layers:
        from ..errors import ConfigError

        raise ConfigError(
            f"embed_clouds(blocks=True) needs a backbone with blocks (gaa); got {type(backbone).__name__}"
        )
    captured: list[torch.Tensor] = []
    # each gaa block returns (multivectors, invariants (n, K, width)): keep the invariants' bond mean
    hooks = [m.register_forward_hook(lambda _m, _i, o: captured.append(o[1])) for m in layers]
    dtype = next(backbone.parameters()).dtype
    k = int(getattr(backbone, "k", 0) or 0)
    try:
        clouds = np.asarray(clouds)
        out = []
        for i in range(0, len(clouds), chunk):
            captured.clear()
            part = clouds[i : i + chunk]
            batch = cloud_batch(part, dtype=dtype)
            node = backbone(batch if device is None else batch.to(device)).node
            means = []
            if captured:
                c = torch.as_tensor(part, dtype=dtype, device=node.device)
                w = tie_weights(c.norm(dim=-1), k) / k if part.shape[1] > k else None
                for inv in captured:  # trailing padding columns absent from this chunk's layout
                    means.append(
                        inv.mean(dim=1)
                        if w is None
                        else (inv * w[:, : inv.shape[1], None]).sum(dim=1)
                    )
            out.append(torch.cat([node, *means], dim=1).cpu().numpy())
    finally:
        for h in hooks:
            h.remove()
        backbone.train(was_training)
    width = getattr(backbone, "node_dim", 0) * (1 + len(layers))
    out_dtype = np.float64 if dtype == torch.float64 else np.float32
    return np.concatenate(out).astype(out_dtype) if out else np.zeros((0, width), out_dtype)
