"""Training-ready torch graphs: to_graph / to_graphs, collate, edge_vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomssl.data import Structure
from atomssl.errors import OverlapError
from atomssl.graph import collate, edge_vectors, knn_graph, radius_graph, to_graph, to_graphs


def _structures():
    rng = np.random.default_rng(0)
    out = []
    for i, n in enumerate((3, 5, 2, 4)):
        cell = np.diag([4.0 + i, 4.5, 5.0]) + rng.normal(scale=0.3, size=(3, 3))
        pbc = [True, True, True] if i != 2 else [True, False, True]
        pos = rng.uniform(0, 1, (n, 3)) @ cell
        out.append(
            Structure(rng.integers(1, 50, n), pos, cell, pbc, labels={"n": 1.5 + i}, id=f"s{i}")
        )
    return out


def test_to_graph_fields_match_the_neighbor_list():
    s = _structures()[0]
    g = to_graph(s, cutoff=4.0, labels=["n"])
    nl = radius_graph(s, 4.0)
    np.testing.assert_array_equal(g.z.numpy(), s.numbers)
    assert g.pos.dtype == torch.float32 and g.pos.shape == (s.n_atoms, 3)
    assert g.cell.shape == (1, 3, 3) and g.pbc.shape == (1, 3)
    np.testing.assert_array_equal(g.edge_index.numpy(), np.stack([nl.src, nl.dst]))
    np.testing.assert_array_equal(g.shift.numpy(), nl.shift)
    assert g.natoms.tolist() == [s.n_atoms] and g.num_nodes == s.n_atoms
    assert g.y_n.tolist() == [1.5]
    with pytest.raises(KeyError, match="label 'gap' missing"):
        to_graph(s, cutoff=4.0, labels=["gap"])
    with pytest.raises(ValueError, match="exactly one of"):
        to_graph(s)


def test_to_graphs_equals_to_graph():
    structures = _structures()
    for kw in ({"cutoff": 4.0}, {"k": 3}):
        batch = to_graphs(structures, labels=["n"], **kw)
        for s, g in zip(structures, batch):
            ref = to_graph(s, labels=["n"], **kw)
            for key in ("z", "pos", "cell", "pbc", "edge_index", "shift", "natoms", "y_n"):
                assert torch.equal(g[key], ref[key]), key


def test_edge_vectors_equal_neighbor_list_vectors():
    for s in _structures():
        for kw, nl in (({"cutoff": 4.0}, radius_graph(s, 4.0)), ({"k": 3}, knn_graph(s, 3))):
            g = to_graph(s, dtype=torch.float64, **kw)
            np.testing.assert_allclose(edge_vectors(g).numpy(), nl.vec, atol=1e-10)


def test_collate_offsets_and_batched_edge_vectors():
    structures = _structures()
    graphs = [to_graph(s, cutoff=4.0, dtype=torch.float64) for s in structures]
    batch = collate(graphs)
    sizes = [s.n_atoms for s in structures]
    offsets = np.cumsum([0] + sizes[:-1])
    expected = np.concatenate([g.edge_index.numpy() + o for g, o in zip(graphs, offsets)], axis=1)
    np.testing.assert_array_equal(batch.edge_index.numpy(), expected)
    np.testing.assert_array_equal(batch.batch.numpy(), np.repeat(np.arange(len(sizes)), sizes))
    assert batch.cell.shape == (len(structures), 3, 3)
    assert batch.natoms.tolist() == sizes
    np.testing.assert_allclose(
        edge_vectors(batch).numpy(),
        np.concatenate([radius_graph(s, 4.0).vec for s in structures]),
        atol=1e-10,
    )


def test_gradients_flow_to_positions():
    structures = _structures()
    batch = collate([to_graph(s, cutoff=4.0, dtype=torch.float64) for s in structures])
    pos = batch.pos.clone().requires_grad_(True)
    vec = edge_vectors(batch, pos)
    vec.norm(dim=1).sum().backward()
    # d/dpos of sum |v_e|: +u_e on dst, -u_e on src (u_e the unit edge vector)
    u = (vec / vec.norm(dim=1, keepdim=True)).detach()
    src, dst = batch.edge_index
    expected = torch.zeros_like(pos).index_add_(0, dst, u).index_add_(0, src, -u)
    assert torch.allclose(pos.grad, expected, atol=1e-10)
    assert pos.grad.abs().sum() > 0


def test_overlap_detected_with_the_same_message_as_validate():
    s = _structures()[1]
    pos = s.positions.copy()
    pos[3] = pos[1] + [0.02, 0.0, 0.05]
    bad = s.copy(positions=pos)
    with pytest.raises(OverlapError) as from_validate:
        bad.validate()
    for kw in ({"cutoff": 4.0}, {"k": 2}, {"cutoff": 0.05}):  # graph reused / too short: full check
        with pytest.raises(OverlapError) as from_graph:
            to_graph(bad, **kw)
        assert str(from_graph.value) == str(from_validate.value)
        with pytest.raises(OverlapError):
            to_graphs([s, bad], **kw)
    to_graph(bad, cutoff=4.0, validate=False)  # no check when asked not to


def test_restrict_cutoff_equals_building_at_the_shorter_cutoff():
    from atomssl.graph import restrict_cutoff

    structures = _structures()
    long = collate([to_graph(s, cutoff=5.0) for s in structures])
    short = collate([to_graph(s, cutoff=4.0) for s in structures])
    cut = restrict_cutoff(long, 4.0)

    def edges(g):
        vec = edge_vectors(g).detach().numpy()
        src, dst = g.edge_index.numpy()
        return sorted(zip(src.tolist(), dst.tolist(), np.round(vec, 6).tolist()))

    assert cut.edge_index.shape[1] == short.edge_index.shape[1] < long.edge_index.shape[1]
    assert edges(cut) == edges(short)
    assert long.edge_index.shape[1] > cut.edge_index.shape[1]  # the input is left alone
    assert restrict_cutoff(short, 4.0) is short  # nothing to drop: no copy
