"""The default crystalline/liquid decision of ``atomssl order``: a logistic head on the frozen embedding.

A particle's feature is the mean of the per-particle embeddings of itself and its ``k`` nearest
neighbours (freud query; the embedding-space analogue of Lechner-Dellago averaging) next to the same
mean taken once more (two neighbour hops), standardised; a particle is crystalline when the head's
probability exceeds ``cut`` (0.8, see ``benchmarks/order_default.py``). The head is a logistic regression learned once, at ship
time, from physics rather than from the user's trajectory: positives are thermalised crystals (LAMMPS runs up to near melting, several potentials and
lattices) and negatives are equilibrium and supercooled liquids (``benchmarks/order_default.py``).
It is stored inside the same checkpoint file as the backbone, under ``"order_classifier"`` (plain
tensors and numbers only, so the file still loads with ``torch.load(weights_only=True)``).

:func:`load_order_backbone` loads a per-particle backbone and attaches its classifier (if the file holds
one) as ``backbone.order_classifier``; :func:`default_order_checkpoint` is the file shipped in
``atomssl/weights/order_default.pt``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CheckpointError

#: backbones that embed one particle's neighbour cloud (``cloud_batch``); graph backbones such as
#: MEGNet embed whole crystals and cannot serve ``atomssl order``
PER_PARTICLE_BACKBONES = ("gaa",)
ORDER_CHECKPOINT_NAME = "order_default.pt"
CLASSIFIER_KEY = "order_classifier"
CLASSIFIER_FORMAT = "atomssl-order-classifier"
FEATURES = "neighbour_mean_two_hops"


@dataclass
class OrderClassifier:
    """P(crystalline) = sigmoid(w . (f - mean) / scale + b); f = :func:`hop_features` of the embedding."""

    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: float
    k: int = 12
    cut: float = 0.8
    info: dict = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(len(self.weight))

    def features(
        self, embeddings: np.ndarray, neighbours: np.ndarray, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """:func:`hop_features` of ``rows`` (default all particles)."""
        return hop_features(embeddings, neighbours, rows)

    def probability(self, features: np.ndarray) -> np.ndarray:
        z = (
            (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        ) @ self.weight + self.bias
        return (1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))).astype(np.float32)

    def frame_probability(self, structure, subset: np.ndarray, subset_embeddings: np.ndarray, embed_rows,
                          neighbors=None) -> np.ndarray:  # fmt: skip
        """P(crystalline) of the particles ``subset`` of a frame.

        ``subset_embeddings``: their embeddings; ``embed_rows(idx)``: embeddings of other particles of the
        frame (called once, only for neighbours of the subset outside it). ``neighbors``: the frame's freud
        k-nearest list for ``k = self.k``, when already made (the Steinhardt quantities share it).
        """
        nb = frame_neighbours(structure, self.k, neighbors)
        n = len(nb)
        subset = np.asarray(subset)
        if 2 * subset_embeddings.shape[1] != self.width:
            raise CheckpointError(
                f"the order classifier expects embeddings of width {self.width // 2}, "
                f"the backbone gives {subset_embeddings.shape[1]}"
            )
        emb = np.zeros((n, subset_embeddings.shape[1]), dtype=np.float32)
        emb[subset] = subset_embeddings
        hop1 = np.union1d(subset, nb[subset])
        extra = np.setdiff1d(np.union1d(hop1, nb[hop1]), subset)  # two hops out from the subset
        if len(extra):
            emb[extra] = embed_rows(extra)
        return self.probability(self.features(emb, nb, subset))

    def state(self) -> dict:
        """Plain tensors and numbers, for the checkpoint's ``"order_classifier"`` entry."""
        import torch

        return {
            "format": CLASSIFIER_FORMAT,
            "version": 1,
            "kind": "logistic",
            "features": FEATURES,
            "k": int(self.k),
            "cut": float(self.cut),
            "mean": torch.as_tensor(np.asarray(self.mean, dtype=np.float32)),
            "scale": torch.as_tensor(np.asarray(self.scale, dtype=np.float32)),
            "weight": torch.as_tensor(np.asarray(self.weight, dtype=np.float32)),
            "bias": float(self.bias),
            "info": self.info,
        }

    @classmethod
    def from_state(cls, state, path="checkpoint") -> OrderClassifier:
        if (
            not isinstance(state, dict)
            or state.get("format") != CLASSIFIER_FORMAT
            or state.get("kind") != "logistic"
            or state.get("features") != FEATURES
        ):
            raise CheckpointError(
                f"{path}: its {CLASSIFIER_KEY!r} entry is not an atomssl order classifier"
            )
        try:
            arrays = {
                key: np.asarray(state[key], dtype=np.float64) for key in ("mean", "scale", "weight")
            }
            return cls(
                **arrays,
                bias=float(state["bias"]),
                k=int(state["k"]),
                cut=float(state["cut"]),
                info=dict(state.get("info") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{path}: its {CLASSIFIER_KEY!r} entry is incomplete ({exc})"
            ) from None


def neighbour_mean(
    embeddings: np.ndarray, neighbours: np.ndarray, rows: np.ndarray | None = None
) -> np.ndarray:
    """(len(rows), width) mean of the embeddings of each particle of ``rows`` (default all) and its neighbours."""
    rows = np.arange(len(neighbours)) if rows is None else np.asarray(rows)
    nb = neighbours[rows]
    return (embeddings[rows] + embeddings[nb].sum(axis=1)) / (nb.shape[1] + 1)


def hop_features(
    embeddings: np.ndarray, neighbours: np.ndarray, rows: np.ndarray | None = None
) -> np.ndarray:
    """(len(rows), 2 width): [one-hop neighbour mean, two-hop neighbour mean] of each particle of ``rows``.

    ``embeddings`` must be filled for every particle within two neighbour hops of ``rows``."""
    rows = np.arange(len(neighbours)) if rows is None else np.asarray(rows)
    hop1 = np.union1d(rows, neighbours[rows])
    m1 = np.zeros_like(embeddings)
    m1[hop1] = neighbour_mean(embeddings, neighbours, hop1)
    return np.concatenate([m1[rows], neighbour_mean(m1, neighbours, rows)], axis=1)


def frame_neighbours(structure, k: int = 12, neighbors=None) -> np.ndarray:
    """(n, k) indices of every particle's ``k`` nearest neighbours (self excluded), from the freud
    ``neighbors`` list of the frame's k-nearest query (:func:`knn_neighbors`; made here when not given)."""
    from ._steinhardt import freud_system, knn_neighbors

    nl = knn_neighbors(freud_system(structure), k) if neighbors is None else neighbors
    q = np.asarray(nl.query_point_indices)
    p = np.asarray(nl.point_indices)
    n = len(structure.positions)
    if len(q) != n * k:
        raise CheckpointError(
            f"expected {k} neighbours for each of {n} particles, freud found {len(q)} pairs"
        )
    order = np.argsort(q, kind="stable")
    return p[order].reshape(n, k).astype(np.int64)


def fit_classifier(
    features: np.ndarray,
    labels: np.ndarray,
    k: int = 12,
    C: float = 1.0,
    cut: float = 0.8,
    info: dict | None = None,
) -> OrderClassifier:
    """Logistic regression (balanced classes, L2 ``C``) on standardised ``features``; 1 = crystalline."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(features, dtype=np.float64)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    m = LogisticRegression(C=C, max_iter=5000, class_weight="balanced").fit(
        (x - mean) / scale, np.asarray(labels)
    )
    return OrderClassifier(
        mean,
        scale,
        m.coef_[0].astype(np.float64),
        float(m.intercept_[0]),
        k=k,
        cut=cut,
        info=dict(info or {}),
    )


def default_order_checkpoint() -> Path | None:
    """The per-particle checkpoint (backbone + classifier) shipped with atomssl, or None."""
    from importlib import resources

    try:
        path = resources.files("atomssl") / "weights" / ORDER_CHECKPOINT_NAME
    except (ModuleNotFoundError, FileNotFoundError):  # pragma: no cover
        return None
    return Path(str(path)) if path.is_file() else None


def load_order_backbone(path: str | os.PathLike | None = None):
    """The per-particle backbone of ``path`` (default: the shipped one), with ``.order_classifier`` set
    (None when the file holds no classifier). A checkpoint of another kind of backbone (e.g. the MEGNet
    default of ``atomssl embed``) is refused with a one-line :class:`CheckpointError`."""
    from ..representation import build_backbone
    from ..train._checkpoint import load_backbone_weights, load_checkpoint

    if path is None:
        path = default_order_checkpoint()
        if path is None:
            raise CheckpointError(
                "no --checkpoint given and this atomssl ships no atomssl/weights/"
                + ORDER_CHECKPOINT_NAME
            )
    ck = load_checkpoint(path)
    name = ck["backbone_config"].get("name") if isinstance(ck["backbone_config"], dict) else None
    if name not in PER_PARTICLE_BACKBONES:
        raise CheckpointError(
            f"{path}: holds a {name!r} backbone, not a per-particle (neighbour-cloud) backbone "
            f"({', '.join(PER_PARTICLE_BACKBONES)}); atomssl order needs one, e.g. the shipped default "
            f"(no --checkpoint) or 'atomssl order pretrain'"
        )
    backbone = build_backbone(ck["backbone_config"])
    load_backbone_weights(backbone, ck["backbone"], path, name)
    state = ck.get(CLASSIFIER_KEY)
    clf = None if state is None else OrderClassifier.from_state(state, path)
    # torch types Module.__setattr__ values as Tensor | Module; a plain attribute is fine at runtime
    backbone.order_classifier = clf  # type: ignore[assignment]
    return backbone.eval()
