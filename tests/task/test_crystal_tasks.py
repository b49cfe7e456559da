"""Crystal pretext tasks: corruptions, heads, baselines, symmetry, and learning below baseline."""

import functools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
import toy_backbone  # noqa: E402,F401  (registers the "toy" backbone)

from atomssl.data import Structure  # noqa: E402
from atomssl.errors import ConfigError  # noqa: E402
from atomssl.graph import collate, edge_vectors, to_graph  # noqa: E402
from atomssl.representation import BACKBONES, build_backbone  # noqa: E402
from atomssl.task import build_task  # noqa: E402
from atomssl.task.denoise import NoiseHead, center_per_graph, min_distances, perturb_positions  # noqa: E402
from atomssl.task.mask import choose_masked_atoms, mask_species  # noqa: E402
from atomssl.testing import random_rotation  # noqa: E402
from atomssl.train import synthetic_crystals  # noqa: E402

CRYSTAL_TASKS = ["denoise", "edge_denoise", "mask", "mask_denoise"]


def _batch(cutoff=4.0):
    a = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    a.rattle(0.05, seed=1)
    b = bulk("GaAs", "zincblende", a=5.65)
    b.rattle(0.05, seed=2)
    c = bulk("Cu", "fcc", a=3.61, cubic=True)
    return collate([to_graph(s, cutoff=cutoff) for s in (a, b, c)]), (a, b, c)


def test_min_distances_match_pymatgen():
    batch, atoms = _batch()
    got = min_distances(batch).numpy()
    for g, a in zip(got, atoms):
        pmg = Structure.from_ase(a).to_pymatgen()
        expected = min(
            n.nn_distance for site in pmg.get_all_neighbors(6.0) for n in site
        )  # periodic images too
        assert g == pytest.approx(expected, rel=1e-5)


def test_perturb_positions_relative_sigma_and_copy():
    batch, _ = _batch()
    pos0, z0 = batch.pos.clone(), batch.z.clone()
    g = torch.Generator().manual_seed(0)
    sigmas = []
    for _ in range(200):
        noisy, noise, sig = perturb_positions(batch, 0.1, "relative", g)
        sigmas.append(noise / sig[:, None])
    assert torch.equal(batch.pos, pos0) and torch.equal(batch.z, z0)  # the input batch is untouched
    assert torch.equal(noisy.edge_index, batch.edge_index) and torch.equal(noisy.shift, batch.shift)
    assert torch.allclose(noisy.pos - batch.pos, noise)
    dmin = min_distances(batch)
    assert torch.allclose(sig, 0.1 * dmin[batch.batch])
    unit = torch.cat(sigmas)
    assert abs(float(unit.std()) - 1.0) < 0.03 and abs(float(unit.mean())) < 0.03
    _, noise_abs, sig_abs = perturb_positions(batch, 0.2, "absolute", g)
    assert torch.all(sig_abs == 0.2)


def test_masking_rules():
    batch, _ = _batch()
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # p_species=1: every atom of exactly one species present, per structure
        mask = choose_masked_atoms(batch, p_species=1.0, generator=g)
        for k in range(batch.num_graphs):
            sel = batch.batch == k
            masked_species = set(batch.z[sel & mask].tolist())
            assert len(masked_species) == 1
            (sp,) = masked_species
            assert bool(torch.all(mask[sel & (batch.z == sp)]))
    mask = choose_masked_atoms(batch, p_species=0.0, fraction=0.15, generator=g)
    for k in range(batch.num_graphs):
        n = int((batch.batch == k).sum())
        assert int(mask[batch.batch == k].sum()) == max(1, round(0.15 * n))
    masked = mask_species(batch, mask)
    assert torch.all(masked.z[mask] == 0) and torch.equal(masked.z[~mask], batch.z[~mask])
    assert not torch.all(batch.z[mask] == 0)  # original untouched
    soft = torch.nn.functional.one_hot(batch.z, 119).float()
    batch.z_soft = soft
    ms = mask_species(batch, mask)
    assert torch.all(ms.z_soft[mask, 0] == 1) and torch.equal(ms.z_soft[~mask], soft[~mask])


def test_noise_head_is_equivariant_and_centering():
    torch.manual_seed(0)
    head = NoiseHead(8, 5)
    torch.nn.init.normal_(head.gate[-1].weight)
    node, vec = torch.randn(7, 8), torch.randn(7, 5, 3)
    R = torch.tensor(random_rotation(np.random.default_rng(0), improper=True), dtype=torch.float32)
    assert torch.allclose(head(node, vec @ R.T), head(node, vec) @ R.T, atol=1e-5)
    batch, _ = _batch()
    x = torch.randn(batch.pos.shape[0], 3)
    c = center_per_graph(x, batch)
    for k in range(batch.num_graphs):
        assert torch.allclose(c[batch.batch == k].mean(0), torch.zeros(3), atol=1e-6)


