"""Building blocks for the equivariant transformer (:mod:`.equiformer`).

Features are kept as a list indexed by l of tensors ``(n, 2l+1, mul_l)`` ("channels last") with
polar parity (-1)^l, i.e. the e3nn irreps ``mul_0 x 0e + mul_1 x 1o + mul_2 x 2e + ...`` in e3nn's
real basis (``to_e3nn``/``from_e3nn`` convert to e3nn's flat layout). e3nn supplies the spherical
harmonics and Clebsch-Gordan coefficients (``o3.wigner_3j``); the linear, gate and depth-wise
tensor-product layers are written here on that layout because e3nn's generated modules slice
their inputs once per path and autograd then materialises a full-size gradient per slice, which
made forward+backward about 10x slower on CPU. Channels last makes every channel-mixing linear a
plain matrix product without copies, and lets the tensor product run as one batched matmul per
input degree (see :class:`DepthwiseTP`). ``tests`` check the tensor product against
``e3nn.o3.TensorProduct``. Edge-aligned frames and SO(2) convolutions are in
:mod:`._so2_layers`.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn

Feats = list  # list over l of (n, 2l+1, mul_l) tensors


def irreps_of(muls: list[int]) -> o3.Irreps:
    """The e3nn irreps ``m0 x 0e + m1 x 1o + m2 x 2e + ...`` described by ``muls``."""
    return o3.Irreps([(m, (l, (-1) ** l)) for l, m in enumerate(muls) if m > 0])


def polynomial_envelope(d: torch.Tensor, cutoff: float, p: int = 5) -> torch.Tensor:
    """Smooth cutoff u(d/cutoff) (DimeNet): 1 at 0, and u, u', u'' vanish at the cutoff."""
    x = (d / cutoff).clamp(min=0.0, max=1.0)
    u = (
        1.0
        - (p + 1) * (p + 2) / 2 * x**p
        + p * (p + 2) * x ** (p + 1)
        - p * (p + 1) / 2 * x ** (p + 2)
    )
    return torch.where(d < cutoff, u, torch.zeros_like(u))


class RadialBasis(nn.Module):
    """Expansion of edge lengths: ``"gaussian"`` (evenly spaced over [0, cutoff]) or ``"bessel"``
    (sqrt(2/c) sin(n pi d / c) / d)."""

    centers: torch.Tensor  # buffer ("gaussian")
    freq: torch.Tensor  # buffer ("bessel")

    def __init__(self, cutoff: float, num_basis: int = 32, kind: str = "gaussian"):
        super().__init__()
        if kind not in ("gaussian", "bessel"):
            raise ValueError(f"unknown radial basis {kind!r} (gaussian or bessel)")
        self.kind, self.cutoff, self.num_basis = kind, float(cutoff), int(num_basis)
        if kind == "gaussian":
            self.register_buffer("centers", torch.linspace(0.0, cutoff, num_basis))
            self.width = cutoff / (num_basis - 1)
        else:
            self.register_buffer("freq", torch.arange(1, num_basis + 1) * math.pi / cutoff)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        d = d.unsqueeze(-1)
        if self.kind == "gaussian":
            return torch.exp(-0.5 * ((d - self.centers) / self.width) ** 2)
        d = d.clamp(min=1e-6)
        return math.sqrt(2.0 / self.cutoff) * torch.sin(self.freq * d) / d


def segment_softmax(
    logits: torch.Tensor, weight: torch.Tensor, index: torch.Tensor, n: int
) -> torch.Tensor:
    """Weighted softmax of ``logits`` (E, H) over the edges sharing ``index`` (E,), with a sink.

    alpha_e = w_e exp(l_e) / (1 + sum_{e' in seg} w_e' exp(l_e')). With ``weight`` the cutoff
    envelope an edge fades out continuously as it crosses the cutoff; the sink (a virtual edge of
    logit 0 and value 0) keeps that true when the fading edge is an atom's only one (a plain
    softmax would renormalise it back to weight 1).
    """
    idx = index.unsqueeze(-1).expand_as(logits)
    # shift by max(0, max logit) per segment for stability (0 = the sink's logit)
    seg_max = torch.zeros((n, logits.shape[1]), dtype=logits.dtype, device=logits.device)
    seg_max = seg_max.scatter_reduce(0, idx, logits.detach(), reduce="amax", include_self=True)
    e = torch.exp(logits - seg_max.index_select(0, index)) * weight.unsqueeze(-1)
    denom = torch.exp(-seg_max).index_add_(0, index, e)
    return e / denom.index_select(0, index)


