"""Weights that make k-nearest-neighbour clouds exact functions of geometry when shells are tied.

With exactly ``k`` neighbours, a shell that straddles the ``k``-th place (12th and 13th
neighbours equidistant, as in rock salt, CsCl, perovskite, fluorite, bcc and diamond) is cut by
atom order, so anything computed from the cloud changes when atoms are permuted and
symmetry-equivalent atoms differ. Here the cloud holds the whole boundary shell instead, and
every member of that shell carries the weight ``slots / shell size``: the weights of a cloud
always sum to ``k``, closer neighbours weigh 1, and a cloud without a tie is the plain kNN
cloud with all weights 1. Attention then weighs each bond (each pair of bonds, at rank 2) by
its multiplicity, which no graph library provides; hence this small module.

Distances within ``TIE_RTOL`` (relative) of the ``k``-th distance count as tied: symmetry-
equivalent neighbours of a crystal in float32 agree to ~1e-7, distinct shells of real
structures differ by far more than 1e-5.
"""

from __future__ import annotations

import torch

from ..data._neighbors import TIE_RTOL


def tie_weights(distance: torch.Tensor, k: int, rtol: float = TIE_RTOL) -> torch.Tensor:
    """Multiplicity weights (n, K) of clouds of neighbour ``distance`` (n, K), K >= k.

    Entries ``<= 0`` (zero vectors: padding) or not finite are absent and weigh 0. Per cloud,
    with ``d_k`` the ``k``-th smallest present distance: neighbours closer than ``d_k (1 -
    rtol)`` weigh 1; the ``m`` neighbours within ``rtol d_k`` of ``d_k`` share the remaining
    ``k - (closer)`` slots equally; farther ones weigh 0. The result does not depend on the order
    of the entries, and each row sums to ``k``. Raises ``ValueError`` when a cloud has fewer than
    ``k`` neighbours.
    """
    if distance.dim() != 2:
        raise ValueError(
            f"distance must be (clouds, neighbours), got shape {tuple(distance.shape)}"
        )
    d = distance.detach()
    present = (d > 0) & torch.isfinite(d)
    if d.shape[1] < k or bool((present.sum(dim=1) < k).any()):
        raise ValueError(f"every cloud needs at least k={k} neighbours")
    big = torch.finfo(d.dtype).max
    dk = torch.where(present, d, torch.full_like(d, big)).kthvalue(k, dim=1, keepdim=True).values
    tol = dk * rtol
    closer = present & (d < dk - tol)
    tied = present & ((d - dk).abs() <= tol)
    slots = k - closer.sum(dim=1, keepdim=True)
    share = slots.to(d.dtype) / tied.sum(dim=1, keepdim=True).to(d.dtype)
    return closer.to(d.dtype) + tied.to(d.dtype) * share
