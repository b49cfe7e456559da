"""Per-particle embeddings are exact functions of geometry when neighbour shells are tied.

With exactly k = 12 neighbours, the 12th and 13th neighbours of rock salt, CsCl, perovskite,
fluorite, bcc and diamond are equidistant and the cut followed atom order. Clouds now hold the
whole tied shell with weights summing to k (``atomssl.graph.tie_weights``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from scipy.spatial.transform import Rotation

from atomssl.data import Structure
from atomssl.graph import knn_graph, neighbor_clouds, tie_weights, to_graph
from atomssl.order import cloud_batch, embed_clouds, frame_clouds, pad_clouds
from atomssl.representation import build_backbone
from atomssl.train import embed_structures

TOL = 1e-9


def _perovskite() -> Atoms:
    a = 3.905
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    return Atoms("SrTiO3", scaled_positions=frac, cell=np.eye(3) * a, pbc=True)


CRYSTALS = {
    "rocksalt": lambda: bulk("NaCl", "rocksalt", a=5.64, cubic=True),
    "cscl": lambda: bulk("CsCl", "cesiumchloride", a=4.12),
    "perovskite": _perovskite,
    "fluorite": lambda: bulk("CaF2", "fluorite", a=5.46, cubic=True),
    "bcc": lambda: bulk("Fe", "bcc", a=2.87, cubic=True),
    "fcc": lambda: bulk("Cu", "fcc", a=3.61, cubic=True),
    "hcp": lambda: bulk("Mg", "hcp", a=3.21),
    "diamond": lambda: bulk("C", "diamond", a=3.567, cubic=True),
}


@pytest.fixture(scope="module")
def gaa():
    torch.manual_seed(0)
    config = {
        "name": "gaa",
        "k": 12,
        "width": 8,
        "n_blocks": 2,
        "hidden_factor": 1.0,
        "species_dim": 8,
        "dropout": 0.0,
    }
    return build_backbone(config).double().eval()


def _moved(atoms: Atoms, seed: int) -> tuple[Atoms, np.ndarray]:
    """Atoms permuted and rigidly rotated (proper rotation), with the permutation."""
    perm = np.random.default_rng(seed).permutation(len(atoms))
    out = atoms[perm]
    rot = Rotation.random(random_state=seed).as_matrix()
    out.set_cell(out.cell[:] @ rot.T, scale_atoms=True)
    return out, perm


def _equivalent_spread(emb: np.ndarray, atoms: Atoms) -> float:
    """Largest difference between embeddings of atoms of one element (all symmetry-equivalent here)."""
    z = atoms.numbers
    return max(float(np.abs(emb[z == e] - emb[z == e][0]).max()) for e in np.unique(z))


# ------------------------------------------------------------------------------ weights
def test_tie_weights_rock_salt_shell():
    d = torch.tensor([[1.0] * 6 + [2**0.5] * 12], dtype=torch.float64)
    w = tie_weights(d, 12)
    assert torch.equal(w[0, :6], torch.ones(6, dtype=torch.float64))
    assert torch.allclose(w[0, 6:], torch.full((12,), 0.5, dtype=torch.float64))
    assert float(w.sum()) == pytest.approx(12.0, abs=1e-12)


def test_tie_weights_ignore_order_and_padding():
    rng = np.random.default_rng(0)
    d = torch.tensor(
        [[1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 4, 0, 0]], dtype=torch.float64
    )
    w = tie_weights(d, 12)
    perm = torch.from_numpy(rng.permutation(d.shape[1]))
    assert torch.equal(tie_weights(d[:, perm], 12), w[:, perm])
    assert float(w.sum()) == pytest.approx(12.0)
    assert torch.equal(w[0, -3:], torch.zeros(3, dtype=torch.float64))  # farther shell and padding
    assert torch.allclose(w[0, 10:16], torch.full((6,), 2 / 6, dtype=torch.float64))


def test_tie_weights_untied_cloud_is_all_ones():
    d = torch.arange(1, 13, dtype=torch.float64)[None]
    assert torch.equal(tie_weights(d, 12), torch.ones(1, 12, dtype=torch.float64))


def test_tie_weights_refuse_short_clouds():
    with pytest.raises(ValueError, match="at least k=12"):
        tie_weights(torch.ones(1, 11, dtype=torch.float64), 12)
    with pytest.raises(ValueError, match="at least k=12"):
        tie_weights(torch.cat([torch.ones(1, 11), torch.zeros(1, 3)], dim=1), 12)


# ------------------------------------------------------------------------------ graphs
@pytest.mark.parametrize("name", sorted(CRYSTALS))
def test_knn_ties_holds_whole_shell_brute_force(name):
    s = Structure.coerce(CRYSTALS[name]())
    nl = knn_graph(s, 12, ties=True)
    cells = np.array(np.meshgrid(*[np.arange(-3, 4)] * 3, indexing="ij")).reshape(3, -1).T
    for i in range(s.n_atoms):
        vec = (s.positions[None, :, :] + (cells @ s.cell)[:, None, :] - s.positions[i]).reshape(
            -1, 3
        )
        dist = np.sort(np.linalg.norm(vec, axis=1))[1:]  # drop self
        expected = int(np.sum(dist <= dist[11] * (1 + 1e-5)))
        assert int(np.sum(nl.src == i)) == expected


def test_knn_without_ties_unchanged():
    s = Structure.coerce(CRYSTALS["rocksalt"]())
    nl = knn_graph(s, 12)
    assert np.all(np.bincount(nl.src) == 12)
    assert np.all(np.bincount(knn_graph(s, 12, ties=True).src) == 18)


# ------------------------------------------------------------------------------ invariance
@pytest.mark.parametrize("name", sorted(CRYSTALS))
def test_frame_cloud_embeddings_exact(gaa, name):
    """Order path (one-component clouds, block means too): permutation, rotation, images, equivalent atoms."""
    atoms = CRYSTALS[name]()
    emb = embed_clouds(
        gaa, frame_clouds(Structure.coerce(atoms), 12, dtype=np.float64), blocks=True
    )
    assert emb.dtype == np.float64
    moved, perm = _moved(atoms, seed=1)
    emb_moved = embed_clouds(
        gaa, frame_clouds(Structure.coerce(moved), 12, dtype=np.float64), blocks=True
    )
    assert np.abs(emb_moved - emb[perm]).max() < TOL
    sup = atoms.repeat((2, 1, 3))
    emb_sup = embed_clouds(
        gaa, frame_clouds(Structure.coerce(sup), 12, dtype=np.float64), blocks=True
    )
    assert np.abs(emb_sup - np.tile(emb, (6, 1))).max() < TOL
    # one-component clouds: every atom of a monatomic lattice is equivalent; else per element
    assert _equivalent_spread(emb, atoms) < TOL


@pytest.mark.parametrize("name", sorted(CRYSTALS))
def test_structure_embeddings_exact(gaa, name):
    """``atomssl embed`` path (species-aware kNN graphs with whole tied shells)."""
    atoms = CRYSTALS[name]()
    out = embed_structures([Structure.coerce(atoms)], gaa, dtype=torch.float64)
    moved, perm = _moved(atoms, seed=2)
    out_moved = embed_structures([Structure.coerce(moved)], gaa, dtype=torch.float64)
    assert np.abs(out_moved["atom"] - out["atom"][perm]).max() < TOL
    assert np.abs(out_moved["structure"] - out["structure"]).max() < TOL
    sup = embed_structures([Structure.coerce(atoms.repeat((1, 2, 2)))], gaa, dtype=torch.float64)
    assert np.abs(sup["atom"] - np.tile(out["atom"], (4, 1))).max() < TOL
    assert np.abs(sup["structure"] - out["structure"]).max() < TOL
    assert _equivalent_spread(out["atom"], atoms) < TOL


def test_plain_k_graph_was_not_invariant(gaa):
    """The failure this fixes: exactly k bonds per atom on a rock-salt cell depend on atom order."""
    atoms = CRYSTALS["rocksalt"]()
    moved, perm = _moved(atoms, seed=2)

    def embed(a):
        return gaa(to_graph(Structure.coerce(a), k=12, dtype=torch.float64)).node.detach().numpy()

    with torch.no_grad():
        assert np.abs(embed(moved) - embed(atoms)[perm]).max() > 1e-4


# ------------------------------------------------------------------------------ unchanged where no ties
def test_untied_clouds_bit_identical_to_plain_k(gaa):
    """A thermal frame has no ties: the tie-aware graph is the plain kNN graph, outputs bit-identical."""
    from atomssl.data import idealized_crystal

    s = idealized_crystal("cF4-Cu", n_min=200, sigma=0.05, seed=0)
    plain, _ = neighbor_clouds(s, 12, normalize="min_distance")
    tied = frame_clouds(s, 12, dtype=np.float64)
    assert tied.shape == plain.shape and np.array_equal(tied, plain)
    with torch.no_grad():
        a = gaa(to_graph(s, k=12, dtype=torch.float64)).node
        b = gaa(to_graph(s, k=12, dtype=torch.float64, ties=True)).node
    assert torch.equal(a, b)


def test_padding_columns_change_nothing(gaa):
    """Zero-vector padding (clouds of different widths concatenated) is not a neighbour."""
    from atomssl.data import idealized_crystal

    c = frame_clouds(
        idealized_crystal("cF4-Cu", n_min=64, sigma=0.03, seed=1), 12, dtype=np.float64
    )
    salt = frame_clouds(Structure.coerce(CRYSTALS["rocksalt"]()), 12, dtype=np.float64)
    both = pad_clouds([c, salt])
    assert both.shape[1] == 18
    e_both = embed_clouds(gaa, both, blocks=True)
    assert np.abs(e_both[: len(c)] - embed_clouds(gaa, c, blocks=True)).max() < TOL
    assert np.abs(e_both[len(c) :] - embed_clouds(gaa, salt, blocks=True)).max() < TOL
    batch = cloud_batch(both, dtype=torch.float64)
    assert batch.edge_index.shape[1] == 12 * len(c) + 18 * len(salt)


def test_gaa_refuses_short_clouds(gaa):
    from atomssl.errors import ConfigError

    g = to_graph(Structure.coerce(CRYSTALS["fcc"]()), k=8, dtype=torch.float64)
    with pytest.raises(ConfigError, match="at least k=12 edges per atom"):
        gaa(g)
