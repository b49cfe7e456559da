"""Reference environments from idealized crystals: embeddings with {prototype, noise} labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import PRETRAINING_PROTOTYPES, idealized_crystal
from ._clouds import embed_clouds, frame_clouds, pad_clouds

SIGMAS = (0.01, 0.03, 0.05)
#: one-component AFLOW prototypes never used in pretraining, with local environments distinct from the
#: training ones and from each other: diamond, alpha-Mn, beta-Mn, beta-Sn, simple hexagonal, alpha-Hg
HELD_OUT_PROTOTYPES = ("cF8-C", "cI58-Mn", "cP20-Mn", "tI4-Sn", "hP1-Sn", "hR1-Hg")


def one_component_prototypes(exclude=PRETRAINING_PROTOTYPES) -> tuple:
    """Every AFLOW prototype of pymatgen's table whose sites are all one element (49 besides the six
    pretraining ones), in table order: the widest held-out set, as in the reference's 49 prototypes."""
    from ..data import aflow_prototypes

    return tuple(
        s.id
        for s in aflow_prototypes()
        if len(set(s.numbers.tolist())) == 1 and s.id not in set(exclude)
    )


@dataclass
class ReferenceClouds:
    """Sampled environments of idealized crystals: clouds (n, k, 3), prototype and sigma per cloud."""

    clouds: np.ndarray
    prototype: np.ndarray  # index into names
    sigma: np.ndarray
    names: tuple

    @property
    def structure_noise(self) -> np.ndarray:
        """Class index of {prototype, sigma} (len(names) * len(SIGMAS) classes)."""
        s = np.searchsorted(np.asarray(SIGMAS), np.round(self.sigma, 6))
        return self.prototype * len(SIGMAS) + s


def reference_clouds(
    names=PRETRAINING_PROTOTYPES,
    sigmas=SIGMAS,
    per_crystal: int | None = None,
    n_min: int = 4096,
    seed: int = 0,
    k: int = 12,
) -> ReferenceClouds:
    """Clouds of each (prototype, sigma) crystal (>= ``n_min`` atoms), ``per_crystal`` sampled (all if None)."""
    rng = np.random.default_rng(seed)
    clouds, proto, sig = [], [], []
    for i, name in enumerate(names):
        for sigma in sigmas:
            c = frame_clouds(idealized_crystal(name, n_min=n_min, sigma=sigma, seed=rng), k)
            if per_crystal is not None and per_crystal < len(c):
                c = c[rng.choice(len(c), per_crystal, replace=False)]
            clouds.append(c)
            proto.append(np.full(len(c), i))
            sig.append(np.full(len(c), sigma))
    return ReferenceClouds(
        pad_clouds(clouds), np.concatenate(proto), np.concatenate(sig), tuple(names)
    )


@dataclass
class ReferenceEmbeddings:
    """Embedded reference environments and the detection threshold on nearest-reference distance."""

    embeddings: np.ndarray
    prototype: np.ndarray
    names: tuple
    threshold: float

    def nearest(self, x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Distance to the nearest reference environment and that environment's prototype index."""
        from scipy.spatial import cKDTree

        tree = cKDTree(self.embeddings)
        d, j = tree.query(np.asarray(x, dtype=np.float64), k=1)
        return d.astype(np.float32), self.prototype[j].astype(np.int16)


def reference_embeddings(
    backbone, refs: ReferenceClouds, quantile: float = 0.99, seed: int = 0
) -> ReferenceEmbeddings:
    """Embed ``refs``; the threshold is the ``quantile`` of held-out reference environments' distances.

    Half of the references (random) form the set, the other half calibrates the threshold: a particle
    closer than it to some reference is as crystalline as a noisy (sigma <= 0.05) ideal crystal.
    """
    emb = embed_clouds(backbone, refs.clouds)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(emb))
    half = len(emb) // 2
    keep, cal = perm[:half], perm[half:]
    ref = ReferenceEmbeddings(emb[keep], refs.prototype[keep], refs.names, np.inf)
    d, _ = ref.nearest(emb[cal])
    ref.threshold = float(np.quantile(d, quantile))
    return ref
