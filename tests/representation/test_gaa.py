"""Geometric-algebra attention backbone: outputs, exact symmetries, bond fields, learning."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk

from atomssl.data import Structure
from atomssl.errors import ConfigError
from atomssl.graph import collate, to_graph
from atomssl.representation import build_backbone
from atomssl.testing import ALL_CHECKS, assert_backbone_equivariant, random_rotation

PROPER = tuple(c for c in ALL_CHECKS if c != "reflection")


def rattled(seed=0, scale=0.08):
    """A rattled rock-salt cell with three species (no distance ties, so kNN is unambiguous)."""
    s = Structure.from_ase(bulk("NaCl", "rocksalt", a=5.64, cubic=True))
    rng = np.random.default_rng(seed)
    numbers = s.numbers.copy()
    numbers[1] = 19  # one K: three species
    return s.copy(
        positions=s.positions + rng.normal(size=s.positions.shape) * scale, numbers=numbers
    )


def graph_batch(structures, k=12, dtype=torch.float64):
    return collate([to_graph(s, k=k, dtype=dtype) for s in structures])


def small(**kw):
    return build_backbone({"name": "gaa", "width": 16, "n_blocks": 2, "dropout": 0.0, **kw})


def test_outputs_shapes_and_config():
    torch.manual_seed(0)
    bb = build_backbone("gaa")
    assert bb.graph_spec == {"k": 12}
    assert bb.provides_vectors and bb.provides_edges and bb.provides_edge_vectors
    assert bb.num_parameters() > 10_000
    s = rattled()
    batch = graph_batch([s, rattled(seed=1)], dtype=torch.float32)
    out = bb(batch)
    n = 2 * s.n_atoms
    assert out.node.shape == (n, 32) and out.graph.shape == (2, 32)
    assert out.edge.shape == (n * 12, 32) and out.edge_vector.shape == (n * 12, 3)
    assert out.vector.shape == (n, 4, 3)
    assert all(
        torch.isfinite(t).all()
        for t in (out.node, out.graph, out.edge, out.edge_vector, out.vector)
    )
    out.graph.sum().backward()
    assert bb.species.weight.grad is not None
    for bad in ({"normalize": "max"}, {"invariant_mode": "all"}, {"k": 1}, {"colour": 3}):
        with pytest.raises(ConfigError):
            build_backbone({"name": "gaa", **bad})


def test_rejects_graph_that_is_not_knn():
    bb = small(k=12)
    with pytest.raises(ConfigError, match="kNN graph"):
        bb(collate([to_graph(rattled(), cutoff=2.0, dtype=torch.float32)]))
    with pytest.raises(ConfigError, match="k=12"):
        bb(collate([to_graph(rattled(), k=8, dtype=torch.float32)]))


def test_graph_with_more_neighbours_reads_as_knn():
    """A graph holding more than k neighbours per atom (grouped by centre) weighs the k nearest 1 and
    the rest 0: the same embedding as the kNN graph."""
    torch.manual_seed(0)
    bb = small(k=12).double().eval()
    s = rattled()
    with torch.no_grad():
        knn = bb(collate([to_graph(s, k=12, dtype=torch.float64)])).node
        wide = bb(collate([to_graph(s, k=20, dtype=torch.float64)])).node
    assert torch.allclose(knn, wide, atol=1e-10, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chiral_default_is_so3_equivariant_but_not_reflection_invariant(dtype):
    """Default (the package's full invariants, with the pseudoscalar): rotations, translations,
    permutations, re-wrapping and cell-origin changes are exact symmetries; mirror images are
    told apart (so reflection invariance must fail)."""
    torch.manual_seed(0)
    bb = build_backbone({"name": "gaa", "dropout": 0.1})
    s = rattled()
    assert_backbone_equivariant(bb, s, checks=PROPER, dtype=dtype, n_trials=2)
    for check in ("rotation", "translation", "permutation", "image", "origin"):
        assert_backbone_equivariant(bb, s, checks=(check,), dtype=dtype, n_trials=1, seed=3)
    with pytest.raises(AssertionError, match="reflection"):
        assert_backbone_equivariant(bb, s, checks=("reflection",), dtype=dtype, n_trials=1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_achiral_option_is_o3_equivariant(dtype):
    torch.manual_seed(1)
    bb = build_backbone({"name": "gaa", "chiral": False, "normalize": "min"})
    assert_backbone_equivariant(bb, rattled(seed=2), checks=ALL_CHECKS, dtype=dtype, n_trials=2)


@pytest.mark.parametrize("chiral,improper", [(True, False), (False, False), (False, True)])
def test_edge_vectors_rotate(chiral, improper):
    """Per-bond covariant vectors rotate with the structure (edge order is unchanged by a rigid motion)."""
    torch.manual_seed(2)
    bb = small(chiral=chiral).double().eval()
    s = rattled(seed=4)
    R = random_rotation(np.random.default_rng(5), improper=improper)
    s2 = s.copy(positions=s.positions @ R.T + np.array([0.3, -1.0, 2.0]), cell=s.cell @ R.T)
    b1, b2 = graph_batch([s]), graph_batch([s2])
    assert torch.equal(b1.edge_index, b2.edge_index)
    with torch.no_grad():
        o1, o2 = bb(b1), bb(b2)
    Rt = torch.tensor(R.T)
    torch.testing.assert_close(o2.edge_vector, o1.edge_vector @ Rt, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(o2.vector, o1.vector @ Rt, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(o2.edge, o1.edge, atol=1e-10, rtol=1e-8)


def test_min_normalisation_makes_it_scale_invariant():
    torch.manual_seed(3)
    bb = small(normalize="min").double().eval()
    s = rattled(seed=6)
    big = s.copy(positions=s.positions * 1.7, cell=s.cell * 1.7)
    with torch.no_grad():
        a, b = bb(graph_batch([s])), bb(graph_batch([big]))
    torch.testing.assert_close(b.node, a.node)
    torch.testing.assert_close(b.vector, 1.7 * a.vector)  # vectors come back in input units
    unscaled = small().double().eval()
    with torch.no_grad():
        assert not torch.allclose(
            unscaled(graph_batch([s])).node, unscaled(graph_batch([big])).node
        )


def test_edge_delta_equals_moving_atoms():
    """``edge_delta`` is exactly a displacement of bond vectors: displacing atoms by u is the
    same as adding u[dst] - u[src] to every bond."""
    torch.manual_seed(4)
    bb = small().double().eval()
    batch = graph_batch([rattled(seed=7), rattled(seed=8)])
    u = torch.randn_like(batch.pos) * 0.1
    moved = copy.copy(batch)
    moved.pos = batch.pos + u
    delta = copy.copy(batch)
    src, dst = batch.edge_index
    delta.edge_delta = u[dst] - u[src]
    with torch.no_grad():
        a, b, c = bb(moved), bb(delta), bb(batch)
    torch.testing.assert_close(a.node, b.node, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(a.edge_vector, b.edge_vector, atol=1e-12, rtol=1e-10)
    assert not torch.allclose(a.node, c.node)
    assert not hasattr(batch, "edge_delta") or batch.edge_delta is None  # caller's batch untouched


def test_edge_mask_equals_smaller_cloud():
    """Hiding bond 0 of every cloud gives exactly the network on the other k-1 bonds."""
    torch.manual_seed(5)
    bb12 = small(k=12).double().eval()
    bb11 = small(k=11).double().eval()
    bb11.load_state_dict(bb12.state_dict())  # no weight depends on k
    batch = graph_batch([rattled(seed=9)])
    n = batch.pos.shape[0]
    keep = torch.ones(n, 12, dtype=torch.bool)
    keep[:, 0] = False
    masked = copy.copy(batch)
    masked.edge_mask = keep.reshape(-1)
    smaller = copy.copy(batch)
    smaller.edge_index = batch.edge_index[:, keep.reshape(-1)]
    smaller.shift = batch.shift[keep.reshape(-1)]
    with torch.no_grad():
        a, b = bb12(masked), bb11(smaller)
    torch.testing.assert_close(a.node, b.node, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(a.vector, b.vector, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(
        a.edge.reshape(n, 12, -1)[:, 1:], b.edge.reshape(n, 11, -1), atol=1e-10, rtol=1e-8
    )


def test_soft_species_match_one_hot():
    torch.manual_seed(6)
    bb = small().double().eval()
    batch = graph_batch([rattled(seed=10)])
    soft = copy.copy(batch)
    soft.z_soft = torch.nn.functional.one_hot(batch.z, 119).double()
    with torch.no_grad():
        torch.testing.assert_close(bb(soft).node, bb(batch).node)
    soft.z_soft = soft.z_soft.roll(1, dims=1)  # other elements: other features
    with torch.no_grad():
        assert not torch.allclose(bb(soft).node, bb(batch).node)


def _dielectric_structures(n=64, max_atoms=4):
    """The first ``n`` matbench_dielectric structures with at most ``max_atoms`` atoms."""
    try:
        from atomssl.data import load_matbench_dielectric  # type: ignore[attr-defined]

        structures = [s for s in load_matbench_dielectric(limit=1200) if s.n_atoms <= max_atoms]
    except ImportError:  # the dataset loader is not there yet: read the bundled file directly
        import crystal_toolkit

        from atomssl.data._pmg_dict import structure_from_pmg_dict

        path = Path(crystal_toolkit.__file__).parent / "apps/examples/matbench_dielectric.json.gz"
        data = json.loads(gzip.open(path).read())["structure"]
        structures = [structure_from_pmg_dict(data[str(i)]) for i in range(1200)]
        structures = [s for s in structures if s.n_atoms <= max_atoms]
    assert len(structures) >= n
    return structures[:n]


def test_overfits_volume_per_atom_of_64_dielectric_structures():
    """Learns a real regression: volume per atom of 64 matbench_dielectric crystals (absolute
    lengths, so no distance normalisation) to a training error far below the spread."""
    torch.manual_seed(0)
    structures = _dielectric_structures()
    batch = collate([to_graph(s, k=8) for s in structures])
    y = torch.tensor([s.volume / s.n_atoms for s in structures], dtype=torch.float32)
    mu, sd = y.mean(), y.std()
    bb = small(k=8, momentum=0.9)
    head = torch.nn.Sequential(
        torch.nn.Linear(bb.embedding_dim, 64), torch.nn.SiLU(), torch.nn.Linear(64, 1)
    )
    opt = torch.optim.Adam([*bb.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        loss = ((head(bb(batch).graph).squeeze(-1) - (y - mu) / sd) ** 2).mean()
        loss.backward()
        opt.step()
    bb.eval()
    with torch.no_grad():
        pred = head(bb(batch).graph).squeeze(-1) * sd + mu
    mae = (pred - y).abs().mean()
    assert loss.item() < 0.01
    assert mae < 0.05 * sd, (mae, sd)  # mean abs deviation of the targets is ~0.8 sd


def test_fast_dropout_matches_nn_dropout_in_distribution():
    """The hand-written dropout (cheaper random draws) drops a fraction p, rescales the kept
    values by 1/(1-p), passes gradients through the same mask, is reproducible under a seed and
    is the identity in eval mode."""
    from atomssl.representation.gaa import _Dropout

    drop = _Dropout(0.1)
    x = torch.rand(200_000, dtype=torch.float64) + 0.5
    x.requires_grad_(True)
    torch.manual_seed(0)
    y = drop(x)
    kept = y != 0
    assert abs(1 - kept.double().mean().item() - 0.1) < 0.003  # binomial sd ~7e-4
    torch.testing.assert_close(y[kept], x[kept] / 0.9)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.double() / 0.9)
    torch.manual_seed(0)
    assert torch.equal(drop(x.detach()), y.detach())
    assert not torch.equal(drop(x.detach()), y.detach())  # fresh draws each call
    # no correlation between neighbouring elements (16-bit words cut from one 64-bit draw)
    k = kept.double().reshape(-1, 4)
    assert abs(torch.corrcoef(k.T)[0, 1:].abs().max().item()) < 0.02
    drop.eval()
    assert drop(x) is x
