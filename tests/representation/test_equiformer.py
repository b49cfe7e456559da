"""Equivariant graph attention transformer: exact symmetry, continuity, species input, learning."""

import math

import numpy as np
import pytest
import torch
from ase.build import bulk
from e3nn import o3

from atomssl.data import Structure, load_matbench_dielectric
from atomssl.errors import ConfigError
from atomssl.graph import collate, to_graph
from atomssl.representation import BACKBONES, build_backbone
from atomssl.representation._e3nn_layers import DepthwiseTP, from_e3nn, to_e3nn
from atomssl.representation.equiformer import SIZES, EquivariantTransformer
from atomssl.testing import ALL_CHECKS, assert_backbone_equivariant, random_rotation

# small but with l = 2 and l = 3 features, so every path type is exercised
SMALL = dict(size="tiny", channels=12, lmax=3, num_heads=2, num_layers=2, att_dim=4, vector_dim=3)


def _crystal() -> Structure:
    """Rattled rock salt in a skewed (triclinic) cell, two species."""
    atoms = bulk("NaCl", "rocksalt", a=5.4, cubic=True)
    atoms.cell = atoms.cell.array + np.array([[0, 0.4, 0.2], [0.3, 0, 0.1], [0.2, 0.5, 0]])
    atoms.rattle(0.1, seed=1)
    return Structure.from_ase(atoms)


def _model(**kw) -> EquivariantTransformer:
    torch.manual_seed(0)
    return build_backbone({"name": "equiformer", **{**SMALL, **kw}})


def _run(model, structures, dtype=torch.float64):
    model.to(dtype).eval()
    batch = collate([to_graph(s, dtype=dtype, **model.graph_spec) for s in structures])
    return model(batch), batch


def test_registered_and_configurable():
    assert BACKBONES["equiformer"] is EquivariantTransformer
    sizes = {name: build_backbone({"name": "equiformer", "size": name}) for name in SIZES}
    counts = [sizes[n].num_parameters() for n in ("tiny", "small", "large")]
    assert counts == sorted(counts) and counts[0] < counts[2] / 50
    large = sizes["large"]
    assert 2 <= large.lmax <= 6 and large.muls[0] >= 128 and len(large.blocks) >= 6
    assert sizes["small"].graph_spec == {"cutoff": 5.0}
    rebuilt = build_backbone(sizes["small"].config)  # the stored config rebuilds the same model
    assert rebuilt.load_state_dict(sizes["small"].state_dict()) is not None
    assert rebuilt.num_parameters() == sizes["small"].num_parameters()
    assert build_backbone({"name": "equiformer", "cutoff": 4.0}).graph_spec == {"cutoff": 4.0}
    assert (
        str(build_backbone({"name": "equiformer", "size": "tiny", "lmax": 2}).irreps)
        == "16x0e+8x1o+4x2e"
    )
    with pytest.raises(ConfigError):
        build_backbone({"name": "equiformer", "size": "huge"})
    with pytest.raises(ConfigError):
        build_backbone({"name": "equiformer", "bogus": 1})


def test_tensor_product_matches_e3nn():
    torch.manual_seed(0)
    muls = [3, 2, 2]
    tp = DepthwiseTP(muls, lmax_sh=2, lmax_out=2, num_basis=4, radial_hidden=8).double()
    irreps_in = o3.Irreps("3x0e+2x1o+2x2e")
    ref = o3.TensorProduct(
        irreps_in,
        o3.Irreps.spherical_harmonics(2),
        tp.irreps_out_e3nn,
        tp.instructions,
        shared_weights=False,
        internal_weights=False,
    ).double()
    E = 7
    x = torch.randn(E, irreps_in.dim, dtype=torch.float64)
    sh = o3.spherical_harmonics(
        [0, 1, 2], torch.randn(E, 3, dtype=torch.float64), normalize=True, normalization="component"
    )
    rbf = torch.randn(E, 4, dtype=torch.float64)
    ours = to_e3nn(tp(from_e3nn(x, muls), sh, rbf))
    expected = ref(x, sh, tp.radial(rbf))
    assert ours.shape == expected.shape
    # e3nn keeps its own coefficients in float32, hence the tolerance
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-6)
    assert (ours - expected).abs().max() < 1e-6 * expected.abs().max()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exact_symmetry(dtype):
    model = _model()
    assert_backbone_equivariant(model, _crystal(), checks=ALL_CHECKS, dtype=dtype, n_trials=2)
    # outputs are not trivially symmetric: they vary across atoms and vectors are non-zero
    out, _ = _run(model, [_crystal()], dtype)
    assert out.node.std(dim=0).mean() > 1e-2
    assert out.vector.norm(dim=-1).mean() > 1e-2


