"""Layers of the ``gaa`` backbone: the blocks (multivector and invariant attention of the
``geometric-algebra-attention`` package), their MLPs, a cheap dropout, and multiplicity-weighted
attention for clouds with whole tied neighbour shells."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn


def _gala():
    # imported lazily: importing the package pulls in its keras/tensorflow shims only on demand
    from geometric_algebra_attention import pytorch as gala

    return gala


class _Weights(NamedTuple):
    """A mask for the package's attention layers plus per-bond log multiplicity weights (n, K)."""

    mask: Any
    log_weight: torch.Tensor


class _WeightedScores:
    """Mixin for the package's attention layers: ``mask=_Weights(mask, log_w)`` adds, to the score of
    every tuple of bonds, the log weights of its members, so the softmax counts a bond of weight
    ``w`` as ``w`` bonds (and a pair as ``w_i w_j`` pairs). The package has per-point weights, but
    they scale values, not attention; multiplicity weighting is what makes clouds with whole tied
    shells (:func:`atomssl.graph.tie_weights`) exact functions of geometry."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.init()  # the package initialises weights only for its own exact classes

    def _mask_scores(self, scores, broadcast_indices, mask):
        if not isinstance(mask, _Weights):
            return super()._mask_scores(scores, broadcast_indices, mask)
        scores = super()._mask_scores(scores, broadcast_indices, mask.mask)
        for index in broadcast_indices:
            scores = scores + mask.log_weight[..., None][index]
        return scores


_WEIGHTED: dict = {}


def _weighted(name: str):
    """The package's attention class ``name`` with :class:`_WeightedScores` (same parameters)."""
    if name not in _WEIGHTED:
        base = getattr(_gala(), name)
        _WEIGHTED[name] = type(name, (_WeightedScores, base), {"__doc__": base.__doc__})
    return _WEIGHTED[name]


def _attention_mask(mask, log_weight):
    if log_weight is not None:
        return {"mask": _Weights(None if mask is None else (mask, mask), log_weight)}
    return {} if mask is None else {"mask": (mask, mask)}


class _ParityEven(nn.Module):
    """``|x|`` on the trivector (pseudoscalar) columns of multivector invariants.

    ``mvecmvec_invariants`` returns ``[scalar, |vector|, |bivector|, trivector]`` per product;
    the trivector changes sign under reflections. Taking its absolute value removes the
    network's only reflection-odd input (see module docstring).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        odd = torch.zeros(x.shape[-1], dtype=torch.bool, device=x.device)
        odd[3::4] = True
        return torch.where(odd, x.abs(), x)


class _Dropout(nn.Module):
    """Inverted dropout (as ``nn.Dropout``) whose keep mask is drawn 16 bits at a time from
    64-bit random integers. The per-element Bernoulli draws of ``nn.Dropout`` took ~20-30% of a
    CPU training step here (the pair tensors hold n * k^2 * hidden values); this is ~5x cheaper.
    Drop probability round(p * 2^16) / 2^16, within 1e-5 of ``p``; seeded by torch's generator."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.threshold = int(round(self.p * 65536)) - 32768  # keep iff a uniform int16 >= threshold

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        n = x.numel()
        words = torch.randint(
            -(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device
        )
        keep = words.view(torch.int16)[:n].view(x.shape) >= self.threshold
        return x * (
            keep.to(x.dtype) * (1.0 / (1.0 - self.p))
        )  # fastest forward+backward of the forms tried


def _mlp(
    n_in: int,
    hidden: int,
    n_out: int,
    dropout: float,
    pre_norm: bool,
    chiral: bool = True,
    momentum: float = 0.99,
) -> nn.Sequential:
    """Dense(hidden)-LN-ReLU-Dropout-Dense(n_out), optionally after a momentum normalisation."""
    gala = _gala()
    layers: list[nn.Module] = []
    if pre_norm:
        if not chiral:
            layers.append(_ParityEven())
        layers.append(gala.MomentumNormalization(n_in, momentum=momentum))
    # in-place ReLU: LayerNorm's backward needs its input, not its output
    layers += [nn.Linear(n_in, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True)]
    if dropout:
        layers.append(_Dropout(dropout))
    layers.append(nn.Linear(hidden, n_out))
    return nn.Sequential(*layers)


class _Block(nn.Module):
    """Multivector attention update + invariant attention update, MLP, residuals, norms."""

    def __init__(
        self,
        width: int,
        hidden: int,
        dropout: float,
        rank: int,
        inv_mode: str,
        cov_mode: str,
        normalized: bool,
        chiral: bool,
        merge_fun: str,
        join_fun: str,
        momentum: float,
    ):
        super().__init__()
        gala = _gala()
        inv_dims = gala.MultivectorAttention.get_invariant_dims(rank, inv_mode, normalized)
        common = dict(
            rank=rank,
            invariant_mode=inv_mode,
            covariant_mode=cov_mode,
            include_normalized_products=normalized,
            merge_fun=merge_fun,
            join_fun=join_fun,
        )
        self.vector_attention = _weighted("Multivector2MultivectorAttention")(
            width,
            _mlp(width, hidden, 1, dropout, pre_norm=False),  # score net
            _mlp(
                inv_dims, hidden, width, dropout, pre_norm=True, chiral=chiral, momentum=momentum
            ),  # value net
            _mlp(
                width, hidden, 1, dropout, pre_norm=True, momentum=momentum
            ),  # scale net (input: invariant joined values)
            reduce=False,
            **common,
        )
        self.invariant_attention = _weighted("MultivectorAttention")(
            width,
            _mlp(width, hidden, 1, dropout, pre_norm=False),
            _mlp(inv_dims, hidden, width, dropout, pre_norm=True, chiral=chiral, momentum=momentum),
            reduce=False,
            **common,
        )
        self.mlp = _mlp(width, hidden, width, dropout, pre_norm=False)
        self.norm = nn.LayerNorm(width)
        # rotation-covariant normalisation of the multivector stream (a global scalar rescale);
        # a per-component LayerNorm, as in parts of the reference code, would break equivariance
        self.vector_norm = gala.MomentumLayerNormalization(momentum=momentum)

    def forward(self, x, v, mask, log_weight=None):
        kw = _attention_mask(mask, log_weight)
        x_new = self.vector_attention((x, v), **kw)
        v_new = self.invariant_attention((x_new, v), **kw)
        v = self.norm(v + self.mlp(v_new))
        x = self.vector_norm(x + x_new)
        if mask is not None:
            x = x * mask[..., None]
        return x, v
