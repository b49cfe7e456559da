"""Gram VAE: shapes, loss, checkpoints; tiny end-to-end train / sample / interpolate / inpaint."""

import numpy as np
import pytest
import torch
from ase.build import bulk

from atomssl.data import Structure
from atomssl.errors import CheckpointError
from atomssl.motif import (
    GramVAE,
    TrainConfig,
    VAEConfig,
    aligned_rmsd,
    extract_environments,
    inpaint,
    interpolate,
    load_vae,
    sample,
    save_vae,
    train_vae,
)


def test_architecture_and_loss():
    model = GramVAE()
    linears = [m for m in model.encoder if isinstance(m, torch.nn.Linear)] + [model.mu]
    assert [(m.in_features, m.out_features) for m in linears] == [(36, 28), (28, 18), (18, 8)]
    dec = [m for m in model.decoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in dec] == [(8, 18), (18, 28), (28, 36)]
    assert sum(isinstance(m, torch.nn.Tanh) for m in model.encoder) == 2
    x = torch.randn(5, 36)
    recon, mu, logvar = model(x)
    assert recon.shape == (5, 36) and mu.shape == (5, 8) and logvar.shape == (5, 8)
    # KL is zero exactly when q = N(0, I); the MSE is the summed squared error
    loss, rec, kl = model.loss(x, x.clone(), torch.zeros(5, 8), torch.zeros(5, 8), beta=0.5)
    assert float(rec) == 0 and float(kl) == 0 and float(loss) == 0
    mu = torch.ones(5, 8)
    loss, rec, kl = model.loss(x, x + 1, mu, torch.zeros(5, 8), beta=0.5)
    assert float(rec) == pytest.approx(36.0) and float(kl) == pytest.approx(4.0)
    assert float(loss) == pytest.approx(36.0 + 0.5 * 4.0)


def test_decode_gram_is_symmetric_and_matches_numpy_path():
    model = GramVAE().eval()
    z = np.random.default_rng(0).normal(size=(4, 8))
    g = model.decode_gram(torch.as_tensor(z)).detach().numpy()
    assert np.allclose(g, np.swapaxes(g, 1, 2))
    np.testing.assert_allclose(g, model.decode_grams(z), rtol=1e-4, atol=1e-4)


def _si_environments():
    atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat(2)
    cells = []
    for seed in range(3):
        a = atoms.copy()
        a.positions += np.random.default_rng(seed).normal(scale=0.08, size=a.positions.shape)
        cells.append(Structure.from_ase(a))
    # first shell only (k=4): the second shell of diamond is 12 equidistant atoms, whose choice and order
    # would be label noise
    return extract_environments(cells, k=4)


def test_tiny_end_to_end_train_sample_interpolate_inpaint(tmp_path):
    env = _si_environments()
    train, held = env.subset(env.cell < 2), env.subset(env.cell == 2)
    model, history = train_vae(
        train.grams(),
        held.grams(),
        VAEConfig(k=4),
        TrainConfig(epochs=80, beta=1e-4, lr=1e-2, batch_size=64),
    )
    assert history[-1]["recon"] < 0.3 * history[0]["recon"]
    # held-out reconstruction after synchronisation is much better than the data's own spread
    rec = model.reconstruct(held.grams())
    from atomssl.motif import gram_to_coords

    rmsd = aligned_rmsd(gram_to_coords(rec), held.vectors)
    spread = aligned_rmsd(np.broadcast_to(held.vectors[:1], held.vectors.shape), held.vectors)
    assert np.median(rmsd) < 0.1 < np.median(spread)
    # checkpoint round trip with weights_only loading
    path = save_vae(model, tmp_path / "model.pt", extra={"note": "test"})
    payload = torch.load(path, weights_only=True)
    assert payload["model_config"]["latent"] == 8 and payload["model_config"]["k"] == 4
    again = load_vae(path)
    np.testing.assert_allclose(again.reconstruct(held.grams()[:5]), rec[:5], rtol=1e-6, atol=1e-6)
    # sampling gives k-atom motifs with first shells near 2.35 A
    coords, grams = sample(again, 50, seed=1)
    assert coords.shape == (50, 4, 3)
    d = np.linalg.norm(coords, axis=-1)
    assert abs(np.median(d) - 2.35) < 0.1
    # interpolation: endpoints close to the two motifs, smooth path
    frames = interpolate(again, held.vectors[0], held.vectors[1], n_frames=6)
    assert frames.shape == (6, 4, 3)
    assert aligned_rmsd(frames[0], held.vectors[0]) < 0.15
    assert aligned_rmsd(frames[-1], held.vectors[1]) < 0.3  # only frame 0 is aligned directly
    assert np.linalg.norm(np.diff(frames, axis=0), axis=-1).max() < 1.5
    # inpainting: 3 of 4 known; known atoms kept, the missing one placed by the tetrahedral geometry
    true = held.vectors[:8]
    known = true[:, [0, 1, 3]]
    res = inpaint(again, known, restarts=4, steps=80)
    np.testing.assert_array_equal(res.coords[:, :3], known)
    err = np.linalg.norm(res.infilled[:, 0] - true[:, 2], axis=-1)
    # the naive guess (the known atoms' mirror through the centre, scaled to 2.35 A) for comparison
    naive = -known.sum(1)
    naive *= 2.35 / np.linalg.norm(naive, axis=-1, keepdims=True)
    # jitter (0.08 A per coordinate on both atoms) alone displaces the truth by ~0.2 A
    assert (
        np.median(err) < 0.3
        and np.median(err) < np.median(np.linalg.norm(naive - true[:, 2], axis=-1)) + 0.05
    )
    assert res.slots.shape == (8, 3) and np.all(np.diff(res.slots, axis=1) > 0)
    assert np.all(res.fixed_rmsd < 0.2)


def test_load_refuses_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_vae(tmp_path / "none.pt")
    torch.save({"kind": "other"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a motif VAE"):
        load_vae(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        load_vae(tmp_path / "junk.pt")
