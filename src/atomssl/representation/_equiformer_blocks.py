"""Building blocks of the Equiformer backbone: graph attention (tensor-product and SO(2) messages), feed-forward, transformer block, edge-degree embedding."""

from __future__ import annotations

import math

import torch
from torch import nn

from ._e3nn_layers import DepthwiseTP, Gate, LayerNorm, Linear, segment_softmax
from ._so2_layers import SO2Linear, rotate


def hidden_muls(channels: int, lmax: int, heads: int) -> list[int]:
    """Multiplicity halves with each l (Equiformer style), at least ``heads``, a multiple of ``heads``."""
    return [int(math.ceil(max(channels >> l, heads) / heads)) * heads for l in range(lmax + 1)]


class GraphAttention(nn.Module):
    """Equivariant multi-head graph attention with MLP attention logits (Equiformer)."""

    def __init__(self, muls, lmax, heads, num_basis, radial_hidden, att_dim, nonlinear_messages):
        super().__init__()
        self.heads, self.att_dim, self.n_logit = heads, att_dim, heads * att_dim
        self.lin_center = Linear(muls, muls)
        self.lin_neighbor = Linear(muls, muls, bias=False)
        self.tp1 = DepthwiseTP(muls, lmax, lmax, num_basis, radial_hidden)
        self.gate = Gate(muls)
        mid = list(self.gate.muls_in)
        mid[0] += self.n_logit  # attention-logit scalars first
        self.lin1 = Linear(self.tp1.muls_out, mid)
        if nonlinear_messages:
            self.tp2 = DepthwiseTP(muls, lmax, lmax, num_basis, radial_hidden)
            self.lin_value = Linear(self.tp2.muls_out, muls)
        else:
            self.tp2 = None
            self.lin_value = Linear(muls, muls)
        self.att_vec = nn.Parameter(torch.randn(heads, att_dim) / math.sqrt(att_dim))
        self.proj = Linear(muls, muls)

    def forward(self, xs, sh, rbf, env, center, neighbor, cache=None):
        xc, xn = self.lin_center(xs), self.lin_neighbor(xs)
        pair = [a.index_select(0, center) + b.index_select(0, neighbor) for a, b in zip(xc, xn)]
        msg = self.lin1.forward_pieces(self.tp1.pieces(pair, sh, rbf, cache))
        logit_in, scalars = msg[0].split([self.n_logit, msg[0].shape[-1] - self.n_logit], dim=-1)
        logits = nn.functional.leaky_relu(logit_in.reshape(-1, self.heads, self.att_dim), 0.2)
        alpha = segment_softmax(
            (logits * self.att_vec).sum(-1), env, center, xs[0].shape[0]
        )  # (E, heads)
        value = self.gate([scalars] + msg[1:])
        if self.tp2 is None:
            value = self.lin_value(value)
        else:
            value = self.lin_value.forward_pieces(self.tp2.pieces(value, sh, rbf, cache))
        out = []
        for v in value:  # channels of each l split into heads
            E, d, m = v.shape
            v = (v.view(E, d, self.heads, m // self.heads) * alpha[:, None, :, None]).view(E, d, m)
            out.append(v.new_zeros(xs[0].shape[0], d, m).index_add_(0, center, v))
        return self.proj(out)


class GraphAttentionSO2(nn.Module):
    """The same attention with eSCN-style messages: ``Lin(x_i) + Lin(x_j)`` is rotated into the
    edge-aligned frame, an :class:`SO2Linear` (radial weights, then mixing of equal |m|) gives
    the attention-logit scalars and the gate inputs in one step, the gated values (with
    ``nonlinear_messages`` through a second SO(2) map, else a linear layer) are weighted by
    the attention and rotated back. Equals a tensor product with Y(r_ij) plus a linear layer
    (see :class:`SO2Linear`), at a fraction of the per-edge cost."""

    def __init__(self, muls, lmax, heads, num_basis, radial_hidden, att_dim, nonlinear_messages):
        super().__init__()
        self.heads, self.att_dim, self.n_logit = heads, att_dim, heads * att_dim
        self.lin_center = Linear(muls, muls)
        self.lin_neighbor = Linear(muls, muls, bias=False)
        self.gate = Gate(muls)
        mid = list(self.gate.muls_in)
        mid[0] += self.n_logit  # attention-logit scalars first
        self.so2_1 = SO2Linear(muls, mid, num_basis, radial_hidden)
        if nonlinear_messages:
            self.so2_2 = SO2Linear(muls, muls, num_basis, radial_hidden)
            self.lin_value = None
        else:
            self.so2_2 = None
            self.lin_value = Linear(muls, muls)
        self.att_vec = nn.Parameter(torch.randn(heads, att_dim) / math.sqrt(att_dim))
        self.proj = Linear(muls, muls)

    def forward(self, xs, wigner, rbf, env, center, neighbor, cache=None):
        """``cache`` is unused (kept for :class:`GraphAttention`'s signature: no harmonics to share)."""
        xc, xn = self.lin_center(xs), self.lin_neighbor(xs)
        pair = [a.index_select(0, center) + b.index_select(0, neighbor) for a, b in zip(xc, xn)]
        msg = self.so2_1(rotate(pair, wigner, inverse=True), rbf)
        s0 = msg[0][:, 0, :]
        logit_in, scalars = s0.split([self.n_logit, s0.shape[-1] - self.n_logit], dim=-1)
        logits = nn.functional.leaky_relu(logit_in.reshape(-1, self.heads, self.att_dim), 0.2)
        alpha = segment_softmax(
            (logits * self.att_vec).sum(-1), env, center, xs[0].shape[0]
        )  # (E, heads)
        value = self.gate(
            [scalars.unsqueeze(1)] + msg[1:]
        )  # gates act per channel: frame-independent
        value = self.lin_value(value) if self.so2_2 is None else self.so2_2(value, rbf)
        out = []
        for v in rotate(value, wigner):
            E, d, m = v.shape
            v = (v.view(E, d, self.heads, m // self.heads) * alpha[:, None, :, None]).view(E, d, m)
            out.append(v.new_zeros(xs[0].shape[0], d, m).index_add_(0, center, v))
        return self.proj(out)


class FeedForward(nn.Module):
    """Equivariant two-layer MLP: linear -> gate -> linear."""

    def __init__(self, muls: list[int], expand: int = 2):
        super().__init__()
        self.gate = Gate([m * expand for m in muls])
        self.lin1 = Linear(muls, self.gate.muls_in)
        self.lin2 = Linear(self.gate.muls, muls)

    def forward(self, xs):
        return self.lin2(self.gate(self.lin1(xs)))


class TransformerBlock(nn.Module):
    def __init__(
        self, muls, lmax, heads, num_basis, radial_hidden, att_dim, nonlinear_messages, conv="so2"
    ):
        super().__init__()
        self.norm1 = LayerNorm(muls)
        attention = GraphAttentionSO2 if conv == "so2" else GraphAttention
        self.attn = attention(
            muls, lmax, heads, num_basis, radial_hidden, att_dim, nonlinear_messages
        )
        self.norm2 = LayerNorm(muls)
        self.ffn = FeedForward(muls)

    def forward(self, xs, geom, rbf, env, center, neighbor, cache=None):
        """``geom``: the edges' Wigner matrices (SO(2) messages) or spherical harmonics (tensor products)."""
        xs = [
            a + b
            for a, b in zip(xs, self.attn(self.norm1(xs), geom, rbf, env, center, neighbor, cache))
        ]
        return [a + b for a, b in zip(xs, self.ffn(self.norm2(xs)))]


class EdgeDegreeEmbedding(nn.Module):
    """Seeds all degrees of each atom: sum over neighbours of (neighbour scalars (x) Y(r_ij)) with
    radial weights and the cutoff envelope, divided by a typical neighbour count."""

    def __init__(self, muls, lmax, num_basis, radial_hidden, avg_neighbors):
        super().__init__()
        self.tp = DepthwiseTP([muls[0]], lmax, lmax, num_basis, radial_hidden)
        self.lin = Linear(self.tp.muls_out, muls)
        self.avg_neighbors = float(avg_neighbors)

    def forward(self, scalars, sh, rbf, env, center, neighbor, cache=None):
        msg = self.lin.forward_pieces(
            self.tp.pieces([scalars.index_select(0, neighbor).unsqueeze(1)], sh, rbf, cache)
        )
        n = scalars.shape[0]
        return [
            m.new_zeros(n, *m.shape[1:]).index_add_(0, center, m * env[:, None, None])
            / self.avg_neighbors
            for m in msg
        ]
