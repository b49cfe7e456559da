"""``atomssl embed``: layout of the .npz, input order, and invariance of the embeddings."""

import numpy as np
import pytest
import torch
import toy_backbone  # noqa: F401  (registers "toy"; tests/train is on sys.path under pytest)
from ase.build import bulk
from ase.io import write

from atomssl.cli.main import main
from atomssl.data import Structure
from atomssl.errors import CheckpointError
from atomssl.representation import BACKBONES, build_backbone
from atomssl.testing import transform_structure
from atomssl.train import default_checkpoint, embed_files, save_checkpoint


def _structures():
    a = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    a.rattle(0.08, seed=1)
    b = bulk("GaAs", "zincblende", a=5.65)
    b.cell = b.cell.array + np.array([[0.0, 0.2, 0.1], [0.1, 0.0, 0.3], [0.2, 0.1, 0.0]])
    b.rattle(0.08, seed=2)
    return [Structure.from_ase(a), Structure.from_ase(b)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A checkpoint per available backbone (fresh weights: invariance holds for any weights)."""

    tiny = {
        "toy": {"name": "toy", "width": 16},
        "megnet": {
            "name": "megnet",
            "n_blocks": 1,
            "dense": [16, 16],
            "conv": [16, 16, 16],
            "n_gaussians": 20,
        },
        "equiformer": {"name": "equiformer", "size": "tiny", "num_layers": 1, "cutoff": 4.0},
        "gaa": {"name": "gaa", "k": 6, "width": 16, "n_blocks": 1, "dropout": 0.0},
    }
    folder = tmp_path_factory.mktemp("ck")
    out = {}
    for name in sorted(BACKBONES):
        torch.manual_seed(0)
        out[name] = save_checkpoint(
            folder / f"{name}.pt", build_backbone(tiny.get(name, {"name": name}))
        )
    return out


def test_embed_layout_and_input_order(tmp_path, checkpoints, capsys):
    structures = _structures()
    files = []
    for i, s in enumerate(structures):
        files.append(tmp_path / f"s{i}.extxyz")
        write(files[-1], s.to_ase())
    out = tmp_path / "emb.npz"
    assert (
        main(
            [
                "embed",
                str(files[1]),
                str(files[0]),
                "--checkpoint",
                str(checkpoints["toy"]),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "2 structures" in capsys.readouterr().out
    z = np.load(out)
    assert z["structure"].shape == (2, 16)
    n0, n1 = structures[0].n_atoms, structures[1].n_atoms
    assert z["atom"].shape == (n1 + n0, 16)
    assert z["atom_index"].tolist() == [0] * n1 + [1] * n0  # input order: file 1 first
    assert z["sources"][0].startswith(str(files[1]))
    assert not list(tmp_path.glob(".*.tmp"))
    # per-structure rows do not depend on what else is in the batch
    single = embed_files([files[0]], checkpoints["toy"], tmp_path / "one.npz")
    np.testing.assert_allclose(single["structure"][0], z["structure"][1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backbone", sorted(set(BACKBONES)))
def test_embed_invariant_to_rotation_translation_permutation_and_wrapping(
    tmp_path, checkpoints, backbone
):
    rng = np.random.default_rng(0)
    paths, transforms = [], []
    for i, s in enumerate(_structures()):
        write(tmp_path / f"orig{i}.extxyz", s.to_ase())
        # rotation, translation, permutation, periodic images, cell origin (not reflection: some backbones are chiral)
        new, tr = transform_structure(
            s, rng, checks=("rotation", "translation", "permutation", "image", "origin")
        )
        write(tmp_path / f"moved{i}.extxyz", new.to_ase())
        paths += [tmp_path / f"orig{i}.extxyz", tmp_path / f"moved{i}.extxyz"]
        transforms.append(tr)
    z = embed_files(paths, checkpoints[backbone], tmp_path / "e.npz", dtype=torch.float64)
    scale = max(1.0, float(np.abs(z["structure"]).max()))
    for i, tr in enumerate(transforms):
        a, b = 2 * i, 2 * i + 1
        assert z["structure"].dtype == np.float64
        np.testing.assert_allclose(z["structure"][b], z["structure"][a], atol=1e-8 * scale)
        atoms_a, atoms_b = z["atom"][z["atom_index"] == a], z["atom"][z["atom_index"] == b]
        np.testing.assert_allclose(
            atoms_b, atoms_a[tr.perm], atol=1e-8 * max(1.0, float(np.abs(atoms_a).max()))
        )


def test_embed_float32_tolerance_and_missing_checkpoint(tmp_path, checkpoints):
    s = _structures()[0]
    rng = np.random.default_rng(1)
    new, tr = transform_structure(
        s, rng, checks=("rotation", "translation", "permutation", "image")
    )
    write(tmp_path / "a.cif", s.to_ase())
    write(tmp_path / "b.cif", new.to_ase())
    z = embed_files(
        [tmp_path / "a.cif", tmp_path / "b.cif"], checkpoints["toy"], tmp_path / "e.npz"
    )
    np.testing.assert_allclose(z["structure"][1], z["structure"][0], rtol=1e-4, atol=1e-4)
    if default_checkpoint() is None:
        with pytest.raises(CheckpointError, match="no --checkpoint given"):
            embed_files([tmp_path / "a.cif"], None, tmp_path / "x.npz")


def test_embed_ids_skip_bad_and_nothing_written_on_a_bad_input(tmp_path, checkpoints, capsys):
    """Issue 23: rows get stable ids (own id, else SOURCE@INDEX, SOURCE for a one-structure
    file); without --skip-bad the first bad file aborts in one line and nothing is written; with
    it the bad entries are reported on stderr, recorded in 'skipped', and the rest embedded."""
    a, b = _structures()
    write(tmp_path / "a.extxyz", a.to_ase())
    write(tmp_path / "two.extxyz", [a.to_ase(), b.to_ase()])
    named = b.to_ase()
    named.info["id"] = "my-gaas"
    write(tmp_path / "named.extxyz", named)
    (tmp_path / "text.cif").write_text("not a CIF, a text file renamed .cif\n")
    inputs = [str(tmp_path / n) for n in ("a.extxyz", "text.cif", "two.extxyz", "named.extxyz")]
    out = tmp_path / "e.npz"
    ck = ["--checkpoint", str(checkpoints["toy"]), "--out", str(out)]

    assert main(["embed", *inputs, *ck]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "text.cif" in err[0] and "unreadable file" in err[0], err
    assert not out.exists() and not list(tmp_path.glob(".e.npz*"))

    assert main(["embed", *inputs, "--skip-bad", *ck]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 2 and "text.cif" in err[0] and "skipped 1 bad entry" in err[1], err
    z = np.load(out)
    assert z["ids"].tolist() == [inputs[0], f"{inputs[2]}@0", f"{inputs[2]}@1", "my-gaas"]
    assert z["sources"].tolist() == [
        f"{inputs[0]}@0",
        f"{inputs[2]}@0",
        f"{inputs[2]}@1",
        f"{inputs[3]}@0",
    ]
    assert len(z["skipped"]) == 1 and z["skipped"][0].startswith(f"{inputs[1]}: unreadable file")
    assert z["structure"].shape[0] == 4 and z["atom_index"].max() == 3

    # an id shared by several rows is no id: those rows fall back to where they came from
    write(tmp_path / "named2.extxyz", named)
    z = embed_files(
        [tmp_path / "named.extxyz", tmp_path / "named2.extxyz"],
        checkpoints["toy"],
        tmp_path / "d.npz",
    )
    assert z["ids"].tolist() == [str(tmp_path / "named.extxyz"), str(tmp_path / "named2.extxyz")]
    assert z["skipped"].tolist() == []


def test_embed_refuses_empty_folders_missing_out_folders_and_absent_devices(
    tmp_path, checkpoints, capsys
):
    write(tmp_path / "a.cif", _structures()[0].to_ase())
    (tmp_path / "empty").mkdir()
    ck = ["--checkpoint", str(checkpoints["toy"])]
    cases = [
        (["embed", str(tmp_path / "empty"), *ck, "--out", str(tmp_path / "e.npz")], f"no structure files found in {tmp_path / 'empty'}"),
        (["embed", str(tmp_path / "a.cif"), *ck, "--out", str(tmp_path / "no" / "dir" / "e.npz")],
         f"folder {tmp_path / 'no' / 'dir'} does not exist"),
        (["embed", str(tmp_path / "a.cif"), *ck, "--device", "cuda:99", "--out", str(tmp_path / "e.npz")],
         "--device 'cuda:99': torch sees no"),
        (["embed", str(tmp_path / "a.cif"), *ck, "--device", "nonsense", "--out", str(tmp_path / "e.npz")],
         "--device 'nonsense': not a torch device"),
    ]  # fmt: skip
    for argv, needle in cases:
        assert main(argv) == 1
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and needle in err[0], (needle, err)
        if "--device" in argv:
            assert "available: cpu" in err[0], err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.cif", "empty"]
