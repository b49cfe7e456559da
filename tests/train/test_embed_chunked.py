"""Chunked ``atomssl embed`` (large structures): the same embeddings as one forward pass."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.io import write

from atomssl.cli import embed as embed_cli
from atomssl.cli.main import main
from atomssl.data import Structure
from atomssl.representation import build_backbone
from atomssl.train import _embed, embed_structures, save_checkpoint

TINY = {
    "megnet": {
        "name": "megnet",
        "n_blocks": 2,
        "dense": [16, 16],
        "conv": [16, 16, 16],
        "n_gaussians": 20,
    },
    # one layer + edge-degree embedding: a 2-hop receptive field (6 A), well inside the 18 A cell
    "equiformer": {"name": "equiformer", "size": "tiny", "num_layers": 1, "cutoff": 3.0},
    "gaa": {"name": "gaa", "k": 6, "width": 16, "n_blocks": 1, "dropout": 0.0},
}


def _structures():
    """A small crystal, a 500-atom periodic Cu block (~9000 bonds at 4 A) and another small one."""
    big = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((5, 5, 5))
    big.rattle(0.05, seed=0)
    small = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    small.rattle(0.05, seed=1)
    other = bulk("Si", "diamond", a=5.43)
    other.rattle(0.05, seed=2)
    return [Structure.from_ase(a) for a in (small, big, other)]


def _backbone(name):
    torch.manual_seed(0)
    return build_backbone(TINY[name])


def _count_calls(module):
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("name", sorted(TINY))
def test_chunked_equals_whole_float64(name):
    structures = _structures()
    bb = _backbone(name)
    whole = embed_structures(structures, bb, dtype=torch.float64, max_edges_per_chunk=0)
    counter = bb.edge_encoder if name == "megnet" else bb.readout if name == "gaa" else bb
    calls = _count_calls(counter)
    chunked = embed_structures(structures, bb, dtype=torch.float64, max_edges_per_chunk=200)
    if name == "megnet":
        assert len(calls) > 40  # ~9000 bonds, 200 at a time
        assert bb.edge_chunk is None  # training is unchanged after embedding
    elif name == "equiformer":
        assert (
            len(calls) > 8
        )  # the big block was cut into many halo chunks (and small ones batched alone)
    else:
        assert len(calls) > 15  # 500 clouds of 6 bonds, 200 // 6^2 = 5 clouds at a time
        assert bb.edge_chunk is None
    np.testing.assert_array_equal(whole["atom_index"], chunked["atom_index"])
    for key in ("structure", "atom"):
        assert whole[key].dtype == np.float64
        np.testing.assert_allclose(chunked[key], whole[key], rtol=1e-10, atol=1e-12)


def test_halo_is_tight_and_needed(monkeypatch):
    """One hop less than the receptive field changes the result: the test above can fail, and the
    chunks really are partial subgraphs."""
    structures = _structures()[1:2]
    bb = _backbone("equiformer")
    whole = embed_structures(structures, bb, dtype=torch.float64, max_edges_per_chunk=0)["atom"]
    monkeypatch.setattr(type(bb), "receptive_hops", property(lambda self: len(self.blocks)))
    short = embed_structures(structures, bb, dtype=torch.float64, max_edges_per_chunk=200)["atom"]
    assert np.abs(short - whole).max() > 1e-6


def test_megnet_gradients_unaffected_by_edge_chunk():
    """``edge_chunk`` only acts without autograd: training sees the plain forward."""
    from atomssl.graph import collate, to_graph

    bb = _backbone("megnet").double()
    batch = collate([to_graph(_structures()[0], cutoff=bb.cutoff, dtype=torch.float64)])
    bb.edge_chunk = 7
    calls = _count_calls(bb.edge_encoder)
    bb(batch).graph.sum().backward()
    assert len(calls) == 1 and bb.edge_encoder[0].weight.grad is not None


def test_cli_option(tmp_path, capsys):
    files = []
    for i, s in enumerate(_structures()):
        files.append(tmp_path / f"s{i}.extxyz")
        write(files[-1], s.to_ase())
    ck = save_checkpoint(tmp_path / "megnet.pt", _backbone("megnet"))
    outs = {}
    for n in ("0", "100"):
        outs[n] = tmp_path / f"emb{n}.npz"
        args = [
            "embed",
            *map(str, files),
            "-k",
            str(ck),
            "-o",
            str(outs[n]),
            "--float64",
            "--max-edges-per-chunk",
            n,
        ]
        assert main(args) == 0
    a, b = np.load(outs["0"]), np.load(outs["100"])
    np.testing.assert_allclose(b["atom"], a["atom"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b["structure"], a["structure"], rtol=1e-10, atol=1e-12)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(
            [
                "embed",
                str(files[0]),
                "-k",
                str(ck),
                "-o",
                str(tmp_path / "x.npz"),
                "--max-edges-per-chunk",
                "-1",
            ]
        )
    assert "must be >= 0" in capsys.readouterr().err
    assert embed_cli.DEFAULT_MAX_EDGES_PER_CHUNK == _embed.DEFAULT_MAX_EDGES_PER_CHUNK


def test_embedding_leaves_the_callers_backbone_as_it_was():
    """embed_structures(dtype=float64) used to leave the caller's module converted (and in eval mode)."""
    torch.manual_seed(0)
    bb = build_backbone({"name": "megnet", "cutoff": 4.0}).train()
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    embed_structures([Structure.coerce(bulk("NaCl", "rocksalt", a=5.64))], bb, dtype=torch.float64)
    assert all(p.dtype == torch.float32 for p in bb.parameters())
    assert bb.training
    after = bb.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
