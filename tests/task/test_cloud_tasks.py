"""Per-particle neighbour-cloud pretext tasks: they learn (held-out loss well below the trivial
baseline on idealised crystals), their covariant heads rotate, their helpers are exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase.build import bulk
from scipy.spatial.transform import Rotation

from atomssl.data import Structure
from atomssl.errors import ConfigError
from atomssl.graph import collate, to_graph
from atomssl.representation import Backbone, build_backbone
from atomssl.task import TASKS, build_task
from atomssl.task.cloud import AutoencoderTask, chamfer, kabsch_register
from atomssl.testing import random_rotation

CLOUD_TASKS = ("noisy_bond", "nearest_bond", "cloud_denoise", "shift", "autoencoder", "frame_class")
# nearest-neighbour distances of the two idealised crystals
CRYSTALS = (("Cu", 3.61 / math.sqrt(2)), ("W", 3.16 * math.sqrt(3) / 2))


def frames(seed: int, noise: float = 0.03, copies: int = 3, dtype=torch.float32):
    """``copies`` x (fcc Cu, bcc W) conventional cells, Gaussian noise of ``noise``
    nearest-neighbour distances, as kNN graphs with a per-atom ``frame`` label (0 fcc, 1 bcc)."""
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(copies):
        for label, (element, d) in enumerate(CRYSTALS):
            s = Structure.from_ase(bulk(element, cubic=True))
            s = s.copy(positions=s.positions + rng.normal(size=s.positions.shape) * noise * d)
            g = to_graph(s, k=12, dtype=dtype)
            g.frame = torch.full((s.n_atoms,), label)
            graphs.append(g)
    return collate(graphs)


def backbone(**kw):
    return build_backbone(
        {"name": "gaa", "width": 16, "n_blocks": 2, "dropout": 0.0, "normalize": "min", **kw}
    )


def task_config(name):
    return {"name": name, "n_frames": 2} if name == "frame_class" else {"name": name}


@pytest.fixture(scope="module")
def data():
    return [frames(seed) for seed in range(8)], frames(100, copies=6)


# held-out loss must end below this fraction of the baseline (measured: see the report)
MAX_RATIO = {
    "noisy_bond": 0.8,  # measured 0.65 (accuracy 0.80)
    "nearest_bond": 0.4,  # 0.20
    "cloud_denoise": 0.75,  # 0.55
    "shift": 0.1,  # 0.016
    "autoencoder": 0.4,  # 0.21
    "frame_class": 0.1,  # 0.013
}


@pytest.mark.parametrize("name", CLOUD_TASKS)
def test_task_learns_well_below_baseline(name, data):
    train, held_out = data
    torch.manual_seed(0)
    bb = backbone()
    task = build_task(task_config(name), bb)
    opt = torch.optim.Adam([*bb.parameters(), *task.parameters()], lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    steps = 45 if name == "noisy_bond" else 30
    for step in range(steps):
        opt.zero_grad()
        res = task.step(train[step % len(train)], bb, gen)
        assert {"loss", "baseline"} <= set(res) and res["loss"].requires_grad
        assert not res["baseline"].requires_grad
        res["loss"].backward()
        opt.step()
    bb.eval()
    task.eval()
    with torch.no_grad():
        results = [task.step(held_out, bb, torch.Generator().manual_seed(10 + i)) for i in range(3)]
    loss = np.mean([float(r["loss"]) for r in results])
    baseline = np.mean([float(r["baseline"]) for r in results])
    assert loss < MAX_RATIO[name] * baseline, (name, loss, baseline)
    if name == "noisy_bond":
        assert abs(baseline - math.log(2)) < 1e-6
        assert np.mean([float(r["accuracy"]) for r in results]) > 0.7
    if name == "frame_class":
        assert np.mean([float(r["accuracy"]) for r in results]) == 1.0
    assert not hasattr(held_out, "edge_delta") and not hasattr(held_out, "edge_mask")


def test_all_cloud_tasks_registered_and_baselines_are_exact():
    assert set(CLOUD_TASKS) <= set(TASKS)
    torch.manual_seed(0)
    bb = backbone()
    batch = frames(7)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    # shift: baseline is E|y|^2 per component, ~ sigma^2 = 0.25
    res = build_task("shift", bb).step(batch, bb, gen())
    assert 0.15 < float(res["baseline"]) < 0.35
    # nearest bond in min-distance units: the nearest bond has length ~1, so ~1/3 per component
    res = build_task("nearest_bond", bb).step(batch, bb, gen())
    assert 0.3 < float(res["baseline"]) < 0.45
    # frame class: both classes present -> entropy of the class frequencies (4 fcc, 2 bcc atoms per copy)
    res = build_task({"name": "frame_class", "n_frames": 2}, bb).step(batch, bb, gen())
    p = np.array([4, 2]) / 6
    assert float(res["baseline"]) == pytest.approx(-(p * np.log(p)).sum(), rel=1e-5)
    assert float(res["baseline_accuracy"]) == pytest.approx(2 / 3)
    # denoising baseline: the registered noisy cloud vs the clean one, < sigma^2 (noise mean removed)
    res = build_task("cloud_denoise", bb).step(batch, bb, gen())
    assert 0.1 < float(res["baseline"]) < 0.25


def _rigid_pair(seed=0, improper=False):
    """One noisy crystal and a rotated + translated copy (same edges in the same order)."""
    batch = frames(seed, dtype=torch.float64)
    R = random_rotation(np.random.default_rng(seed + 1), improper=improper)
    Rt = torch.tensor(R.T)
    moved = batch.clone()
    moved.pos = batch.pos @ Rt + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    moved.cell = batch.cell @ Rt
    return batch, moved, Rt


@pytest.mark.parametrize("name", ["shift", "nearest_bond", "cloud_denoise", "autoencoder"])
def test_covariant_heads_rotate_with_the_structure(name):
    torch.manual_seed(1)
    bb = backbone().double().eval()
    task = build_task(name, bb).double().eval()
    batch, moved, Rt = _rigid_pair()
    n, k = batch.pos.shape[0], 12
    vec, unit = task.clean_clouds(batch)
    vec2, unit2 = task.clean_clouds(moved)
    torch.testing.assert_close(vec2, vec @ Rt)
    torch.testing.assert_close(unit2, unit)
    delta = torch.randn(n, k, 3, dtype=torch.float64) * 0.2
    with torch.no_grad():
        if name == "shift":
            delta = delta[:, :1].expand(n, k, 3)
        fields = {"edge_delta": delta.reshape(-1, 3)}
        fields2 = {"edge_delta": (delta @ Rt).reshape(-1, 3)}
        if name == "nearest_bond":
            mask = torch.ones(n, k, dtype=torch.bool)
            mask[:, 0] = False
            fields = fields2 = {"edge_mask": mask.reshape(-1)}
        out = bb(task.corrupted(batch, **fields))
        out2 = bb(task.corrupted(moved, **fields2))
        if name == "cloud_denoise":
            a, b = (
                task.predict(out, vec + delta, unit),
                task.predict(out2, (vec + delta) @ Rt, unit),
            )
        elif name == "autoencoder":
            mu, _ = task.encode(out)
            mu2, _ = task.encode(out2)
            torch.testing.assert_close(mu2, mu)
            a, b = task.decode(out, mu), task.decode(out2, mu2)
        else:
            a, b = task.predict(out, unit), task.predict(out2, unit)
    assert a.abs().max() > 1e-3
    torch.testing.assert_close(b, a @ Rt, atol=1e-9, rtol=1e-7)


def test_kabsch_register_matches_scipy():
    rng = np.random.default_rng(0)
    clean = rng.normal(size=(5, 12, 3))
    noisy = clean + rng.normal(size=clean.shape) * 0.3
    reg = kabsch_register(torch.tensor(noisy), torch.tensor(clean)).numpy()
    for i in range(5):
        rot, _ = Rotation.align_vectors(clean[i], noisy[i])
        np.testing.assert_allclose(reg[i], rot.apply(noisy[i]), atol=1e-10)
    # an exactly rotated cloud is mapped back onto the original, never onto its mirror image
    R = random_rotation(rng)
    back = kabsch_register(torch.tensor(clean @ R.T), torch.tensor(clean)).numpy()
    np.testing.assert_allclose(back, clean, atol=1e-10)
    mirrored = kabsch_register(torch.tensor(-clean), torch.tensor(clean))
    assert torch.linalg.det(torch.linalg.lstsq(torch.tensor(-clean[0]), mirrored[0]).solution) > 0


def test_chamfer_is_permutation_invariant_and_matches_brute_force():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 12, 3)), rng.normal(size=(3, 12, 3))
    got = chamfer(torch.tensor(a), torch.tensor(b)).numpy()
    for i in range(3):
        d = ((a[i][:, None] - b[i][None]) ** 2).sum(-1)
        assert got[i] == pytest.approx(0.5 * (d.min(1).mean() + d.min(0).mean()))
    perm = rng.permutation(12)
    np.testing.assert_allclose(chamfer(torch.tensor(a[:, perm]), torch.tensor(b)).numpy(), got)
    assert float(chamfer(torch.tensor(a), torch.tensor(a[:, perm])).abs().max()) == 0.0


def test_frame_is_orthonormal_and_right_handed():
    a, b = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 3, dtype=torch.float64)
    f = AutoencoderTask.frame(a, b)
    torch.testing.assert_close(
        f @ f.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(20, 3, 3)
    )
    torch.testing.assert_close(torch.linalg.det(f), torch.ones(20, dtype=torch.float64))


class _RadiusBackbone(Backbone):
    provides_vectors = provides_edges = provides_edge_vectors = True

    @property
    def graph_spec(self):
        return {"cutoff": 5.0}


class _KnnNoDeltaBackbone(_RadiusBackbone):
    @property
    def graph_spec(self):
        return {"k": 12}


def test_clear_errors():
    with pytest.raises(ConfigError, match="kNN"):
        build_task("shift", _RadiusBackbone())
    with pytest.raises(ConfigError, match="edge_delta"):
        build_task("noisy_bond", _KnnNoDeltaBackbone())
    bb = backbone()
    with pytest.raises(ConfigError, match="unit"):
        build_task({"name": "shift", "unit": "bohr"}, bb)
    task = build_task({"name": "frame_class", "n_frames": 1}, bb)
    batch = frames(0)
    with pytest.raises(ConfigError, match="n_frames"):
        task.step(batch, bb)
    del batch.frame
    with pytest.raises(ConfigError, match="frame"):
        task.step(batch, bb)
    with pytest.raises(ConfigError, match="k=12"):
        build_task("shift", bb).step(collate([to_graph(Structure.from_ase(bulk("Cu")), k=8)]), bb)