def test_edge_denoise_targets_and_copy_baseline():
    bb = build_backbone({"name": "toy"})
    task = build_task({"name": "edge_denoise", "sigma": 1e-6, "sigma_mode": "absolute"}, bb)
    batch, _ = _batch()
    res = task.step(batch, bb, torch.Generator().manual_seed(0))
    assert float(res["baseline_copy"]) < 1e-8  # vanishing noise: copying the input is exact
    d = edge_vectors(batch).norm(dim=-1)
    e = task.expand(d)
    k = int(torch.argmax(e[0]))
    assert (
        abs(float(task.expand.centers[k]) - float(d[0])) <= float(task.expand.centers[1]) / 2 + 1e-6
    )
    assert task.config["r_max"] == 5.0  # default: backbone cutoff + 1, as MEGNet's edge basis


def test_missing_outputs_are_config_errors():
    class NoVectors(toy_backbone.ToyBackbone):
        provides_vectors = False
        provides_edges = False

    bb = NoVectors()
    for name in ("denoise", "edge_denoise", "mask_denoise"):
        with pytest.raises(ConfigError, match="needs backbone outputs"):
            build_task(name, bb)
    with pytest.raises(ConfigError, match="sigma_mode"):
        build_task({"name": "denoise", "sigma_mode": "fractional"}, build_backbone("toy"))
    with pytest.raises(ConfigError, match="bad option"):
        build_task({"name": "mask", "nonsense": 1}, bb)


@functools.lru_cache(maxsize=1)
def _graphs():
    return tuple(to_graph(s, cutoff=4.0) for s in synthetic_crystals(256, seed=1))


def _train(task_name, steps=100, lr=5e-3, seed=0):
    torch.manual_seed(seed)
    graphs = _graphs()
    train, val = graphs[:200], graphs[200:]
    bb = build_backbone({"name": "toy"})
    task = build_task({"name": task_name}, bb)
    params = list(bb.parameters()) + list(task.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        idx = torch.randperm(len(train), generator=g)[:16]
        res = task.step(
            collate([train[i] for i in idx]), bb, generator=torch.Generator().manual_seed(step)
        )
        opt.zero_grad()
        res["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    bb.eval(), task.eval()
    vb = collate(val)
    with torch.no_grad():
        runs = [
            task.step(vb, bb, generator=torch.Generator().manual_seed(10_000 + k)) for k in range(3)
        ]
    return {k: float(np.mean([float(r[k]) for r in runs])) for k in runs[0]}


@pytest.mark.parametrize("name", CRYSTAL_TASKS)
def test_task_learns_below_baseline_on_held_out_structures(name):
    res = _train(name)
    assert res["loss"] < 0.75 * res["baseline"], res
    if name == "mask":
        assert res["accuracy"] > res["baseline_accuracy"] + 0.2


def _tiny(name):
    return {
        "megnet": {
            "name": "megnet",
            "n_blocks": 1,
            "dense": [16, 16],
            "conv": [16, 16, 16],
            "n_gaussians": 20,
        },
        "equiformer": {"name": "equiformer", "size": "tiny", "num_layers": 1, "cutoff": 4.0},
        "gaa": {"name": "gaa", "k": 6, "width": 16, "n_blocks": 1, "dropout": 0.0},
    }.get(name, {"name": name})


@pytest.mark.parametrize("backbone", sorted(set(BACKBONES) - {"toy"}))
def test_every_compatible_task_runs_on_real_backbones(backbone):
    bb = build_backbone(_tiny(backbone))
    batch = collate([to_graph(s, **bb.graph_spec) for s in synthetic_crystals(4, seed=3)])
    ran = []
    for name in CRYSTAL_TASKS:
        try:
            task = build_task(name, bb)
        except ConfigError:
            continue
        res = task.step(batch, bb, torch.Generator().manual_seed(0))
        assert torch.isfinite(res["loss"]) and torch.isfinite(res["baseline"])
        bb.zero_grad()
        res["loss"].backward()
        grads = [p.grad for p in bb.parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads), (
            f"{name} sends no gradient into {backbone}"
        )
        ran.append(name)
    assert "mask" in ran
