"""Reusable symmetry checks (in the spirit of e3nn's ``assert_equivariant``).

:func:`transform_structure` applies a random rigid motion (proper or improper rotation +
translation), a permutation of atoms, a re-wrapping of atoms into other periodic images and a
change of cell origin, and remembers how atoms map. :func:`assert_equivariant` runs a function
``fn(structure) -> dict`` on the original and transformed structures and checks each output
according to its declared kind:

- ``"graph"``: per-structure invariant, unchanged;
- ``"node"``: per-atom invariant, permuted with the atoms;
- ``"vector"``: per-atom vectors ``(n, ..., 3)``, permuted and rotated (``v -> R v``);
- ``"edge"``: per-edge invariant; edges are matched by (src, dst, image shift) across the
  transformation, so ``fn`` must also return ``"_edge_index"`` (2, E) and ``"_shift"`` (E, 3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .data._structure import Structure

ALL_CHECKS = ("rotation", "reflection", "translation", "permutation", "image", "origin")


def random_rotation(rng: np.random.Generator, improper: bool = False) -> np.ndarray:
    """A uniformly random orthogonal 3x3 matrix with det +1 (or -1 when ``improper``)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if improper:
        q = -q
    return q


@dataclass
class Transform:
    """How a transformed structure relates to the original one.

    New atom ``k`` is old atom ``perm[k]`` moved to ``R @ x + t + image[k] @ cell_new``.
    """

    rotation: np.ndarray
    translation: np.ndarray
    perm: np.ndarray
    image: np.ndarray  # (n, 3) int lattice offsets added to each (new) atom


def transform_structure(
    structure: Structure,
    rng: np.random.Generator,
    checks: Sequence[str] = ALL_CHECKS,
) -> tuple[Structure, Transform]:
    """Apply the requested random symmetry operations to ``structure``."""
    n = structure.n_atoms
    R = np.eye(3)
    if "rotation" in checks:
        R = random_rotation(rng)
    if "reflection" in checks:
        R = R @ random_rotation(rng, improper=True)
    t = rng.normal(size=3) * 3.0 if "translation" in checks else np.zeros(3)
    perm = rng.permutation(n) if "permutation" in checks else np.arange(n)
    positions = structure.positions[perm] @ R.T + t
    cell = structure.cell @ R.T
    image = np.zeros((n, 3), dtype=np.int64)
    if structure.pbc.any():
        if "origin" in checks:
            # move the origin of the cell and wrap atoms back in: same crystal, new cell origin
            frac = np.linalg.solve(cell.T, positions.T).T
            frac[:, structure.pbc] += rng.uniform(-1, 1, size=(1, int(structure.pbc.sum())))
            wrapped = frac.copy()
            wrapped[:, structure.pbc] = np.mod(frac[:, structure.pbc], 1.0)
            image += np.rint(wrapped - frac).astype(np.int64)
            # the uniform origin shift is a pure translation; keep it as one
            shift_cart = (frac - np.linalg.solve(cell.T, positions.T).T)[0] @ cell
            t = t + shift_cart
            positions = wrapped @ cell
        if "image" in checks:
            jump = rng.integers(-2, 3, size=(n, 3))
            jump[:, ~structure.pbc] = 0
            image += jump
            positions = positions + jump @ cell
    new = structure.copy(numbers=structure.numbers[perm], positions=positions, cell=cell)
    return new, Transform(R, t, perm, image)


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _edge_keys(
    edge_index: np.ndarray, shift: np.ndarray, perm: np.ndarray | None, image: np.ndarray | None
):
    src, dst = edge_index.astype(np.int64)
    shift = np.rint(shift).astype(np.int64)
    if perm is not None:
        # transformed structure: express the edge in the original atoms' labels and images
        assert image is not None  # perm and image come together (a Transform)
        shift = shift + image[dst] - image[src]
        src, dst = perm[src], perm[dst]
    return [(int(a), int(b), *map(int, s)) for a, b, s in zip(src, dst, shift)]