def test_symmetry_other_options():
    model = _model(radial="bessel", pool="sum", nonlinear_messages=False, lmax=2)
    assert_backbone_equivariant(model, _crystal(), dtype=torch.float64, n_trials=1, seed=7)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exact_symmetry_tensor_product_messages(dtype):
    """The Clebsch-Gordan (``conv="dtp"``) message path is kept, and exactly equivariant too."""
    model = _model(conv="dtp")
    assert_backbone_equivariant(
        model, _crystal(), checks=ALL_CHECKS, dtype=dtype, n_trials=1, seed=2
    )


def test_symmetry_default_size_float64():
    torch.manual_seed(1)
    model = build_backbone("equiformer")
    assert_backbone_equivariant(model, _crystal(), dtype=torch.float64, n_trials=1, seed=3)


def test_vectors_rotate_like_positions():
    """Hand-applied proper and improper rotations: v -> R v in Cartesian (x, y, z)."""
    model = _model()
    s = _crystal()
    ref, _ = _run(model, [s])
    rng = np.random.default_rng(5)
    for improper in (False, True):
        R = random_rotation(rng, improper)
        rotated = s.copy(positions=s.positions @ R.T, cell=s.cell @ R.T)
        out, _ = _run(model, [rotated])
        Rt = torch.as_tensor(R)
        torch.testing.assert_close(out.vector, ref.vector @ Rt.T, atol=1e-9, rtol=1e-7)
        torch.testing.assert_close(out.node, ref.node, atol=1e-9, rtol=1e-7)
    # and a vector output is not an invariant in disguise
    assert not torch.allclose(out.vector, ref.vector, atol=1e-3)


def test_vector_output_points_along_the_only_bond():
    """For an isolated dimer every l=1 output is parallel to the bond (x, y, z order check)."""
    model = _model()
    bond = np.array([0.3, -1.1, 2.0])
    s = Structure(
        np.array([8, 8]), np.array([np.zeros(3), bond]), np.eye(3) * 20.0, np.zeros(3, bool)
    )
    out, _ = _run(model, [s])
    v = out.vector.detach().numpy().reshape(-1, 3)
    u = bond / np.linalg.norm(bond)
    perp = v - (v @ u)[:, None] * u
    assert np.abs(perp).max() < 1e-9 * max(1.0, np.abs(v).max())
    assert np.abs(v @ u).max() > 1e-3


@pytest.mark.parametrize("alone", [False, True])
def test_continuous_at_cutoff(alone):
    """Moving atom 3 across the cutoff of atom 0 (its only neighbour within reach) changes
    every output by a tiny amount, also when that bond is atom 3's only one."""
    model = _model(cutoff=4.0)
    u = np.array([0.6, -0.48, 0.64])
    perp = np.array([0.8, 0.36, -0.48])
    others = [-1.9 * u + 0.3 * perp, -0.5 * u + 2.0 * perp]  # > 4.4 A from atom 3

    def with_atom3(d):
        pos = np.vstack([np.zeros(3), others[0], others[1], d * u])
        if not alone:  # atom 3 has a second neighbour (atom 4, > 4.5 A from atoms 0-2), moved along
            pos = np.vstack([pos, d * u + 2.5 * np.array([0.0, 0.8, 0.6])])
        return Structure(
            np.array([14, 8, 8, 11, 1][: len(pos)]), pos, np.eye(3) * 30.0, np.zeros(3, bool)
        )

    inside, b_in = _run(model, [with_atom3(4.0 - 1e-4)])
    outside, b_out = _run(model, [with_atom3(4.0 + 1e-4)])
    near, _ = _run(model, [with_atom3(3.0)])
    assert b_in.edge_index.shape[1] == b_out.edge_index.shape[1] + 2  # the graph really changed
    for name in ("node", "graph", "vector"):
        a, b, c = getattr(inside, name), getattr(outside, name), getattr(near, name)
        assert (a - b).abs().max() < 1e-8, name  # envelope ~ (1e-4 / 4)^3 at the crossing
        assert (c - b).abs().max() > 1e-3, name  # while the neighbour does matter inside