class Linear(nn.Module):
    """Equivariant linear map: mixes channels within each l (plus a bias on scalars)."""

    def __init__(self, muls_in: list[int], muls_out: list[int], bias: bool = True):
        super().__init__()
        self.muls_in, self.muls_out = list(muls_in), list(muls_out)
        self.weight = nn.ParameterList(
            nn.Parameter(torch.randn(mi, mo) if mi and mo else torch.zeros(0))
            for mi, mo in zip(self.muls_in + [0] * len(muls_out), self.muls_out)
        )
        self.bias = nn.Parameter(torch.zeros(muls_out[0])) if bias and muls_out[0] else None

    def forward(self, xs: Feats) -> Feats:
        return self.forward_pieces([[x] for x in xs])

    def forward_pieces(self, pieces: list[list[torch.Tensor]]) -> Feats:
        """Same map, with each degree's input given as pieces whose channels concatenate to it
        (as :meth:`DepthwiseTP.pieces` returns them): saves concatenating wide edge tensors."""
        out = []
        for l, mo in enumerate(self.muls_out):
            mi = self.muls_in[l] if l < len(self.muls_in) else 0
            if mi and mo:
                # F.linear with a contiguous (mo, mi) matrix: on CPU its backward products run
                # several times faster than matmul's, whose input gradient multiplies by a
                # transposed view
                wt = (self.weight[l] * (1.0 / math.sqrt(mi))).t().contiguous()
                y, start = None, 0
                for x in pieces[l]:
                    c = x.shape[-1]
                    part = nn.functional.linear(
                        x, wt if c == mi else wt[:, start : start + c]
                    )  # (n, 2l+1, mo)
                    y = part if y is None else y + part
                    start += c
                assert y is not None and start == mi, (start, mi)
            else:
                ref = pieces[0][0]
                y = ref.new_zeros(ref.shape[0], 2 * l + 1, mo)
            if l == 0 and self.bias is not None:
                y = y + self.bias
            out.append(y)
        return out


class Gate(nn.Module):
    """Gated nonlinearity (e3nn ``nn.Gate`` on this layout): SiLU on the first ``muls[0]``
    scalars; the remaining scalars, one per l > 0 channel, gate those channels by a sigmoid.
    Input muls: ``[muls[0] + sum(muls[1:]), muls[1], ...]``; output muls: ``muls``."""

    def __init__(self, muls: list[int]):
        super().__init__()
        self.muls = list(muls)
        self.muls_in = [muls[0] + sum(muls[1:])] + list(muls[1:])

    def forward(self, xs: Feats) -> Feats:
        s = xs[0][:, 0, :]
        gates = torch.sigmoid(s[:, self.muls[0] :]).split(self.muls[1:], dim=1)
        out = [nn.functional.silu(s[:, : self.muls[0]]).unsqueeze(1)]
        return out + [x * g.unsqueeze(1) for x, g in zip(xs[1:], gates)]


