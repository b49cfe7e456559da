"""MEGNet backbone: interface, exact E(3)/permutation/periodic invariance, species inputs,
batching, and that it learns (overfits a small real regression)."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from atomssl.data import Structure, load_matbench_dielectric
from atomssl.errors import ConfigError
from atomssl.graph import collate, to_graph
from atomssl.representation import BACKBONES, N_SPECIES, build_backbone
from atomssl.representation.megnet import GaussianExpansion, MEGNet
from atomssl.testing import assert_backbone_equivariant

TINY = dict(node_embedding_dim=8, dense=(16, 8), conv=(16, 16, 8), n_blocks=2)


def _triclinic(seed=0):
    """A 7-atom, 4-species triclinic crystal with well separated atoms."""
    rng = np.random.default_rng(seed)
    cell = np.array([[4.3, 0.0, 0.0], [1.1, 4.7, 0.0], [0.8, 1.3, 5.1]])
    frac = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5],
                     [0.25, 0.25, 0.25], [0.75, 0.75, 0.25], [0.25, 0.75, 0.75]])  # fmt: skip
    frac = frac + rng.normal(scale=0.03, size=frac.shape)
    numbers = np.array([8, 14, 14, 8, 26, 3, 8])
    return Structure(numbers, frac @ cell, cell, np.array([True, True, True]))


def test_registered_with_reference_defaults():
    model = build_backbone("megnet")
    assert BACKBONES["megnet"] is MEGNet and isinstance(model, MEGNet)
    assert model.graph_spec == {"cutoff": 4.0}
    assert (model.node_dim, model.edge_dim, model.embedding_dim) == (32, 32, 160)
    assert model.embedding.num_embeddings == N_SPECIES and model.rbf.num == 100
    assert float(model.rbf.centers[-1]) == pytest.approx(5.0)  # [0, cutoff + 1]
    assert model.provides_edges and not model.provides_vectors
    assert 150_000 < model.num_parameters() < 220_000
    assert build_backbone({"name": "megnet", "cutoff": 5.0}).graph_spec == {"cutoff": 5.0}
    with pytest.raises(ConfigError):
        build_backbone({"name": "megnet", "no_such_option": 1})
    with pytest.raises(ConfigError):
        build_backbone(
            {"name": "megnet", "dense": (64, 16)}
        )  # residuals need dense[-1] == conv[-1]


def test_gaussian_expansion_matches_formula():
    rbf = GaussianExpansion(0.0, 5.0, 100, 0.5).double()
    d = torch.tensor([0.0, 1.234, 4.9], dtype=torch.float64)
    centers = np.linspace(0.0, 5.0, 100)
    expected = np.exp(-((d.numpy()[:, None] - centers[None]) ** 2) / 0.25)
    np.testing.assert_allclose(rbf(d).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exactly_invariant(dtype):
    torch.manual_seed(0)
    model = MEGNet()
    assert_backbone_equivariant(model, _triclinic(), dtype=dtype, n_trials=2)


def test_outputs_depend_on_geometry_and_species_and_pass_gradients():
    torch.manual_seed(0)
    model = MEGNet(**TINY).double()
    s = _triclinic()
    batch = collate([to_graph(s, cutoff=4.0, dtype=torch.float64)])
    batch.pos.requires_grad_(True)
    out = model(batch)
    out.graph.sum().backward()
    assert batch.pos.grad is not None and batch.pos.grad.abs().max() > 0
    moved = s.copy(
        positions=s.positions + np.random.default_rng(1).normal(scale=0.1, size=(s.n_atoms, 3))
    )
    swapped = s.copy(numbers=np.where(s.numbers == 8, 9, s.numbers))
    with torch.no_grad():
        for other in (moved, swapped):
            o = model(collate([to_graph(other, cutoff=4.0, dtype=torch.float64)]))
            assert (o.graph - out.graph).abs().max() > 1e-6


def test_z_soft_and_mask_token():
    torch.manual_seed(0)
    model = MEGNet(**TINY).double().eval()
    s = _triclinic()
    batch = collate([to_graph(s, cutoff=4.0, dtype=torch.float64)])
    with torch.no_grad():
        ref = model(batch)
        batch.z_soft = F.one_hot(batch.z, N_SPECIES).double()
        soft = model(batch)
        for name in ("node", "edge", "graph"):
            torch.testing.assert_close(
                getattr(soft, name), getattr(ref, name), rtol=1e-12, atol=1e-12
            )
        # a 50/50 mixture embeds to the mean of the two embeddings
        mix = (
            0.5 * F.one_hot(batch.z, N_SPECIES).double()
            + 0.5 * F.one_hot(torch.full_like(batch.z, 3), N_SPECIES).double()
        )
        emb = model.embed_species(type("B", (), {"z_soft": mix})())
        torch.testing.assert_close(
            emb, 0.5 * (model.embedding(batch.z) + model.embedding(torch.full_like(batch.z, 3)))
        )
        del batch.z_soft
        # mask token (species 0) is accepted and changes the output
        batch.z = batch.z.clone()
        batch.z[0] = 0
        masked = model(batch)
    assert torch.isfinite(masked.graph).all() and (masked.graph - ref.graph).abs().max() > 1e-8


def test_batching_matches_single_structures():
    """No information leaks between structures of a batch; isolated atoms are handled."""
    torch.manual_seed(0)
    model = MEGNet(**TINY).double().eval()
    crystal = _triclinic()
    gas = Structure(
        np.array([1, 6]),
        np.array([[0.0, 0.0, 0.0], [9.0, 0.0, 0.0]]),
        np.eye(3) * 20.0,
        np.array([False, False, False]),
    )  # fmt: skip  (no edges at all)
    graphs = [to_graph(x, cutoff=4.0, dtype=torch.float64) for x in (crystal, gas, _triclinic(3))]
    with torch.no_grad():
        joint = model(collate(graphs))
        singles = [model(collate([g])) for g in graphs]
    torch.testing.assert_close(joint.graph, torch.cat([o.graph for o in singles]))
    torch.testing.assert_close(joint.node, torch.cat([o.node for o in singles]))
    torch.testing.assert_close(joint.edge, torch.cat([o.edge for o in singles]))
    assert joint.edge.shape == (sum(g.edge_index.shape[1] for g in graphs), model.edge_dim)
    assert torch.isfinite(joint.graph).all()


def test_overfits_volume_per_atom():
    """Learns: volume per atom of 64 matbench_dielectric structures to near-zero training error."""
    torch.manual_seed(0)
    structures = load_matbench_dielectric(limit=64)
    assert len(structures) == 64
    y = torch.tensor(
        [abs(np.linalg.det(s.cell)) / s.n_atoms for s in structures], dtype=torch.float32
    )
    model = MEGNet(**TINY)
    batch = collate([to_graph(s, **model.graph_spec) for s in structures])
    head = torch.nn.Linear(model.embedding_dim, 1)
    mean, std = y.mean(), y.std()
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=2e-2)
    steps = 250
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        pred = head(model(batch).graph).squeeze(-1)
        loss = F.mse_loss(pred, (y - mean) / std)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        pred = head(model(batch).graph).squeeze(-1) * std + mean
    mae = (pred - y).abs().mean()
    mad = (y - y.mean()).abs().mean()
    assert mae < 0.05 * mad, f"train MAE {mae:.3f} vs label MAD {mad:.3f}"