def test_batching_matches_single_structures():
    model = _model()
    structures = load_matbench_dielectric(limit=3)
    batched, _ = _run(model, structures)
    start = 0
    for i, s in enumerate(structures):
        single, _ = _run(model, [s])
        torch.testing.assert_close(batched.graph[i], single.graph[0], atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(
            batched.node[start : start + s.n_atoms], single.node, atol=1e-10, rtol=1e-8
        )
        torch.testing.assert_close(
            batched.vector[start : start + s.n_atoms], single.vector, atol=1e-10, rtol=1e-8
        )
        start += s.n_atoms


def test_z_soft_one_hot_equals_z_and_is_differentiable():
    model = _model()
    _, batch = _run(model, [_crystal()])
    ref = model(batch)
    z_soft = torch.nn.functional.one_hot(batch.z, 119).double().requires_grad_(True)
    batch.z_soft = z_soft
    out = model(batch)
    for name in ("node", "graph", "vector"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), atol=1e-12, rtol=1e-10)
    out.graph.sum().backward()
    assert z_soft.grad is not None and z_soft.grad.abs().sum() > 0
    # a different species distribution changes the output
    batch.z_soft = torch.full_like(z_soft, 1.0 / 119)
    assert (model(batch).graph - ref.graph).abs().max() > 1e-4


def test_position_gradients_finite():
    model = _model()
    model.float().train()
    structures = load_matbench_dielectric(limit=4)
    batch = collate([to_graph(s, **model.graph_spec) for s in structures])
    batch.pos.requires_grad_(True)
    out = model(batch)
    (out.graph.pow(2).sum() + out.vector.pow(2).sum()).backward()
    g = batch.pos.grad
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # the forces of an invariant energy sum to zero per structure (translation invariance)
    energy_grad = torch.autograd.grad(model(batch).node.sum(), batch.pos)[0]
    per_structure = torch.zeros(len(structures), 3).index_add_(0, batch.batch, energy_grad)
    assert per_structure.abs().max() < 1e-3 * max(1.0, energy_grad.abs().max())


def test_overfits_volume_per_atom():
    """A tiny model fits volume per atom of 64 real crystals to a few % of the label spread
    (reaches ~1% in 80 full-batch steps, ~8 s of one core)."""
    torch.manual_seed(0)
    structures = load_matbench_dielectric(limit=64)
    y = torch.tensor([s.volume / s.n_atoms for s in structures], dtype=torch.float32)
    mean, mad = y.mean(), (y - y.mean()).abs().mean()
    model = build_backbone({"name": "equiformer", "size": "tiny", "cutoff": 3.5, "num_layers": 1})
    head = torch.nn.Linear(model.embedding_dim, 1)
    batch = collate([to_graph(s, **model.graph_spec) for s in structures])
    steps = 80
    opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps)
    for _ in range(steps):
        opt.zero_grad()
        pred = head(model(batch).graph).squeeze(-1)
        torch.nn.functional.mse_loss(pred, (y - mean) / mad).backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        mae = ((head(model(batch).graph).squeeze(-1) * mad + mean) - y).abs().mean()
    assert mae < 0.05 * mad, f"train MAE {mae:.3f} vs label MAD {mad:.3f}"


