"""Per-particle order pipeline: clouds, embeddings, Steinhardt baseline, trajectory analysis, CLI."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from atomssl.data import Structure, idealized_crystal
from atomssl.graph import edge_vectors
from atomssl.order import analyse_trajectory, cloud_batch, embed_clouds, frame_clouds, onset, solid_fraction, steinhardt_features
from atomssl.representation import build_backbone

TINY = {"name": "gaa", "k": 12, "width": 8, "n_blocks": 1, "rank": 2, "hidden_factor": 1.0, "species_dim": 4,
        "dropout": 0.0, "normalize": None, "chiral": False}


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return build_backbone(TINY).eval()


def test_cloud_batch_edges_are_the_clouds_and_frames_are_min_distance_normalised():
    s = idealized_crystal("cI2-W", n_min=128, sigma=0.02, seed=1)
    s = Structure(s.numbers, s.positions * 3.7, s.cell * 3.7, True)
    c = frame_clouds(s)
    assert c.shape == (s.n_atoms, 12, 3)
    assert np.linalg.norm(c, axis=-1).min() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(edge_vectors(cloud_batch(c)).numpy(), c.reshape(-1, 3), atol=1e-6)


def test_embeddings_invariant_to_rotation_and_equivariant_to_particle_order_and_chunking(backbone):
    c = frame_clouds(idealized_crystal("hP2-Mg", n_min=64, sigma=0.05, seed=2))
    e = embed_clouds(backbone, c, chunk=1000)
    R = Rotation.random(random_state=0).as_matrix().astype(np.float32)
    np.testing.assert_allclose(embed_clouds(backbone, c @ R.T), e, atol=2e-4)
    perm = np.random.default_rng(0).permutation(len(c))
    np.testing.assert_allclose(embed_clouds(backbone, c[perm], chunk=7), e[perm], atol=2e-5)
    # neighbour order inside a cloud does not matter either
    np.testing.assert_allclose(embed_clouds(backbone, c[:, ::-1].copy()), e, atol=2e-4)


def test_steinhardt_matches_known_values_for_perfect_fcc_and_solid_fraction():
    fcc = idealized_crystal("cF4-Cu", n_min=256, sigma=0.0)
    f = steinhardt_features(fcc)
    np.testing.assert_allclose(f[:, 0], 0.19094, atol=1e-4)  # q4 of fcc, 12 neighbours
    np.testing.assert_allclose(f[:, 1], 0.57452, atol=1e-4)  # q6
    np.testing.assert_allclose(f[:, 2], -0.013161, atol=1e-4)  # normalised w6
    np.testing.assert_allclose(f[:, 4], 0.57452, atol=1e-4)  # averaged q6 of a perfect crystal
    assert solid_fraction(fcc) == 1.0
    rng = np.random.default_rng(0)
    gas = Structure(np.ones(300, int), rng.uniform(0, 7, (300, 3)), np.eye(3) * 7, True)
    assert solid_fraction(gas) < 0.05


def test_onset_finds_the_step_and_none_without_one():
    sig = np.r_[np.full(20, 0.01), np.linspace(0.05, 0.9, 10)] + np.random.default_rng(0).normal(0, 1e-3, 30)
    assert onset(sig) == 20
    assert onset(np.full(30, 0.01)) is None


def test_analyse_a_lammps_dump_written_by_lammps(tmp_path, backbone):
    """A trajectory atomssl did not write: a LAMMPS text dump, disordered frames then an fcc crystal."""
    from ase.io import write

    fcc = idealized_crystal("cF4-Cu", n_min=256, sigma=0.02, seed=3)
    # a strongly disordered frame (Lindemann ratio ~0.35) stands in for the liquid
    liquid = idealized_crystal("cF4-Cu", n_min=256, sigma=0.2, seed=4)
    frames = [liquid] * 6 + [fcc] * 2
    path = tmp_path / "dump.lammpstrj"
    from atomssl.simulate import open_lammps

    lmp = open_lammps()  # let LAMMPS itself write the dump from a data file
    try:
        data = tmp_path / "frame.data"
        with open(path, "w"):
            pass
        for i, f in enumerate(frames):
            write(data, f.to_ase(), format="lammps-data", atom_style="atomic")
            lmp.command("clear")
            for c in ["units lj", "atom_style atomic", f"read_data {data}", "mass 1 1.0",
                      f"write_dump all custom {tmp_path}/one.dump id type x y z modify sort id"]:
                lmp.command(c)
            with open(path, "a") as out, open(tmp_path / "one.dump") as one:
                out.write(one.read().replace("ITEM: TIMESTEP\n0\n", f"ITEM: TIMESTEP\n{i}\n"))
    finally:
        lmp.close()
    summary = analyse_trajectory(path, backbone, tmp_path / "out", particles=100, per_crystal=32, reference_n_min=256,
                                 format="lammps-dump-text", species={1: "Ar"})
    assert summary["frames"] == 8 and summary["particles_per_frame"] == 100
    z = np.load(tmp_path / "out" / "order.npz")
    assert z["distance"].shape == (8, 100) and z["label"].shape == (8, 100)
    names = list(z["names"])
    crystalline = z["distance"] < z["threshold"]
    assert crystalline[:6].mean() < 0.2 and crystalline[6:].mean() > 0.8
    assert set(np.unique(z["label"])) <= set(range(len(names)))
    assert summary["onset_frame"]["ssl_crystalline_fraction"] == 6
    assert summary["onset_frame"]["steinhardt_solid_fraction"] == 6
    assert (tmp_path / "out" / "order.png").stat().st_size > 0


def test_cli_order_reports_a_missing_checkpoint_cleanly(tmp_path, capsys):
    from ase.io import write

    from atomssl.cli.main import main

    traj = tmp_path / "t.extxyz"
    write(traj, idealized_crystal("cF4-Cu", n_min=32).to_ase())
    assert main(["order", str(traj)]) == 1
    assert "--checkpoint" in capsys.readouterr().err
    assert main(["order", str(traj), "-k", str(tmp_path / "no.ckpt")]) == 1
    assert "no.ckpt" in capsys.readouterr().err
    assert main(["order", str(tmp_path / "missing.extxyz"), "-k", "x"]) == 1
    assert "missing.extxyz" in capsys.readouterr().err


def test_nearest_reference_matches_brute_force():
    from atomssl.order import ReferenceEmbeddings

    rng = np.random.default_rng(0)
    ref = ReferenceEmbeddings(rng.normal(size=(200, 5)).astype(np.float32), rng.integers(0, 6, 200), tuple("abcdef"), 1.0)
    x = rng.normal(size=(50, 5)).astype(np.float32)
    d, lab = ref.nearest(x)
    full = np.linalg.norm(x[:, None] - ref.embeddings[None], axis=-1)
    np.testing.assert_allclose(d, full.min(1), rtol=1e-5)
    np.testing.assert_array_equal(lab, ref.prototype[full.argmin(1)])