class LayerNorm(nn.Module):
    """Equivariant RMS layer norm (as in EquiformerV2): scalars are centred over channels, then
    all degrees are divided by one RMS over every component of the atom's features; per-channel
    scales and a scalar bias. One shared RMS (rather than one per degree) keeps small l > 0
    features small, so the network stays well conditioned, e.g. when an atom's only neighbour
    fades out at the cutoff."""

    def __init__(self, muls: list[int], eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.dim = sum(m * (2 * l + 1) for l, m in enumerate(muls))
        self.weight = nn.ParameterList(nn.Parameter(torch.ones(m)) for m in muls)
        self.bias = nn.Parameter(torch.zeros(muls[0]))

    def forward(self, xs: Feats) -> Feats:
        xs = [xs[0] - xs[0].mean(dim=2, keepdim=True)] + list(xs[1:])
        ms = sum(x.pow(2).sum(dim=(1, 2)) for x in xs) / self.dim
        scale = torch.rsqrt(ms + self.eps)[:, None, None]
        out = [x * scale * w for x, w in zip(xs, self.weight)]
        out[0] = out[0] + self.bias
        return out


def cast_cached(cache: dict, key, source: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``source`` (float64 coupling coefficients kept outside the module state) in ``like``'s dtype and
    device, converted once per (key, dtype, device) and remembered in ``cache``."""
    ckey = (key, like.dtype, like.device)
    if ckey not in cache:
        cache[ckey] = source.to(dtype=like.dtype, device=like.device)
    return cache[ckey]


def split_sh(sh: torch.Tensor, lmax: int) -> list[torch.Tensor]:
    return list(sh.split([2 * l + 1 for l in range(lmax + 1)], dim=-1))


class DepthwiseTP(nn.Module):
    """Depth-wise ("uvu") tensor product of features with the spherical harmonics Y(r_ij) (all l
    up to ``lmax_sh`` concatenated, (E, (lmax_sh+1)^2)), path weights per edge and channel from a
    radial MLP (Equiformer's DTP). Paths: every (l1, l2 -> lo) with lo <= ``lmax_out`` and
    l1 + l2 + lo even (polar parity), ordered by (l1, lo, l2); each path gives ``mul_l1`` output
    channels of degree lo.

    Equals ``o3.TensorProduct(irreps_in, irreps_sh, self.irreps_out_e3nn, self.instructions,
    shared_weights=False, internal_weights=False)`` with the same weights.

    How: for each (l1, lo) group of n paths, the per-edge path weights are applied to the input
    first, ``xw[e, (i, p), u] = w[e, p, u] x[e, i, u]``, and one batched matmul with a per-edge
    block matrix ``T[e, (m, p), (i, p)] = sum_j Y_j(r_e) C^p_{i j m}`` (computed once per forward
    pass and shared by all layers) gives all n paths' outputs, weighted and contiguous. This
    avoids strided per-path slicing and (E, mul, 2l1+1, 2lo+1) intermediates; the matmul does n
    times the strictly needed multiply-adds, far cheaper here than the memory traffic it saves.
    """

    def __init__(
        self, muls_in: list[int], lmax_sh: int, lmax_out: int, num_basis: int, radial_hidden: int
    ):
        super().__init__()
        self.muls_in = list(muls_in)
        self.lmax_sh, self.lmax_out = lmax_sh, lmax_out
        paths = [
            (l1, l2, lo)
            for l1, m in enumerate(muls_in)
            if m
            for lo in range(lmax_out + 1)
            for l2 in range(abs(l1 - lo), min(l1 + lo, lmax_sh) + 1)
            if (l1 + l2 + lo) % 2 == 0
        ]
        self.paths = paths
        self.muls_out = [
            sum(muls_in[l1] for l1, _, o in paths if o == lo) for lo in range(lmax_out + 1)
        ]
        sh_off = [l * l for l in range(lmax_sh + 2)]
        # Coupling coefficients stay float64 outside the module state: a float32 buffer later
        # cast to float64 would carry float32 rounding and break equivariance at ~1e-8.
        self._cg: dict[tuple[int, int], torch.Tensor] = {}
        self._cg_cast: dict[tuple, torch.Tensor] = {}
        self.groups: list[tuple[int, int, int, int]] = []  # (l1, lo, n paths, weight offset)
        offset = 0
        for l1 in sorted({p[0] for p in paths}):
            for lo in range(lmax_out + 1):
                mine = [p for p in paths if p[0] == l1 and p[2] == lo]
                if not mine:
                    continue
                n, d1, do = len(mine), 2 * l1 + 1, 2 * lo + 1
                cg = torch.zeros((lmax_sh + 1) ** 2, do * n, d1 * n, dtype=torch.float64)
                for k, (_, l2, _) in enumerate(mine):
                    # e3nn's "component" normalisation of a uvu path; row (m, k), column (i, k)
                    block = o3.wigner_3j(l1, l2, lo, dtype=torch.float64) * math.sqrt(
                        2 * lo + 1
                    )  # (i, j, m)
                    cg[sh_off[l2] : sh_off[l2 + 1], k::n, k::n] = block.permute(1, 2, 0)
                self._cg[(l1, lo)] = cg.reshape((lmax_sh + 1) ** 2, -1)
                self.groups.append((l1, lo, n, offset))
                offset += n * muls_in[l1]
        self.l1s = sorted({p[0] for p in paths})
        self.weight_numel = offset
        self.radial = nn.Sequential(
            nn.Linear(num_basis, radial_hidden),
            nn.LayerNorm(radial_hidden),
            nn.SiLU(),
            nn.Linear(radial_hidden, self.weight_numel),
        )

    @property
    def instructions(self):
        """Paths as e3nn instructions (outputs in this module's channel order, see irreps_out_e3nn)."""
        order = sorted(range(len(self.paths)), key=lambda i: (self.paths[i][2], i))
        slot = {i: s for s, i in enumerate(order)}
        return [
            (self.l1s.index(l1), l2, slot[i], "uvu", True)
            for i, (l1, l2, lo) in enumerate(self.paths)
        ]

    @property
    def irreps_out_e3nn(self) -> o3.Irreps:
        order = sorted(range(len(self.paths)), key=lambda i: (self.paths[i][2], i))
        return o3.Irreps(
            [
                (self.muls_in[self.paths[i][0]], (self.paths[i][2], (-1) ** self.paths[i][2]))
                for i in order
            ]
        )

    def _coefficients(self, key: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        return cast_cached(self._cg_cast, key, self._cg[key], like)

    def pieces(
        self, xs: Feats, sh: torch.Tensor, rbf: torch.Tensor, cache: dict | None = None
    ) -> list[list[torch.Tensor]]:
        """The output of degree lo as a list of (E, 2lo+1, channels) pieces, in channel order
        (concatenated, they are ``forward``'s output). ``cache``: a dict shared by the tensor
        products of one forward pass, so that the harmonics contracted with the coupling
        coefficients are computed once."""
        E = sh.shape[0]
        # split, not sliced: the backward of a split is one concatenation, slices would each
        # fill and copy a full-size gradient
        ws = self.radial(rbf).split([n * self.muls_in[l1] for l1, _, n, _ in self.groups], dim=1)
        outs: list[list[torch.Tensor]] = [[] for _ in self.muls_out]
        for (l1, lo, n, _), w in zip(self.groups, ws):
            mul, d1, do = self.muls_in[l1], 2 * l1 + 1, 2 * lo + 1
            w = w.view(E, 1, n, mul)
            key = ("dtp", l1, lo, self.lmax_sh)  # same key -> same paths, same coefficients
            t = None if cache is None else cache.get(key)
            if t is None:
                t = (sh @ self._coefficients((l1, lo), sh)).view(E, do * n, d1 * n)
                if cache is not None:
                    cache[key] = t
            xw = (xs[l1].unsqueeze(2) * w).reshape(E, d1 * n, mul)  # (E, (i, p), u)
            # (E, (m, p), u); an outer product when d1 * n == 1, where a broadcast beats bmm
            y = t * xw if d1 * n == 1 else torch.bmm(t, xw)
            outs[lo].append(y.view(E, do, n * mul))
        return outs

    def forward(
        self, xs: Feats, sh: torch.Tensor, rbf: torch.Tensor, cache: dict | None = None
    ) -> Feats:
        outs = self.pieces(xs, sh, rbf, cache)
        return [
            (o[0] if len(o) == 1 else torch.cat(o, dim=-1))
            if o
            else sh.new_zeros(sh.shape[0], 2 * lo + 1, 0)
            for lo, o in enumerate(outs)
        ]


def to_e3nn(xs: Feats) -> torch.Tensor:
    """Flatten into e3nn's layout (blocks by l, each channel-major)."""
    return torch.cat([x.transpose(1, 2).reshape(x.shape[0], -1) for x in xs], dim=-1)


def from_e3nn(x: torch.Tensor, muls: list[int]) -> Feats:
    parts = x.split([m * (2 * l + 1) for l, m in enumerate(muls)], dim=-1)
    return [
        p.reshape(x.shape[0], m, 2 * l + 1).transpose(1, 2)
        for l, (p, m) in enumerate(zip(parts, muls))
    ]


def l1_to_xyz_index() -> torch.Tensor:
    """Index that reorders e3nn's l=1 components into (x, y, z): ``xyz = v[..., index]``.

    e3nn < 0.6 orders real l=1 harmonics as (y, z, x); 0.6 uses (x, y, z). Read it off the
    library instead of assuming either."""
    sh = o3.spherical_harmonics(1, torch.eye(3, dtype=torch.float64), normalize=True)
    # row c: harmonics of the unit vector along axis c, nonzero only in the component holding c
    return sh.abs().argmax(dim=1)
