"""Local environments as Gram matrices: extraction, normalisation, permutation augmentation.

An environment is the ``k`` nearest neighbours of an atom (vectors from the atom, sorted by
distance); its Gram matrix ``G = X X^T`` is invariant under rotations and reflections, and its
upper triangle (k(k+1)/2 values) is the VAE input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..data import Structure
from ..errors import StructureError
from ..graph import gram_matrices, neighbor_clouds, upper_triangle

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Environments:
    """Neighbour clouds of many atoms: ``vectors`` (n, k, 3) sorted by distance, with provenance."""

    vectors: np.ndarray
    cell: np.ndarray  # (n,) index of the structure each environment comes from
    atom: np.ndarray  # (n,) index of the centre atom within its structure

    def __len__(self) -> int:
        return int(len(self.vectors))

    @property
    def k(self) -> int:
        return int(self.vectors.shape[1])

    def subset(self, mask) -> Environments:
        return Environments(self.vectors[mask], self.cell[mask], self.atom[mask])

    def grams(self) -> np.ndarray:
        return gram_matrices(self.vectors)

    def features(self) -> np.ndarray:
        """Upper triangles of the Gram matrices, (n, k(k+1)/2)."""
        return upper_triangle(self.grams())


def extract_environments(
    structures, k: int = 8, cutoff: float = 4.0, on_far: str = "drop"
) -> Environments:
    """The ``k`` nearest neighbours of every atom of every structure, kept if all lie within ``cutoff``.

    ``on_far`` says what happens to an atom whose k-th neighbour is beyond ``cutoff``: ``"drop"`` it
    (logged), ``"keep"`` it, or ``"raise"`` a :class:`StructureError`.
    """
    if on_far not in ("drop", "keep", "raise"):
        raise ValueError(f"on_far must be 'drop', 'keep' or 'raise', got {on_far!r}")
    if isinstance(structures, Structure):
        structures = [structures]
    vecs, cells, atoms = [], [], []
    n_dropped = 0
    for i, s in enumerate(structures):
        s = Structure.coerce(s)
        v, _ = neighbor_clouds(s, k)
        far = np.linalg.norm(v[:, -1], axis=-1) > cutoff
        if far.any():
            if on_far == "raise":
                a = int(np.flatnonzero(far)[0])
                raise StructureError(
                    f"atom {a} has its {k}-th neighbour beyond {cutoff} A",
                    s.source or s.id,
                    s.index,
                )
            if on_far == "drop":
                n_dropped += int(far.sum())
                keep = ~far
                v = v[keep]
                idx = np.flatnonzero(keep)
            else:
                idx = np.arange(len(v))
        else:
            idx = np.arange(len(v))
        vecs.append(v)
        cells.append(np.full(len(v), i))
        atoms.append(idx)
    if n_dropped:
        log.info(
            "dropped %d environments whose %d-th neighbour lies beyond %.2f A", n_dropped, k, cutoff
        )
    if not vecs:
        raise StructureError("no structures given")
    return Environments(np.concatenate(vecs), np.concatenate(cells), np.concatenate(atoms))


def triangle_to_gram(tri: np.ndarray, k: int | None = None) -> np.ndarray:
    """Inverse of :func:`atomssl.graph.upper_triangle`: (..., k(k+1)/2) -> symmetric (..., k, k)."""
    tri = np.asarray(tri)
    m = tri.shape[-1]
    if k is None:
        k = int(round((np.sqrt(8 * m + 1) - 1) / 2))
    if k * (k + 1) // 2 != m:
        raise ValueError(f"{m} values are not the upper triangle of a square matrix")
    iu = np.triu_indices(k)
    g = np.zeros(tri.shape[:-1] + (k, k), dtype=tri.dtype)
    g[..., iu[0], iu[1]] = tri
    g[..., iu[1], iu[0]] = tri
    return g


def diagonal_mask(k: int) -> np.ndarray:
    """Boolean mask over the upper-triangle entries that are diagonal elements."""
    iu = np.triu_indices(k)
    return iu[0] == iu[1]


@dataclass
class GramNormalizer:
    """Standardise Gram upper triangles with separate statistics for diagonal and off-diagonal entries."""

    k: int
    mean_diag: float = 0.0
    std_diag: float = 1.0
    mean_off: float = 0.0
    std_off: float = 1.0

    @classmethod
    def fit(cls, features: np.ndarray, k: int) -> GramNormalizer:
        features = np.asarray(features, dtype=np.float64)
        d = diagonal_mask(k)
        return cls(
            k,
            float(features[:, d].mean()),
            float(features[:, d].std() + 1e-12),
            float(features[:, ~d].mean()),
            float(features[:, ~d].std() + 1e-12),
        )

    def _stats(self, like):
        d = diagonal_mask(self.k)
        mean = np.where(d, self.mean_diag, self.mean_off)
        std = np.where(d, self.std_diag, self.std_off)
        if not isinstance(like, np.ndarray):  # torch tensor
            import torch

            return (torch.as_tensor(mean, dtype=like.dtype), torch.as_tensor(std, dtype=like.dtype))
        return mean, std

    def transform(self, features):
        mean, std = self._stats(features)
        return (features - mean) / std

    def inverse(self, features):
        mean, std = self._stats(features)
        return features * std + mean

    def to_dict(self) -> dict:
        return {
            "k": self.k,
            "mean_diag": self.mean_diag,
            "std_diag": self.std_diag,
            "mean_off": self.mean_off,
            "std_off": self.std_off,
        }

    @classmethod
    def from_dict(cls, d: dict) -> GramNormalizer:
        return cls(
            int(d["k"]),
            float(d["mean_diag"]),
            float(d["std_diag"]),
            float(d["mean_off"]),
            float(d["std_off"]),
        )


def permute_vectors(vectors: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """Reorder neighbours: ``out[n, a] = vectors[n, perms[n, a]]``."""
    return np.take_along_axis(vectors, perms[..., None], axis=1)


def permute_grams(grams: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """Reorder Gram rows and columns together: ``out[n, a, b] = G[n, p[a], p[b]]``."""
    rows = np.take_along_axis(grams, perms[:, :, None], axis=1)
    return np.take_along_axis(rows, perms[:, None, :], axis=2)


def random_permutations(
    n: int, k: int, rng: np.random.Generator, within: list[list[int]] | None = None
) -> np.ndarray:
    """(n, k) random permutations; with ``within`` (groups of slots) only slots in a group are shuffled."""
    if within is None:
        return np.argsort(rng.random((n, k)), axis=1)
    perms = np.tile(np.arange(k), (n, 1))
    for slots in within:
        group = np.asarray(slots)
        order = np.argsort(rng.random((n, len(group))), axis=1)
        perms[:, group] = group[order]
    return perms


def augment_permutations(
    grams: np.ndarray, copies: int, rng: np.random.Generator, within: list[list[int]] | None = None
) -> np.ndarray:
    """The Gram matrices followed by ``copies`` randomly relabelled copies of each, (n * (1 + copies), k, k)."""
    out = [grams]
    for _ in range(copies):
        perms = random_permutations(len(grams), grams.shape[-1], rng, within)
        out.append(permute_grams(grams, perms))
    return np.concatenate(out)