def test_linear_on_pieces_equals_linear_on_concatenation():
    """The tensor-product outputs are fed to the next linear layer piece by piece (no concat)."""
    torch.manual_seed(0)
    tp = DepthwiseTP([5, 3, 2], lmax_sh=2, lmax_out=2, num_basis=4, radial_hidden=8).double()
    from atomssl.representation._e3nn_layers import Linear

    lin = Linear(tp.muls_out, [6, 4, 3]).double()
    E = 9
    xs = [torch.randn(E, 2 * l + 1, m, dtype=torch.float64) for l, m in enumerate([5, 3, 2])]
    sh = o3.spherical_harmonics(
        [0, 1, 2], torch.randn(E, 3, dtype=torch.float64), normalize=True, normalization="component"
    )
    rbf = torch.randn(E, 4, dtype=torch.float64)
    pieces = tp.pieces(xs, sh, rbf)
    assert [sum(p.shape[-1] for p in ps) for ps in pieces] == tp.muls_out
    for a, b in zip(lin.forward_pieces(pieces), lin(tp(xs, sh, rbf))):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_small_default_uses_linear_messages():
    model = build_backbone("equiformer")
    assert model.config["nonlinear_messages"] is False and all(
        b.attn.so2_2 is None for b in model.blocks
    )
    assert (
        build_backbone({"name": "equiformer", "nonlinear_messages": True}).blocks[0].attn.so2_2
        is not None
    )
    dtp = build_backbone({"name": "equiformer", "conv": "dtp"})
    assert all(b.attn.tp2 is None for b in dtp.blocks)
    assert (
        build_backbone({"name": "equiformer", "conv": "dtp", "nonlinear_messages": True})
        .blocks[0]
        .attn.tp2
        is not None
    )
    assert (
        build_backbone({"name": "equiformer", "size": "large"}).config["nonlinear_messages"] is True
    )


# --- edge-aligned frames and SO(2) messages ------------------------------------------------------


def _unit_vectors(n=50, seed=0):
    """Random unit vectors plus the hard cases: exactly along, against and across the polar axis."""
    from atomssl.representation._so2_layers import polar_axis

    axis = polar_axis()
    u = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    near = axis + 1e-9 * torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    u = torch.cat([u, axis[None], -axis[None], near[None], -near[None], torch.roll(axis, 1)[None]])
    return u / u.norm(dim=-1, keepdim=True), axis


