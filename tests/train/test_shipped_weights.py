"""The backbone shipped in ``atomssl/weights/default.pt``: safe to load, documented, used by
``atomssl embed`` when no ``--checkpoint`` is given, and its embeddings are invariant."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import atomssl
from atomssl.cli.main import main
from atomssl.data import Structure
from atomssl.testing import assert_equivariant
from atomssl.train import default_checkpoint, embed_structures, load_backbone

MAX_BYTES = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def shipped() -> Path:
    path = default_checkpoint()
    assert path is not None, "atomssl ships no atomssl/weights/default.pt"
    return path


@pytest.fixture(scope="module")
def backbone(shipped):
    return load_backbone(shipped)


def test_shipped_checkpoint_is_package_data_small_and_weights_only(shipped):
    assert shipped == Path(atomssl.__file__).parent / "weights" / "default.pt"
    assert 0 < shipped.stat().st_size <= MAX_BYTES
    ck = torch.load(shipped, map_location="cpu", weights_only=True)  # no pickled objects
    assert ck["format"] == "atomssl-checkpoint"
    assert ck["backbone_config"]["name"] == "megnet"
    assert ck.get("trainer") is None, "the shipped file keeps no optimiser/trainer state"


def test_shipped_checkpoint_is_documented(shipped):
    doc = json.loads(shipped.with_name("default.json").read_text())
    assert doc["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert "atomssl pretrain --config pretrain_" in doc["command"]  # a packaged config
    ck = torch.load(shipped, map_location="cpu", weights_only=True)
    assert doc["backbone"] == ck["backbone_config"]
    assert doc["epochs"] == ck["epoch"] + 1
    # every task ended below its trivial baseline on the held-out structures
    for task in doc["tasks"]:
        assert task["reached"] < task["baseline"], task


def test_documented_config_reproduces_the_shipped_recipe(shipped):
    """The packaged config ``pretrain_default`` is the recipe of the shipped file: after defaults
    are filled in it equals the config stored in the checkpoint (only the run folder name may
    differ)."""
    from atomssl.train._pretrain import prepare_config
    from atomssl.utils import load_config

    documented = prepare_config(load_config("pretrain_default", schema="pretrain"))
    stored = torch.load(shipped, map_location="cpu", weights_only=True)["config"]
    documented.pop("run", None)
    assert documented == {k: v for k, v in stored.items() if k != "run"}


def _write_cifs(folder: Path) -> list[Path]:
    """Structures the project does not ship, written as CIF files at test time."""
    from ase import Atoms
    from ase.build import bulk
    from ase.io import write

    rocksalt = bulk("KBr", "rocksalt", a=6.60)
    a = 3.905  # cubic SrTiO3
    perovskite = Atoms(
        "SrTiO3",
        scaled_positions=[[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]],
        cell=[a, a, a],
        pbc=True,
    )
    paths = []
    for name, atoms in (("KBr_rocksalt.cif", rocksalt), ("SrTiO3_perovskite.cif", perovskite)):
        path = folder / name
        write(path, atoms, format="cif")
        paths.append(path)
    return paths


def test_cli_embed_uses_shipped_backbone_by_default(tmp_path, backbone, capsys):
    paths = _write_cifs(tmp_path)
    out = tmp_path / "emb.npz"
    assert main(["embed", *map(str, paths), "--out", str(out)]) == 0  # no --checkpoint
    got = np.load(out)
    assert got["structure"].shape == (2, backbone.embedding_dim)
    assert got["atom"].shape == (2 + 5, backbone.node_dim)
    assert got["atom_index"].tolist() == [0, 0, 1, 1, 1, 1, 1]
    assert np.isfinite(got["structure"]).all() and np.isfinite(got["atom"]).all()
    # the rows are the shipped backbone's embeddings of these structures
    from ase.io import read

    ref = embed_structures([Structure.from_ase(read(p)) for p in paths], backbone)
    np.testing.assert_allclose(got["structure"], ref["structure"], rtol=1e-5, atol=1e-6)
    # different crystals get different embeddings
    assert np.abs(got["structure"][0] - got["structure"][1]).max() > 1e-3


def test_shipped_embedding_is_invariant(backbone, tmp_path):
    from ase.io import read

    structure = Structure.from_ase(read(_write_cifs(tmp_path)[1]))

    def fn(s: Structure) -> dict:
        res = embed_structures([s], backbone, dtype=torch.float64)
        return {"graph": res["structure"][0], "node": res["atom"]}

    assert_equivariant(
        fn, structure, {"graph": "graph", "node": "node"}, n_trials=3, atol=1e-8, rtol=1e-7
    )


def test_shipped_command_is_a_runnable_shell_command(shipped):
    """Each ``&&`` part of the recorded command parses as a shell command: the atomssl part with the
    CLI's own parser (its config file exists), the benchmark part names a script that exists."""
    import shlex

    from atomssl.cli.main import build_parser
    from atomssl.utils._config import resolve_config

    doc = json.loads(shipped.with_name("default.json").read_text())
    root = Path(__file__).resolve().parents[2]
    parts = [shlex.split(p) for p in doc["command"].split("&&")]
    assert len(parts) == 2
    for words in parts:
        while words and "=" in words[0] and not words[0].startswith("-"):
            words.pop(0)  # VAR=value environment prefixes
        if words[0] == "atomssl":
            args = build_parser().parse_args(words[1:])
            assert args.verb == "pretrain" and resolve_config(args.config).is_file()
        else:
            assert words[0] == "python" and (root / words[1]).is_file() and words[2] == "--ship"
