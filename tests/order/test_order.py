"""Per-particle order pipeline: clouds, embeddings, Steinhardt baseline, trajectory analysis, CLI."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from atomssl.data import Structure, idealized_crystal
from atomssl.graph import edge_vectors
from atomssl.order import (
    analyse_trajectory,
    cloud_batch,
    embed_clouds,
    frame_clouds,
    onset,
    solid_fraction,
    steinhardt_features,
)
from atomssl.representation import build_backbone
from atomssl.testing import tiny_gaa_config

TINY = tiny_gaa_config()


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
    sig = np.r_[np.full(20, 0.01), np.linspace(0.05, 0.9, 10)] + np.random.default_rng(0).normal(
        0, 1e-3, 30
    )
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
            for c in [
                "units lj",
                "atom_style atomic",
                f"read_data {data}",
                "mass 1 1.0",
                f"write_dump all custom {tmp_path}/one.dump id type x y z modify sort id",
            ]:
                lmp.command(c)
            with open(path, "a") as out, open(tmp_path / "one.dump") as one:
                out.write(one.read().replace("ITEM: TIMESTEP\n0\n", f"ITEM: TIMESTEP\n{i}\n"))
    finally:
        lmp.close()
    summary = analyse_trajectory(
        path,
        backbone,
        tmp_path / "out",
        particles=100,
        per_crystal=32,
        reference_n_min=256,
        format="lammps-dump-text",
        species={1: "Ar"},
    )
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
    # liquid-calibrated threshold: 1 % of the first 5 (liquid) frames' particles lie below it by construction
    liq = analyse_trajectory(
        path,
        backbone,
        tmp_path / "liq",
        particles=100,
        per_crystal=32,
        reference_n_min=256,
        threshold="liquid",
        liquid_frames=5,
        format="lammps-dump-text",
        species={1: "Ar"},
    )
    zl = np.load(tmp_path / "liq" / "order.npz")
    np.testing.assert_allclose(
        zl["distance"], z["distance"], rtol=1e-5
    )  # same embeddings, other threshold
    assert zl["threshold"] == pytest.approx(np.quantile(z["distance"][:5], 0.01), rel=1e-5)
    assert (zl["distance"][:5] < zl["threshold"]).mean() <= 0.011
    assert liq["threshold_mode"] == "liquid" and liq["onset_frame"]["ssl_crystalline_fraction"] == 6


def test_cli_order_reports_a_missing_checkpoint_cleanly(tmp_path, capsys):
    from ase.io import write

    from atomssl.cli.main import main

    traj = tmp_path / "t.extxyz"
    write(traj, idealized_crystal("cF4-Cu", n_min=32).to_ase())
    assert main(["order", str(traj), "-k", str(tmp_path / "no.ckpt")]) == 1
    assert "no.ckpt" in capsys.readouterr().err
    assert main(["order", str(tmp_path / "missing.extxyz"), "-k", "x"]) == 1
    assert "missing.extxyz" in capsys.readouterr().err


def test_cli_order_transfer_refuses_an_unusable_device(capsys):
    from atomssl.cli.main import main

    assert main(["order", "transfer", "-k", "x.ckpt", "--device", "nonsense"]) == 1
    assert "--device 'nonsense'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["order", "transfer", "-k", "x.ckpt", "--device", "cuda"]) == 1
        assert "no CUDA device" in capsys.readouterr().err


def test_nearest_reference_matches_brute_force():
    from atomssl.order import ReferenceEmbeddings

    rng = np.random.default_rng(0)
    ref = ReferenceEmbeddings(
        rng.normal(size=(200, 5)).astype(np.float32), rng.integers(0, 6, 200), tuple("abcdef"), 1.0
    )
    x = rng.normal(size=(50, 5)).astype(np.float32)
    d, lab = ref.nearest(x)
    full = np.linalg.norm(x[:, None] - ref.embeddings[None], axis=-1)
    np.testing.assert_allclose(d, full.min(1), rtol=1e-5)
    np.testing.assert_array_equal(lab, ref.prototype[full.argmin(1)])


def test_block_features_extend_the_embedding_and_stay_invariant(backbone):
    two = build_backbone({**TINY, "n_blocks": 2}).eval()
    c = frame_clouds(idealized_crystal("cI2-W", n_min=64, sigma=0.05, seed=5))
    e = embed_clouds(two, c)
    f = embed_clouds(two, c, blocks=True, chunk=50)
    assert f.shape == (len(c), 8 * 3)
    np.testing.assert_allclose(f[:, :8], e, atol=1e-5)
    R = Rotation.random(random_state=1).as_matrix().astype(np.float32)
    np.testing.assert_allclose(embed_clouds(two, c @ R.T, blocks=True), f, atol=2e-4)
    assert not two.blocks[0]._forward_hooks  # hooks removed


def test_liquid_classification_rows_for_every_feature_set_and_classifier(tmp_path, backbone):
    from ase.io import write

    from atomssl.order import liquid_classification

    paths = []
    for name in ("cF4-Cu", "cI2-W"):  # two noisy crystals with different local order
        frames = [idealized_crystal(name, n_min=200, sigma=0.03, seed=i).to_ase() for i in range(4)]
        paths.append(tmp_path / f"{name}.extxyz")
        write(paths[-1], frames)
    rows = liquid_classification(
        paths,
        backbone,
        tmp_path / "a",
        names=["fcc", "bcc"],
        max_frames=4,
        particles=100,
        margin=0,
        classifiers=("logistic", "boosting"),
    )
    assert {(r["features"], r["classifier"]) for r in rows} == {
        (f, c)
        for f in (
            "ssl_embedding",
            "ssl_blocks",
            "ssl_averaged",
            "steinhardt_plain",
            "steinhardt_averaged",
            "steinhardt_all",
            "radial_distances",
            "radial_averaged",
        )
        for c in ("logistic", "boosting")
    }
    by = {(r["features"], r["classifier"]): r for r in rows}
    assert (
        by[("ssl_blocks", "logistic")]["n_features"] == 16
        and by[("ssl_embedding", "logistic")]["n_features"] == 8
    )
    assert (
        by[("radial_distances", "logistic")]["n_features"] == 12
        and by[("ssl_averaged", "logistic")]["n_features"] == 8
    )
    assert by[("radial_averaged", "logistic")]["n_features"] == 12
    assert all(
        r["train_particles"] == 400 and r["test_particles"] == 400 for r in rows
    )  # frames 0,2 vs 1,3
    assert (
        by[("ssl_embedding", "logistic")]["roc_auc"] > 0.9
        and by[("steinhardt_all", "logistic")]["roc_auc"] > 0.9
    )
    assert (tmp_path / "a" / "liquid_auc.md").read_text().count("fcc vs bcc") == len(rows)


def test_transfer_on_held_out_prototypes_leaves_the_pretrained_backbone_alone(tmp_path, backbone):
    from atomssl.data import PRETRAINING_PROTOTYPES
    from atomssl.order import HELD_OUT_PROTOTYPES, transfer

    assert not set(HELD_OUT_PROTOTYPES) & set(PRETRAINING_PROTOTYPES)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    rows = transfer(
        backbone,
        tmp_path,
        fraction=0.1,
        seeds=(0,),
        n_test=200,
        head_steps=30,
        full_steps=3,
        lr_head=1e-2,
        n_min=48,
        split="held_out",
    )
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    modes = {r["mode"] for r in rows}
    assert modes == {"frozen_pretrained", "scratch", "finetune_all"}
    assert all(
        r["split"] == "held_out" and r["n_classes"] == 18 and 0 <= r["accuracy"] <= 1 for r in rows
    )
    assert [r["seed"] for r in rows] == [0, 0, 0, "mean", "mean", "mean", "std", "std", "std"]
    frozen = next(r for r in rows if r["mode"] == "frozen_pretrained" and r["seed"] == 0)
    assert (
        frozen["accuracy"] > 2 / 18
    )  # above chance (1/18) even with random frozen weights (deterministic seeds)
    assert (tmp_path / "transfer_held_out.md").exists() and not (tmp_path / "transfer.md").exists()


def test_transfer_many_labels_trains_on_minibatches_disjoint_from_the_test_set(tmp_path, backbone):
    from atomssl.order import reference_clouds, transfer

    refs = reference_clouds(("cF4-Cu", "cI2-W"), n_min=48, seed=1)
    n = len(refs.clouds)
    rows = transfer(
        backbone,
        tmp_path,
        fraction=0.05,
        seeds=(0,),
        n_test=100,
        head_steps=4,
        full_steps=2,
        many_labels=0.5,
        many_steps=3,
        batch_size=16,
        curve_at=(1, 2),
        refs=refs,
        split="training",
    )
    by = {r["mode"]: r for r in rows if r["seed"] == 0}
    assert set(by) == {"frozen_pretrained", "scratch", "finetune_all", "scratch_many_labels"}
    assert by["scratch"]["labelled"] == round(0.05 * n) and by["scratch_many_labels"][
        "labelled"
    ] == round(0.5 * n)
    assert by["scratch_many_labels"]["steps"] == 3 and by["scratch"]["steps"] == 2
    curve = (tmp_path / "transfer_curve.csv").read_text().splitlines()
    assert (
        curve[0] == "split,mode,seed,step,accuracy" and len(curve) == 1 + 4 * 2
    )  # every mode reaches steps 1, 2


def test_neighbour_mean_matches_brute_force_on_a_real_neighbour_list():
    from atomssl.graph import neighbor_clouds
    from atomssl.order._experiments import neighbour_mean

    s = idealized_crystal("cI2-W", n_min=100, sigma=0.05, seed=3)
    _, nbrs = neighbor_clouds(s, 12)
    values = np.random.default_rng(0).normal(size=(s.n_atoms, 5))
    idx = np.array([0, 7, 7, s.n_atoms - 1])
    expected = np.array([np.mean([values[i]] + [values[j] for j in nbrs[i]], axis=0) for i in idx])
    np.testing.assert_allclose(neighbour_mean(values, nbrs, idx), expected, rtol=1e-12, atol=1e-12)


def test_wide_transfer_split_is_every_one_component_prototype_not_pretrained():
    from atomssl.data import PRETRAINING_PROTOTYPES, aflow_prototypes
    from atomssl.order import HELD_OUT_PROTOTYPES
    from atomssl.order._experiments import TRANSFER_SPLITS
    from atomssl.order._reference import one_component_prototypes

    wide = one_component_prototypes()
    table = {s.id: s for s in aflow_prototypes()}
    assert len(wide) == len(set(wide)) == 49 and TRANSFER_SPLITS["wide"]() == wide
    assert not set(wide) & set(PRETRAINING_PROTOTYPES) and set(HELD_OUT_PROTOTYPES) <= set(wide)
    assert all(len(set(table[n].numbers.tolist())) == 1 for n in wide)
    # and every other prototype in the table has more than one element or is a pretraining one
    rest = set(table) - set(wide) - set(PRETRAINING_PROTOTYPES)
    assert all(len(set(table[n].numbers.tolist())) > 1 for n in rest)