def test_edge_frames_are_rotations_taking_the_axis_to_the_edge():
    from atomssl.representation._so2_layers import edge_frames

    u, axis = _unit_vectors()
    R = edge_frames(u, axis)
    eye = torch.eye(3, dtype=torch.float64).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(1, 2), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(
        torch.linalg.det(R), torch.ones(len(u), dtype=torch.float64), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(R @ axis, u, atol=1e-12, rtol=0)
    # finite gradients everywhere, including edges along and against the axis
    u = u.clone().requires_grad_(True)
    edge_frames(u, axis).pow(3).sum().backward()
    assert torch.isfinite(u.grad).all()


def test_wigner_matrices_match_e3nn():
    from atomssl.representation._so2_layers import WignerFromRotation, edge_frames

    u, axis = _unit_vectors(20, seed=1)
    R = edge_frames(u, axis)
    ds = WignerFromRotation(4)(R)
    irreps = o3.Irreps("0e+1o+2e+3o+4e")
    # e3nn goes through Euler angles (inaccurate near the axis) and keeps its coefficients in
    # float32 (~4e-7 off): compared on the random edges at that accuracy; the exact checks follow
    n_random = 20
    for l in range(5):
        ref = o3.Irrep(l, (-1) ** l).D_from_matrix(R[:n_random])
        torch.testing.assert_close(ds[l][:n_random], ref, atol=2e-6, rtol=0)
    # a representation on every edge, the hard ones too: D(R1 R2) = D(R1) D(R2), D orthogonal
    perm = torch.randperm(len(u), generator=torch.Generator().manual_seed(0))
    ds12 = WignerFromRotation(4)(R @ R[perm])
    for l in range(5):
        torch.testing.assert_close(ds12[l], ds[l] @ ds[l][perm], atol=1e-10, rtol=0)
        eye = torch.eye(2 * l + 1, dtype=torch.float64).expand_as(ds[l])
        torch.testing.assert_close(ds[l] @ ds[l].transpose(1, 2), eye, atol=1e-10, rtol=0)
    # and they rotate spherical harmonics: Y(R a) = D(R) Y(a), so Y(edge) = D Y(axis)
    sh = o3.spherical_harmonics(irreps, u, normalize=True)
    sh_axis = o3.spherical_harmonics(irreps, axis[None], normalize=True)[0]
    start = 0
    for l in range(5):
        d = 2 * l + 1
        torch.testing.assert_close(
            sh[:, start : start + d], ds[l] @ sh_axis[start : start + d], atol=1e-9, rtol=0
        )
        # and Y(axis) is non-zero only at m = 0 (the middle component)
        assert (
            torch.count_nonzero(sh_axis[start : start + d].abs() > 1e-12) == 1
            and sh_axis[start + l].abs() > 0
        )
        start += d


def _rolls_about(axis, angle):
    """Rotations (E, 3, 3) by ``angle`` (E,) about ``axis`` (Rodrigues)."""
    K = torch.zeros(3, 3, dtype=angle.dtype)
    K[0, 1], K[0, 2], K[1, 2] = -axis[2], axis[1], -axis[0]
    K = K - K.T
    return (
        torch.eye(3, dtype=angle.dtype)
        + torch.sin(angle)[:, None, None] * K
        + (1 - torch.cos(angle))[:, None, None] * (K @ K)
    )


def test_so2_linear_commutes_with_rolls_about_the_axis():
    """The SO(2) map is equivariant under rotations about the polar axis and mirror planes
    through it: this is what makes the result independent of each frame's roll."""
    from atomssl.representation._so2_layers import (
        SO2Linear,
        WignerFromRotation,
        polar_axis,
        rotate,
    )

    torch.manual_seed(0)
    muls_in, muls_out = [4, 3, 2], [5, 2, 3]
    lin = SO2Linear(muls_in, muls_out, num_basis=6, radial_hidden=8).double()
    E = 11
    xs = [torch.randn(E, 2 * l + 1, m, dtype=torch.float64) for l, m in enumerate(muls_in)]
    rbf = torch.randn(E, 6, dtype=torch.float64)
    axis = polar_axis()
    roll = _rolls_about(axis, torch.rand(E, dtype=torch.float64) * 2 * math.pi)
    mirror = torch.eye(3, dtype=torch.float64) - 2 * torch.outer(
        torch.roll(axis, 1), torch.roll(axis, 1)
    )
    wig = WignerFromRotation(2)
    for g in (roll, roll @ mirror):
        # improper g = (-1) (-g): inversion acts as (-1)^l on the polar degrees l, -g is a rotation
        sign = 1.0 if torch.linalg.det(g)[0] > 0 else -1.0
        ds = [d * sign**l for l, d in enumerate(wig(sign * g))]
        out_then = rotate(lin(xs, rbf), ds)
        then_out = lin(rotate(xs, ds), rbf)
        for a, b in zip(out_then, then_out):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_so2_messages_do_not_depend_on_the_frame_roll(monkeypatch):
    """Rolling every edge frame by a random angle about its edge leaves all outputs unchanged."""
    import atomssl.representation.equiformer as eq
    from atomssl.representation._so2_layers import edge_frames

    model = _model(nonlinear_messages=True)
    ref, batch = _run(model, [_crystal()])
    gen = torch.Generator().manual_seed(3)

    def rolled(unit, axis):
        R = edge_frames(unit, axis)
        angle = torch.rand(unit.shape[0], generator=gen, dtype=unit.dtype) * 2 * math.pi
        return R @ _rolls_about(axis.to(unit.dtype), angle)  # still takes the axis to the edge

    monkeypatch.setattr(eq, "edge_frames", rolled)
    out = model(batch)
    for name in ("node", "graph", "vector"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), atol=1e-10, rtol=1e-8)


def test_old_checkpoints_without_conv_load_as_tensor_product(tmp_path):
    from atomssl.train import load_backbone
    from atomssl.train._checkpoint import FORMAT, VERSION

    model = _model(conv="dtp")
    config = {
        k: v for k, v in model.config.items() if k != "conv"
    }  # written before the option existed
    path = tmp_path / "old.pt"
    torch.save(
        {
            "format": FORMAT,
            "version": VERSION,
            "backbone_config": config,
            "backbone": model.state_dict(),
        },
        path,
    )
    loaded = load_backbone(path)
    assert loaded.config["conv"] == "dtp"
    ref, batch = _run(model, [_crystal()])
    torch.testing.assert_close(loaded.double()(batch).graph, ref.graph)
