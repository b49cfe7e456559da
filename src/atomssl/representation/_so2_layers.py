"""Edge-aligned frames and SO(2) convolutions (eSCN, Passaro & Zitnick 2023) for
:mod:`.equiformer`, on the feature layout of :mod:`._e3nn_layers`.

Rotating an edge's features so that the edge points along the harmonics' polar axis makes
Y(r_ij) nonzero only at m = 0; a tensor product with Y followed by a linear layer then reduces
to linear maps that only mix equal |m| ("SO(2) convolution"): O(L^3) per edge instead of the
O(L^6) of Clebsch-Gordan products. e3nn has the Wigner matrices but no SO(2) layers (and its
D_from_matrix goes through Euler angles, whose acos has an infinite gradient for edges along
the axis), so the frame and its Wigner matrices are built here as polynomials of the rotation.
The frame's roll about the edge is a deterministic choice, and the result does not depend on
it (the SO(2) maps commute with rotations about the axis): exactly equivariant, unlike
EquiformerV2's random rolls.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn

from ._e3nn_layers import Feats, cast_cached, l1_to_xyz_index


def polar_axis() -> torch.Tensor:
    """Unit vector along which e3nn's real spherical harmonics are nonzero only at m = 0
    (the middle component; y in e3nn 0.5-0.6), read off the library."""
    return torch.eye(3, dtype=torch.float64)[int((l1_to_xyz_index() == 1).nonzero()[0, 0])]


def edge_frames(unit: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """Proper rotations R (E, 3, 3) with ``R @ axis = unit`` for unit vectors ``unit`` (E, 3).

    Rodrigues' rotation taking ``axis`` to ``unit`` (singular only at ``unit = -axis``) where
    ``unit . axis >= 0``, else the one taking ``-axis`` to ``unit`` after a half turn that maps
    ``axis`` to ``-axis``: every entry is a smooth function of ``unit`` on each half, and both
    halves' denominators stay >= 1, so gradients never see an infinity."""
    a = axis.to(unit)
    c = unit @ a  # (E,)
    # a fixed vector orthogonal to the axis: the half turn about it maps axis -> -axis
    perp = torch.roll(a, 1)
    flip = 2.0 * torch.outer(perp, perp) - torch.eye(3, dtype=unit.dtype, device=unit.device)

    def rodrigues(src: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        v = torch.cross(src.expand_as(unit), unit, dim=-1)
        vx = torch.zeros(unit.shape[0], 3, 3, dtype=unit.dtype, device=unit.device)
        vx[:, 0, 1], vx[:, 0, 2], vx[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
        vx = vx - vx.transpose(1, 2)
        eye = torch.eye(3, dtype=unit.dtype, device=unit.device)
        return eye + vx + (vx @ vx) / (1.0 + cos).clamp(min=1.0)[:, None, None]

    pos = rodrigues(a, c)
    neg = rodrigues(-a, -c) @ flip
    return torch.where((c >= 0)[:, None, None], pos, neg)


class WignerFromRotation(nn.Module):
    """Real Wigner matrices D_l(R), l = 0..lmax, in e3nn's basis, from rotation matrices (E, 3, 3):
    D_1 is R in e3nn's l = 1 component order, and D_l = C^T (D_{l-1} (x) D_1) C with C the
    (isometric) Clebsch-Gordan map l-1 (x) 1 -> l. ``tests`` check them against e3nn."""

    def __init__(self, lmax: int):
        super().__init__()
        self.lmax = lmax
        # float64 outside the module state, as in DepthwiseTP
        self._cg = {
            l: (o3.wigner_3j(l - 1, 1, l, dtype=torch.float64) * math.sqrt(2 * l + 1)).reshape(
                -1, 2 * l + 1
            )
            for l in range(2, lmax + 1)
        }
        self._cast: dict = {}
        idx = l1_to_xyz_index()  # xyz = v[..., idx]: component idx[c] holds axis c
        self._perm = torch.argsort(idx)  # component k holds axis perm[k]

    def _c(self, l: int, like: torch.Tensor) -> torch.Tensor:
        return cast_cached(self._cast, l, self._cg[l], like)

    def forward(self, rot: torch.Tensor) -> list[torch.Tensor]:
        E = rot.shape[0]
        perm = self._perm.to(rot.device)
        d1 = rot[:, perm][:, :, perm]
        ds = [rot.new_ones(E, 1, 1), d1]
        for l in range(2, self.lmax + 1):
            prev = ds[-1]
            kron = (prev[:, :, None, :, None] * d1[:, None, :, None, :]).reshape(
                E, 3 * (2 * l - 1), 3 * (2 * l - 1)
            )
            c = self._c(l, rot)
            ds.append(c.t() @ kron @ c)
        return ds[: self.lmax + 1]


def rotate(xs: Feats, ds: list[torch.Tensor], inverse: bool = False) -> Feats:
    """Features (E, 2l+1, mul) of each l rotated by D_l (or its transpose) of each edge."""
    # a batched matmul; with (2l+1)-sized matrices it runs far below the dense rate (~20% of an
    # lmax=2 step on CPU), and broadcasting multiply-sums measured no faster
    eq = "eji,ejc->eic" if inverse else "eij,ejc->eic"
    return [x if l == 0 else torch.einsum(eq, ds[l], x) for l, x in enumerate(xs)]


class SO2Linear(nn.Module):
    """Per-edge equivariant map for features in the edge-aligned frame: the m = 0 components of
    all input degrees are mixed by one matrix into the m = 0 components of all output degrees,
    and for each m > 0 the (-m, +m) pairs by one matrix shared by both signs. Before mixing,
    every input (m, l, channel) is scaled by an edge weight from a radial MLP of the edge length
    (eSCN/EquiformerV2). Sharing one matrix between -m and +m (no cross terms) keeps the map
    equivariant under mirror planes through the edge as well, i.e. O(3) with polar parity: it is
    the rotated-frame form of a tensor product with Y(r_ij) restricted to the l1 + l2 + lo even
    paths, followed by a linear layer, and includes everything the two can express."""

    def __init__(
        self,
        muls_in: list[int],
        muls_out: list[int],
        num_basis: int,
        radial_hidden: int,
        bias: bool = True,
    ):
        super().__init__()
        self.muls_in, self.muls_out = list(muls_in), list(muls_out)
        mmax = min(len(muls_in), len(muls_out)) - 1
        self.ms = [m for m in range(mmax + 1) if sum(muls_in[m:]) and sum(muls_out[m:])]
        self.dims_in = [sum(muls_in[m:]) for m in self.ms]
        self.dims_out = [sum(muls_out[m:]) for m in self.ms]
        self.weight = nn.ParameterList(
            nn.Parameter(torch.randn(do, di) / math.sqrt(di))
            for di, do in zip(self.dims_in, self.dims_out)
        )
        self.bias = nn.Parameter(torch.zeros(muls_out[0])) if bias and muls_out[0] else None
        self.radial = nn.Sequential(
            nn.Linear(num_basis, radial_hidden),
            nn.LayerNorm(radial_hidden),
            nn.SiLU(),
            nn.Linear(radial_hidden, sum(self.dims_in)),
        )

    def forward(self, xs: Feats, rbf: torch.Tensor) -> Feats:
        E = rbf.shape[0]
        ws = self.radial(rbf).split(self.dims_in, dim=1)
        parts: list[dict[int, torch.Tensor]] = [
            dict() for _ in self.muls_out
        ]  # lo -> {component: (E, mul)}
        for m, w, wt in zip(self.ms, ws, self.weight):
            ls_in = [l for l in range(m, len(self.muls_in)) if self.muls_in[l]]
            ls_out = [l for l in range(m, len(self.muls_out)) if self.muls_out[l]]
            if m == 0:
                x = torch.cat([xs[l][:, l, :] for l in ls_in], dim=-1) * w  # (E, dim)
            else:
                x = torch.cat(
                    [xs[l][:, l - m : l + m + 1 : 2 * m, :] for l in ls_in], dim=-1
                ) * w.unsqueeze(1)  # (E, 2, dim)
            y = nn.functional.linear(x, wt)
            for lo, yl in zip(ls_out, y.split([self.muls_out[l] for l in ls_out], dim=-1)):
                if m == 0:
                    parts[lo][lo] = yl
                else:
                    parts[lo][lo - m], parts[lo][lo + m] = yl[:, 0], yl[:, 1]
        out = []
        for lo, mo in enumerate(self.muls_out):
            got = [parts[lo].get(k) for k in range(2 * lo + 1)]
            if mo == 0 or any(c is None for c in got):
                zero = rbf.new_zeros(E, mo)
                comps = [zero if c is None else c for c in got]
            else:
                comps = [c for c in got if c is not None]  # all present
            y = torch.stack(comps, dim=1)
            if lo == 0 and self.bias is not None:
                y = y + self.bias
            out.append(y)
        return out
