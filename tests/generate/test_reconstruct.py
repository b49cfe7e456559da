"""Masked crystal reconstruction: corruption statistics, exact symmetry of the repair, checkpoint
round trip, metrics against hand-computed values, substitution map and the CLI verbs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from ase.build import bulk

from atomssl.data import Structure
from atomssl.errors import ConfigError
from atomssl.generate import (
    Generator,
    Reconstruction,
    corrupt_structures,
    plot_substitution_map,
    reconstruct,
    reconstruction_metrics,
    repair,
    substitution_counts,
    substitution_matrix,
)
from atomssl.generate._substitution import element_order
from atomssl.testing import assert_equivariant
from atomssl.train import synthetic_crystals

BACKBONE = {"name": "equiformer", "size": "tiny", "num_layers": 1}


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    g = Generator.build(BACKBONE)
    # a non-zero noise gate so the position update depends on the invariant features too
    torch.nn.init.normal_(g.task.noise.gate[-1].weight, std=0.3)
    return g.eval()


def nacl():
    return Structure.from_ase(
        bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    )  # Na4Cl4, d_min = 2.82 A


def test_species_mask_hides_one_whole_species():
    s = nacl()
    for seed in range(5):
        ((orig, cor, mask, dmin),) = corrupt_structures([s], "species", 0.1, seed=seed)
        masked_species = set(orig.numbers[mask])
        assert len(masked_species) == 1
        assert mask.sum() == (orig.numbers == masked_species.pop()).sum() == 4
        assert np.all(cor.numbers[mask] == 0) and np.all(cor.numbers[~mask] == orig.numbers[~mask])
        assert dmin == pytest.approx(5.64 / 2)


def test_random_mask_fraction_and_noise_scale():
    s = Structure.from_ase(bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(2))  # 64 atoms
    out = corrupt_structures([s] * 20, "random", 0.2, seed=1)
    assert all(m.sum() == round(0.15 * 64) for _, _, m, _ in out)
    noise = np.concatenate([c.positions - o.positions for o, c, _, _ in out])
    assert noise.std() == pytest.approx(0.2 * 2.82, rel=0.05)
    again = corrupt_structures([s] * 20, "random", 0.2, seed=1)
    assert all(np.array_equal(a[1].positions, b[1].positions) for a, b in zip(out, again))
    with pytest.raises(ConfigError):
        corrupt_structures([s], "everything", 0.1)


def test_repair_is_equivariant(gen):
    ((orig, cor, mask, dmin),) = corrupt_structures(
        [synthetic_crystals(1, seed=4)[0]], "random", 0.1, seed=0
    )
    g64 = gen.double()

    def fn(structure):
        ((rep, _),) = repair(g64, [structure], d_min=[dmin])
        return {"move": rep.positions - structure.positions, "species": rep.numbers.astype(float)}

    try:
        assert_equivariant(fn, cor, {"move": "vector", "species": "node"}, n_trials=2, atol=1e-7)
    finally:
        gen.float()


def test_repair_moves_by_predicted_noise_and_fills_only_masked(gen):
    s = nacl()
    recs = reconstruct(gen, [s], "species", 0.1, seed=3, steps=1)
    r = recs[0]
    assert np.all(r.repaired.numbers[~r.mask] == s.numbers[~r.mask])
    assert np.all((r.repaired.numbers[r.mask] >= 1) & (r.repaired.numbers[r.mask] <= 118))
    assert r.probabilities.shape == (r.mask.sum(), 118)
    np.testing.assert_allclose(r.probabilities.sum(-1), 1.0, atol=1e-6)
    move = r.repaired.positions - r.corrupted.positions
    assert np.abs(move).max() > 0
    np.testing.assert_allclose(move.mean(0), 0.0, atol=1e-5)  # a rigid shift is never predicted
    two = reconstruct(gen, [s], "species", 0.1, seed=3, steps=2)[0]
    assert not np.allclose(two.repaired.positions, r.repaired.positions)
    with pytest.raises(ConfigError):
        repair(gen, [r.corrupted], steps=0)


def test_generator_checkpoint_round_trip(gen, tmp_path):
    path = gen.save(tmp_path / "g.pt", config={"note": "test"})
    back = Generator.from_checkpoint(path).eval()
    s = nacl()
    a = reconstruct(gen, [s], "random", 0.1, seed=0)[0]
    b = reconstruct(back, [s], "random", 0.1, seed=0)[0]
    np.testing.assert_allclose(a.repaired.positions, b.repaired.positions, atol=1e-6)
    assert np.array_equal(a.repaired.numbers, b.repaired.numbers)
    assert back.train_sigma == gen.train_sigma


def test_checkpoint_without_generator_heads_is_refused(tmp_path):
    from atomssl.errors import CheckpointError
    from atomssl.representation import build_backbone
    from atomssl.train import save_checkpoint

    path = save_checkpoint(tmp_path / "bb.pt", build_backbone(BACKBONE))
    with pytest.raises(CheckpointError, match="mask_denoise"):
        Generator.from_checkpoint(path)


def _rec(orig_numbers, new_numbers, mask, shift=None):
    cell = np.eye(3) * 6.0
    pos = np.array([[0, 0, 0], [3, 0, 0], [0, 3, 0], [0, 0, 3]], float)[: len(orig_numbers)]
    o = Structure(numbers=orig_numbers, positions=pos, cell=cell, pbc=True)
    rep = o.copy(numbers=np.array(new_numbers), positions=pos + (0 if shift is None else shift))
    cor = o.copy(numbers=np.where(mask, 0, orig_numbers))
    return Reconstruction(o, cor, rep, np.array(mask), 3.0)


def test_metrics_by_hand():
    a = _rec([11, 17], [11, 17], [False, True])  # correct
    shift = np.array([[0.1, 0, 0], [-0.1, 0, 0]])
    b = _rec([11, 17], [11, 9], [False, True], shift)  # Cl -> F: NaF, still valid; RMSD 0.1 A
    c = _rec([11, 17], [11, 8], [False, True])  # Cl -> O: NaO
    m = reconstruction_metrics([a, b, c])
    assert m["species_accuracy"] == pytest.approx(1 / 3)
    assert m["structure_validity"] == 1.0
    assert m["rmsd_A"] == pytest.approx(np.sqrt(2 * 0.01 / 6))
    assert m["changed_composition"] == pytest.approx(2 / 3)
    assert m["baseline_accuracy"] == 1.0  # all masked atoms were Cl


def test_substitution_counts_matrix_and_order(tmp_path):
    recs = [
        _rec([11, 17], [11, 35], [False, True]),
        _rec([11, 17], [11, 35], [False, True]),
        _rec([11, 17], [19, 17], [True, False]),
        _rec([11, 17], [11, 17], [False, True]),
        _rec([11, 17], [11, 11], [False, True]),
    ]  # Na2 single element: valid, counted
    counts = substitution_counts(recs)
    assert counts == Counter({(17, 35): 2, (11, 19): 1, (17, 11): 1})
    m, els = substitution_matrix(counts, "period")
    assert els == [11, 17, 19, 35]
    assert m[els.index(17), els.index(35)] == 2 and m.sum() == 4
    assert element_order([35, 11, 19, 17, 3], "group") == [3, 11, 19, 17, 35]
    out = plot_substitution_map(counts, tmp_path / "map.png", order="group")
    assert out.stat().st_size > 1000
    with pytest.raises(ConfigError):
        element_order([1], "alphabetical")


def test_cli_reconstruct_and_gan_verbs(gen, tmp_path, capsys):
    from ase.io import read, write

    from atomssl.cli.main import build_parser, main

    ck = gen.save(tmp_path / "g.pt")
    write(tmp_path / "nacl.cif", nacl().to_ase())
    rc = main(
        [
            "reconstruct",
            str(tmp_path / "nacl.cif"),
            "--mask",
            "species",
            "--sigma",
            "0.1",
            "--checkpoint",
            str(ck),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 0
    cor = read(tmp_path / "out" / "corrupted.extxyz")
    rep = read(tmp_path / "out" / "repaired.cif")
    assert (cor.numbers == 0).sum() == 4 and len(rep) == 8 and (rep.numbers > 0).all()
    assert "masked species correct" in capsys.readouterr().out
    rc = main(
        [
            "reconstruct",
            str(tmp_path / "nacl.cif"),
            "--decode",
            "valid",
            "--checkpoint",
            str(ck),
            "--out",
            str(tmp_path / "valid"),
        ]
    )
    assert rc == 0 and "composition (smact14) True" in capsys.readouterr().out
    assert (
        main(["reconstruct", str(tmp_path / "nacl.cif"), "--checkpoint", str(tmp_path / "none.pt")])
        == 1
    )
    assert "gan" in build_parser()._subparsers._group_actions[0].choices


def test_masked_sites_round_trip_through_reconstruct(gen, tmp_path, capsys):
    """``corrupted.extxyz`` (masked sites as X) read back by ``reconstruct``: the species of exactly
    the X sites are predicted, the other species and every position kept; everywhere else an X
    site is refused with a clear error."""
    from ase.io import read as ase_read
    from ase.io import write

    from atomssl.cli.main import main
    from atomssl.data import import_structures, read
    from atomssl.errors import MaskedSiteError

    ck = gen.save(tmp_path / "g.pt")
    write(tmp_path / "nacl.cif", nacl().to_ase())
    assert (
        main(
            [
                "reconstruct",
                str(tmp_path / "nacl.cif"),
                "--mask",
                "species",
                "--checkpoint",
                str(ck),
                "--out",
                str(tmp_path / "first"),
            ]
        )
        == 0
    )
    corrupted = tmp_path / "first" / "corrupted.extxyz"
    cor = ase_read(corrupted)
    x_sites = np.flatnonzero(cor.numbers == 0)
    assert len(x_sites) == 4
    capsys.readouterr()

    rc = main(
        ["reconstruct", str(corrupted), "--checkpoint", str(ck), "--out", str(tmp_path / "second")]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "4 of 8 sites masked (X)" in out and "positions as given" in out
    assert not (tmp_path / "second" / "corrupted.extxyz").exists()
    rep = ase_read(tmp_path / "second" / "repaired.extxyz")
    assert (rep.numbers > 0).all()
    keep = np.setdiff1d(np.arange(8), x_sites)
    np.testing.assert_array_equal(rep.numbers[keep], cor.numbers[keep])  # only the X sites changed
    np.testing.assert_allclose(rep.positions, cor.positions, atol=1e-7)  # positions unchanged
    np.testing.assert_allclose(rep.cell.array, cor.cell.array, atol=1e-7)
    # the predictions are the generator's own for those sites
    ((expected, _),) = repair(gen, read(corrupted, allow_masked=True))
    np.testing.assert_array_equal(rep.numbers, expected.numbers)
    # --denoise moves atoms by the predicted noise; it means nothing without X sites
    assert (
        main(
            [
                "reconstruct",
                str(corrupted),
                "--checkpoint",
                str(ck),
                "--denoise",
                "--out",
                str(tmp_path / "d"),
            ]
        )
        == 0
    )
    moved = ase_read(tmp_path / "d" / "repaired.extxyz")
    assert np.abs(moved.positions - cor.positions).max() > 1e-4
    assert (
        main(
            [
                "reconstruct",
                str(tmp_path / "nacl.cif"),
                "--checkpoint",
                str(ck),
                "--denoise",
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 1
    )
    capsys.readouterr()

    # everywhere else: refused, naming the sites
    message = rf"site\(s\) \[{', '.join(map(str, x_sites))}\] are masked \(X\); only `atomssl reconstruct` accepts them"
    with pytest.raises(MaskedSiteError, match=message):
        read(corrupted)
    with pytest.raises(MaskedSiteError, match=message):
        import_structures([corrupted], tmp_path / "s.db")
    assert main(["data", "info", str(corrupted)]) == 1
    out = capsys.readouterr().out
    assert (
        "masked sites" in out
        and "only `atomssl reconstruct` accepts them" in out
        and str(x_sites.tolist()) in out
    )
    assert main(["data", "import", str(corrupted), "--out", str(tmp_path / "s.db")]) == 1
    err = capsys.readouterr().err
    assert "are masked (X)" in err and "Traceback" not in err