def assert_equivariant(
    fn: Callable[[Structure], Mapping[str, object]],
    structure: Structure,
    kinds: Mapping[str, str],
    checks: Sequence[str] = ALL_CHECKS,
    n_trials: int = 3,
    atol: float = 1e-8,
    rtol: float = 1e-6,
    seed: int = 0,
) -> None:
    """Check the outputs of ``fn`` transform as declared in ``kinds`` (see module docstring)."""
    rng = np.random.default_rng(seed)
    ref = {k: _to_numpy(v) for k, v in fn(structure).items()}
    for trial in range(n_trials):
        new, tr = transform_structure(structure, rng, checks)
        out = {k: _to_numpy(v) for k, v in fn(new).items()}
        for name, kind in kinds.items():
            a, b = ref[name], out[name]
            if kind == "graph":
                expected = a
            elif kind == "node":
                expected = a[tr.perm]
            elif kind == "vector":
                expected = a[tr.perm] @ tr.rotation.T
            elif kind == "edge":
                keys_ref = _edge_keys(ref["_edge_index"], ref["_shift"], None, None)
                keys_new = _edge_keys(out["_edge_index"], out["_shift"], tr.perm, tr.image)
                index = {key: i for i, key in enumerate(keys_ref)}
                missing = [key for key in keys_new if key not in index]
                if missing or len(keys_new) != len(keys_ref):
                    raise AssertionError(
                        f"{name}: edge sets differ after {checks} (trial {trial}): {len(missing)} unmatched edges"
                    )
                expected = a[[index[key] for key in keys_new]]
            else:
                raise ValueError(f"unknown kind {kind!r} for output {name!r}")
            scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
            err = float(np.abs(b - expected).max(initial=0.0))
            if not err <= atol + rtol * scale:
                raise AssertionError(
                    f"output {name!r} ({kind}) breaks symmetry under {list(checks)} (trial {trial}): "
                    f"max error {err:.3g} > {atol + rtol * scale:.3g}"
                )


def backbone_outputs(backbone, dtype: torch.dtype = torch.float64) -> Callable[[Structure], dict]:
    """Wrap a backbone as ``fn(structure) -> dict`` for :func:`assert_equivariant`.

    Builds the graph the backbone asks for (``backbone.graph_spec``), runs it in eval mode in
    ``dtype`` and returns ``node``, ``graph`` and, when present, ``vector``, ``edge``.
    """
    from .graph import collate, to_graph

    def fn(structure: Structure) -> dict:
        backbone.eval()
        backbone.to(dtype)
        batch = collate([to_graph(structure, dtype=dtype, validate=False, **backbone.graph_spec)])
        with torch.no_grad():
            out = backbone(batch)
        res = {
            "node": out.node,
            "graph": out.graph,
            "_edge_index": batch.edge_index,
            "_shift": batch.shift,
        }
        if out.vector is not None:
            res["vector"] = out.vector
        if out.edge is not None:
            res["edge"] = out.edge
        return res

    return fn


def assert_backbone_equivariant(
    backbone,
    structure: Structure,
    checks: Sequence[str] = ALL_CHECKS,
    dtype: torch.dtype = torch.float64,
    n_trials: int = 2,
    atol: float | None = None,
    rtol: float | None = None,
    seed: int = 0,
) -> None:
    """All of a backbone's outputs transform correctly (invariant / rotated / permuted)."""
    fn = backbone_outputs(backbone, dtype)
    kinds = {"node": "node", "graph": "graph"}
    probe = fn(structure)
    if "vector" in probe:
        kinds["vector"] = "vector"
    if "edge" in probe:
        kinds["edge"] = "edge"
    if atol is None:
        atol = 1e-9 if dtype == torch.float64 else 1e-4
    if rtol is None:
        rtol = 1e-7 if dtype == torch.float64 else 1e-4
    assert_equivariant(fn, structure, kinds, checks, n_trials, atol, rtol, seed)


def tiny_gaa_config(**overrides) -> dict:
    """The configuration of a tiny gaa backbone (12 neighbours, width 8, one block, no dropout):
    fast enough for tests and examples of per-particle workflows; ``overrides`` replace keys."""
    return {
        "name": "gaa",
        "k": 12,
        "width": 8,
        "n_blocks": 1,
        "rank": 2,
        "hidden_factor": 1.0,
        "species_dim": 4,
        "dropout": 0.0,
        "normalize": None,
        "chiral": False,
        **overrides,
    }
