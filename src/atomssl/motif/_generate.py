"""Generation with a trained :class:`GramVAE`: sampling, latent interpolation and inpainting.

Inpainting (fill in missing neighbours given ``m`` known ones, all as vectors from the central atom):

1. Every way of placing the known atoms in the decoder's ``k`` slots is a candidate: order-preserving
   placements (the training clouds are sorted by distance, so known atoms keep their relative order),
   optionally refined by Hungarian re-assignment after Procrustes alignment.
2. For every candidate and many starting latents (prior draws plus the encoding of the known atoms with
   noise-filled gaps), ``z`` is optimised so the decoded Gram matrix matches the known atoms' Gram block.
   The loss lives in Gram space, so it is rotation invariant and needs no eigen-decomposition gradient
   (unstable at degenerate eigenvalues).
3. The best (candidate, start) wins. The missing atoms are then placed directly in the known atoms' frame
   by least squares on the decoded inner products with the known atoms and among themselves
   (``method="gram"``), or by aligning the decoded cloud onto the known atoms (``method="procrustes"``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import least_squares, linear_sum_assignment

from ..graph import gram_matrices
from ._decode import align, gram_to_coords, procrustes, refine_coords, rmsd
from ._vae import GramVAE


def decode_coords(grams: np.ndarray, decoding: str = "eigen", progress=None) -> np.ndarray:
    """Coordinates from decoded Gram matrices: ``"eigen"`` (nearest PSD rank 3) or ``"metric"``
    (then refined to fit the implied distances, see :func:`refine_coords`, which reports to
    ``progress(done, total)``)."""
    if decoding == "eigen":
        return gram_to_coords(grams)
    if decoding == "metric":
        return refine_coords(grams, progress=progress)
    raise ValueError(f"decoding must be 'eigen' or 'metric', got {decoding!r}")


def sample(
    model: GramVAE,
    n: int,
    seed: int = 0,
    temperature: float = 1.0,
    decoding: str = "eigen",
    progress=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``z ~ N(0, temperature^2 I)`` and decode: ``(coords (n, k, 3), grams (n, k, k))``.

    Coordinates are in the decoded principal-axes frame (defined up to a reflection).
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, model.config.latent)) * temperature
    grams = model.decode_grams(z)
    return decode_coords(grams, decoding, progress), grams


def interpolate(
    model: GramVAE, start: np.ndarray, end: np.ndarray, n_frames: int = 11
) -> np.ndarray:
    """Motifs along the straight latent path between two clouds (k, 3); frames (n_frames, k, 3).

    The first frame is aligned onto ``start`` and each later frame onto the previous one, so the path
    is a smooth motion in a fixed frame (reflections allowed since decoding loses chirality).
    """
    grams = gram_matrices(np.stack([start, end]))
    za, zb = model.encode_grams(grams)
    t = np.linspace(0.0, 1.0, n_frames)[:, None]
    coords = gram_to_coords(model.decode_grams((1 - t) * za + t * zb))
    frames = [align(coords[0], start)]
    for c in coords[1:]:
        frames.append(align(c, frames[-1]))
    return np.stack(frames)


@dataclass
class InpaintResult:
    """Completed motifs ``coords`` (n, k, 3) in the frame of the known atoms, known atoms first in their
    given order, then the infilled ones; ``slots`` (n, m) the decoder slot of each known atom;
    ``fixed_rmsd`` (n,) RMSD of the aligned decoded known atoms; ``gram_loss`` (n,) final loss; ``z``."""

    coords: np.ndarray
    slots: np.ndarray
    fixed_rmsd: np.ndarray
    gram_loss: np.ndarray
    z: np.ndarray

    @property
    def infilled(self) -> np.ndarray:
        return self.coords[..., self.slots.shape[-1] :, :]


def _candidates(k: int, m: int, limit: int | None = None) -> np.ndarray:
    """Order-preserving placements of m known atoms into k slots, (C, m)."""
    cands = np.array(list(itertools.combinations(range(k), m)), dtype=np.int64)
    return cands if limit is None else cands[:limit]


def _encoder_start(model: GramVAE, known: np.ndarray, slots: np.ndarray, rng) -> np.ndarray:
    """Encode clouds with the known atoms in ``slots`` and random vectors (typical radii) elsewhere."""
    n, m, _ = known.shape
    k = model.config.k
    radii = np.sqrt(np.clip(model.normalizer.mean_diag, 1e-6, None))
    clouds = rng.normal(size=(n, k, 3))
    clouds *= radii / np.linalg.norm(clouds, axis=-1, keepdims=True)
    np.put_along_axis(clouds, slots[..., None], known, axis=1)
    return model.encode_grams(gram_matrices(clouds))


def _optimise(
    model: GramVAE,
    z0: np.ndarray,
    slots: np.ndarray,
    target: np.ndarray,
    steps: int,
    lr: float,
    prior: float,
    step_done=None,
):
    """Adam on ``||G_dec(z)[slots, slots] - target||^2 + prior |z|^2`` for every row at once;
    ``step_done()`` after every step."""
    z = torch.tensor(z0, dtype=torch.float64, requires_grad=True)
    idx = torch.as_tensor(slots)
    tgt = torch.as_tensor(target)
    opt = torch.optim.Adam([z], lr=lr)
    model = model.double()
    try:
        for _ in range(steps):
            opt.zero_grad()
            loss = _gram_loss(model, z, idx, tgt) + prior * (z**2).sum(-1)
            loss.sum().backward()
            opt.step()
            if step_done is not None:
                step_done()
        with torch.no_grad():
            loss = _gram_loss(model, z, idx, tgt)
    finally:
        model.float()
    return z.detach().numpy(), loss.numpy()


def _gram_loss(model, z, idx, tgt):
    g = model.decode_gram(z)
    sub = torch.gather(g, 1, idx[:, :, None].expand(-1, -1, g.shape[-1]))
    sub = torch.gather(sub, 2, idx[:, None, :].expand(-1, idx.shape[1], -1))
    return ((sub - tgt) ** 2).sum((-1, -2))


def _hungarian_slots(
    coords: np.ndarray, known: np.ndarray, slots: np.ndarray, proper: bool = False
) -> np.ndarray:
    """Re-assign known atoms to decoded slots by Hungarian matching after Procrustes alignment."""
    out = slots.copy()
    for r in range(len(coords)):
        q = procrustes(coords[r, slots[r]], known[r], proper)
        cost = ((known[r][:, None] - (coords[r] @ q)[None]) ** 2).sum(-1)
        _, col = linear_sum_assignment(cost)
        out[r] = col
    return out


def _place_missing(known: np.ndarray, gram: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Missing vectors in the frame of ``known`` (m, 3) from a decoded Gram (k, k): least squares on
    their inner products with the known atoms and with each other, from the linear solution."""
    k = gram.shape[0]
    miss = np.setdiff1d(np.arange(k), slots)
    g_km = gram[np.ix_(slots, miss)]  # (m, u): known . missing
    g_mm = gram[np.ix_(miss, miss)]
    p0 = np.linalg.lstsq(known, g_km, rcond=None)[0].T  # (u, 3)
    iu = np.triu_indices(len(miss))

    def residual(flat):
        p = flat.reshape(-1, 3)
        return np.concatenate([(known @ p.T - g_km).ravel(), (p @ p.T - g_mm)[iu]])

    sol = least_squares(
        residual, p0.ravel(), method="lm" if residual(p0.ravel()).size >= p0.size else "trf"
    )
    return sol.x.reshape(-1, 3)


