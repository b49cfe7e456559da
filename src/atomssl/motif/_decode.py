"""From Gram matrices back to coordinates: nearest PSD rank-3 matrix, Procrustes "synchronisation", assignment.

A Gram matrix fixes a point cloud up to an orthogonal transform (rotation or reflection). Decoding
takes the three largest eigenpairs (eigenvalues clipped at zero): ``X = V_3 L_3^(1/2)``, which is the
nearest (Frobenius) PSD rank-3 matrix's factor (Eckart-Young). Synchronisation then finds the orthogonal
``Q`` minimising ``||X Q - Y||`` (SVD / Kabsch); because Gram matrices cannot tell mirror images apart,
reflections are allowed unless ``proper=True``. All functions are batched over leading axes.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def gram_to_coords(gram: np.ndarray, dim: int = 3) -> np.ndarray:
    """Coordinates (..., k, dim) whose Gram matrix is the nearest PSD rank-``dim`` matrix to ``gram``."""
    gram = np.asarray(gram, dtype=np.float64)
    sym = 0.5 * (gram + np.swapaxes(gram, -1, -2))
    w, v = np.linalg.eigh(sym)  # ascending
    w = np.clip(w[..., ::-1][..., :dim], 0.0, None)
    v = v[..., ::-1][..., :dim]
    return v * np.sqrt(w)[..., None, :]


def nearest_psd(gram: np.ndarray, dim: int = 3) -> np.ndarray:
    """Nearest positive semidefinite matrix of rank <= ``dim`` (Frobenius norm)."""
    x = gram_to_coords(gram, dim)
    return np.einsum("...ai,...bi->...ab", x, x)


def procrustes(
    x: np.ndarray, y: np.ndarray, proper: bool = False, weights: np.ndarray | None = None
) -> np.ndarray:
    """Orthogonal ``Q`` (..., 3, 3) minimising ``sum_a w_a |x_a Q - y_a|^2`` (no translation: clouds are centred
    on their central atom). ``proper=True`` restricts ``Q`` to rotations (det +1)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if weights is not None:
        x = x * np.asarray(weights, dtype=np.float64)[..., None]
    h = np.einsum("...ai,...aj->...ij", x, y)
    u, _, vt = np.linalg.svd(h)
    if proper:
        d = np.sign(np.linalg.det(u @ vt))
        d = np.where(d == 0, 1.0, d)
        u = u.copy()
        u[..., :, -1] *= d[..., None]
    return u @ vt


def align(x: np.ndarray, y: np.ndarray, proper: bool = False) -> np.ndarray:
    """``x`` rotated (or reflected) onto ``y`` by :func:`procrustes`."""
    return x @ procrustes(x, y, proper)


def rmsd(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Root-mean-square distance between matched points, over the last two axes."""
    return np.sqrt(((np.asarray(x) - np.asarray(y)) ** 2).sum(-1).mean(-1))


def aligned_rmsd(x: np.ndarray, y: np.ndarray, proper: bool = False) -> np.ndarray:
    """RMSD after the best orthogonal alignment of ``x`` onto ``y`` (rows matched in order)."""
    return rmsd(align(x, y, proper), y)


def assign_and_align(
    x: np.ndarray,
    y: np.ndarray,
    proper: bool = False,
    iterations: int = 10,
    n_starts: int = 8,
    seed: int = 0,
    init: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Best matching of the rows of ``x`` (k, 3) to the rows of ``y`` (m <= k, 3) and best orthogonal ``Q``.

    Alternates Procrustes (given the matching) and Hungarian assignment (given ``Q``), from a matching by
    distance to the centre (rotation invariant), from ``init`` (a matching, e.g. the identity) if given,
    and from ``n_starts - 1`` random rotations. Returns
    ``(index, Q, rmsd)`` with ``x[index] @ Q`` approximating ``y``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    rng = np.random.default_rng(seed)
    rx, ry = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    _, first = linear_sum_assignment(np.abs(ry[:, None] - rx[None, :]))
    starts: list[tuple[np.ndarray | None, np.ndarray | None]] = [(first, None)]
    if init is not None:
        starts.append((np.asarray(init), None))
    for _ in range(max(0, n_starts - 1)):
        rot, _r = np.linalg.qr(rng.normal(size=(3, 3)))
        starts.append((None, rot))
    best = (first, np.eye(3), np.inf)
    for index, q in starts:
        for _ in range(iterations):
            if index is None:
                assert q is not None  # each start has a matching or a rotation
                cost = ((y[:, None, :] - (x @ q)[None, :, :]) ** 2).sum(-1)
                _, index = linear_sum_assignment(cost)
            q = procrustes(x[index], y, proper)
            cost = ((y[:, None, :] - (x @ q)[None, :, :]) ** 2).sum(-1)
            _, new = linear_sum_assignment(cost)
            if np.array_equal(new, index):
                break
            index = new
        q = procrustes(x[index], y, proper)
        err = float(rmsd(x[index] @ q, y))
        if err < best[2]:
            best = (np.asarray(index), q, err)
    return best


def gram_to_distances(gram: np.ndarray) -> np.ndarray:
    """Distances (..., k+1, k+1) among the central atom (index 0) and its k neighbours implied by a Gram matrix."""
    gram = np.asarray(gram, dtype=np.float64)
    k = gram.shape[-1]
    diag = np.clip(np.diagonal(gram, axis1=-2, axis2=-1), 0.0, None)
    d2 = np.zeros(gram.shape[:-2] + (k + 1, k + 1))
    d2[..., 0, 1:] = d2[..., 1:, 0] = diag
    d2[..., 1:, 1:] = diag[..., :, None] + diag[..., None, :] - 2 * gram
    return np.sqrt(np.clip(d2, 0.0, None))


def refine_coords(
    gram: np.ndarray, coords: np.ndarray | None = None, iterations: int = 200, progress=None
) -> np.ndarray:
    """Coordinates that best reproduce the *distances* implied by a (possibly non-PSD, high-rank) Gram matrix.

    The rank-3 eigen-solution is the best fit to the Gram entries, but when a decoded Gram matrix is a blur of
    several clouds its truncation shrinks the cloud. Starting from it, L-BFGS minimises the squared error of all
    centre-neighbour and neighbour-neighbour distances (metric multidimensional scaling).
    ``progress(evaluations, most)``: called after every evaluation of the loss (all at once).
    """
    import torch

    target = torch.as_tensor(gram_to_distances(gram))
    x0 = gram_to_coords(gram) if coords is None else np.asarray(coords, dtype=np.float64)
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    iu = torch.triu_indices(target.shape[-1], target.shape[-1], 1)
    opt = torch.optim.LBFGS(
        [x],
        max_iter=iterations,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )
    most, evaluations = opt.defaults["max_eval"], [0]

    def closure():
        if progress is not None:
            evaluations[0] += 1
            progress(min(evaluations[0], most), most)
        opt.zero_grad()
        pts = torch.cat([torch.zeros_like(x[..., :1, :]), x], dim=-2)
        diff = pts[..., :, None, :] - pts[..., None, :, :]
        d = torch.sqrt((diff**2).sum(-1) + 1e-12)
        loss = ((d - target)[..., iu[0], iu[1]] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return x.detach().numpy()
