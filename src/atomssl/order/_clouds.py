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


def frame_clouds(structure: Structure, k: int = 12) -> np.ndarray:
    """(n, k, 3) float32 neighbour vectors divided by the frame's shortest neighbour distance."""
    vectors, _ = neighbor_clouds(Structure.coerce(structure), k, normalize="min_distance")
    return np.ascontiguousarray(vectors, dtype=np.float32)


def cloud_batch(clouds, z: int = PARTICLE_Z):
    """A torch_geometric ``Data`` whose per-centre edge vectors equal ``clouds`` (n, k, 3)."""
    from torch_geometric.data import Data

    c = torch.as_tensor(np.asarray(clouds), dtype=torch.float32)
    n, k, _ = c.shape
    src = torch.arange(n).repeat_interleave(k)
    return Data(
        z=torch.full((n,), int(z), dtype=torch.long),
        pos=torch.zeros(n, 3),
        cell=torch.eye(3).unsqueeze(0),
        pbc=torch.ones(1, 3, dtype=torch.bool),
        edge_index=torch.stack([src, src]),
        shift=c.reshape(n * k, 3),
        natoms=torch.tensor([n]),
        batch=torch.zeros(n, dtype=torch.long),
    )


@torch.no_grad()
def embed_clouds(backbone, clouds, chunk: int = 2048, blocks: bool = False, device=None) -> np.ndarray:
    """Invariant per-particle embeddings (n, width) of ``clouds``, computed in chunks in eval mode.

    ``device``: where the chunks are sent (the backbone must already be there); default the CPU.

    ``blocks=True`` appends, for every block of the backbone (``backbone.blocks``, e.g. ``gaa``), the
    mean over each cloud's bonds of that block's invariant per-bond features: (n, width * (1 + n_blocks)),
    a multi-depth description that stays invariant (means over bonds of invariants).
    """
    was_training = backbone.training
    backbone.eval()
    layers = list(getattr(backbone, "blocks", [])) if blocks else []
    if blocks and not layers:
        from ..errors import ConfigError

        raise ConfigError(f"embed_clouds(blocks=True) needs a backbone with blocks (gaa); got {type(backbone).__name__}")
    captured: list[torch.Tensor] = []
    # each gaa block returns (multivectors, invariants (n, k, width)): keep the invariants' bond mean
    hooks = [m.register_forward_hook(lambda _m, _i, o: captured.append(o[1].mean(dim=1))) for m in layers]
    try:
        clouds = np.asarray(clouds)
        out = []
        for i in range(0, len(clouds), chunk):
            captured.clear()
            batch = cloud_batch(clouds[i : i + chunk])
            node = backbone(batch if device is None else batch.to(device)).node
            out.append(torch.cat([node, *captured], dim=1).cpu().numpy())
    finally:
        for h in hooks:
            h.remove()
        backbone.train(was_training)
    width = getattr(backbone, "node_dim", 0) * (1 + len(layers))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, width), np.float32)