def inpaint(
    model: GramVAE,
    known: np.ndarray,
    *,
    restarts: int = 16,
    steps: int = 150,
    lr: float = 0.05,
    prior: float = 1e-3,
    assignment: str = "sorted",
    method: str = "gram",
    seed: int = 0,
    max_candidates: int | None = None,
    progress=None,
) -> InpaintResult:
    """Complete motifs whose known atoms are ``known`` (n, m, 3) or (m, 3) vectors from the centre.

    ``assignment``: ``"sorted"`` (order-preserving slot placements, one optimisation per placement)
    or ``"hungarian"`` (then also re-assigned by Hungarian matching and re-optimised); ``method``:
    ``"gram"`` or ``"procrustes"`` (see the module docstring). ``restarts`` starting latents per placement
    (one of them the encoder's guess). ``progress(done, total)`` is called after every
    optimisation step (all motifs move at once).
    """
    known = np.asarray(known, dtype=np.float64)
    single = known.ndim == 2
    if single:
        known = known[None]
    n, m, _ = known.shape
    k = model.config.k
    if not 1 <= m < k:
        raise ValueError(f"need 1 <= known atoms < {k}, got {m}")
    if assignment not in ("sorted", "hungarian"):
        raise ValueError(f"assignment must be 'sorted' or 'hungarian', got {assignment!r}")
    if method not in ("gram", "procrustes"):
        raise ValueError(f"method must be 'gram' or 'procrustes', got {method!r}")
    rng = np.random.default_rng(seed)
    # known atoms in order of distance (the decoder's slot order); remember the caller's order
    order = np.argsort(np.linalg.norm(known, axis=-1), axis=1, kind="stable")
    ks = np.take_along_axis(known, order[..., None], axis=1)
    cands = _candidates(k, m, max_candidates)
    c = len(cands)
    rows_env = np.repeat(np.arange(n), c * restarts)
    slots = np.tile(np.repeat(cands, restarts, axis=0), (n, 1))
    z0 = rng.normal(size=(len(rows_env), model.config.latent))
    enc = _encoder_start(
        model, ks[rows_env[::restarts]], slots[::restarts], rng
    )  # one per (env, candidate)
    z0[::restarts] = enc
    target = gram_matrices(ks)[rows_env]
    total, done = steps + (steps // 2 if assignment == "hungarian" else 0), [0]

    def step_done() -> None:
        done[0] += 1
        progress(done[0], total)

    tick = step_done if progress is not None else None
    z, loss = _optimise(model, z0, slots, target, steps, lr, prior, tick)
    if assignment == "hungarian":
        coords = gram_to_coords(model.decode_grams(z))
        slots = _hungarian_slots(coords, ks[rows_env], slots)
        z, loss = _optimise(model, z, slots, target, steps // 2, lr / 2, prior, tick)
    best = np.array(
        [
            r * c * restarts + np.argmin(loss[r * c * restarts : (r + 1) * c * restarts])
            for r in range(n)
        ]
    )
    zb, sb, lb = z[best], slots[best], loss[best]
    grams = model.decode_grams(zb)
    coords = gram_to_coords(grams)
    out = np.zeros((n, k, 3))
    fixed = np.zeros(n)
    for r in range(n):
        q = procrustes(coords[r, sb[r]], ks[r])
        aligned = coords[r] @ q
        fixed[r] = rmsd(aligned[sb[r]], ks[r])
        miss = np.setdiff1d(np.arange(k), sb[r])
        filled = _place_missing(ks[r], grams[r], sb[r]) if method == "gram" else aligned[miss]
        out[r, :m] = known[r]
        out[r, m:] = filled
    # slots in the caller's order of known atoms
    inv = np.argsort(order, axis=1)
    slots_out = np.take_along_axis(sb, inv, axis=1)
    res = InpaintResult(out, slots_out, fixed, lb, zb)
    if single:
        return InpaintResult(out[0], slots_out[0], fixed[0:1], lb[0:1], zb[0])
    return res
