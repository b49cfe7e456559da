"""Adversarial refinement: the critic's gradient reaches the generator (the reference code's bug
was computing the adversarial term under no_grad on arg-max species), losses, and a short run."""

from __future__ import annotations

import pytest
import torch

from atomssl.errors import ConfigError
from atomssl.generate import Discriminator, Generator, corrupt_batch, gan, generate
from atomssl.generate._discriminator import critic_view, real_batch
from atomssl.generate._gan_losses import discriminator_loss, generator_adversarial_loss
from atomssl.generate._reconstruct import one_hot_species, relaxed_species
from atomssl.graph import collate, to_graph
from atomssl.train import synthetic_crystals

BACKBONE = {"name": "equiformer", "size": "tiny", "num_layers": 1}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    gen = Generator.build(BACKBONE)
    disc = Discriminator.build(BACKBONE)
    batch = collate([to_graph(s, cutoff=5.0) for s in synthetic_crystals(4, seed=3)])
    return gen, disc, batch


def _adversarial_grads(gen, disc, batch, kind="nonsaturating", positions="generated", **relax):
    gen.zero_grad()
    c = corrupt_batch(batch, "mixed", 0.2, generator=torch.Generator().manual_seed(1))
    fake, _, _ = generate(gen, batch, c, **relax)
    disc.requires_grad_(False)
    generator_adversarial_loss(disc, critic_view(fake, batch, positions), kind).backward()
    disc.requires_grad_(True)
    return {
        n: (p.grad.abs().sum().item() if p.grad is not None else 0.0)
        for n, p in gen.named_parameters()
    }


@pytest.mark.parametrize("kind", ["nonsaturating", "wgan-gp"])
@pytest.mark.parametrize("gumbel", [True, False])
def test_adversarial_term_reaches_generator_parameters(setup, kind, gumbel):
    gen, disc, batch = setup
    grads = _adversarial_grads(gen, disc, batch, kind, gumbel=gumbel, hard=True)
    # the species head is reached only through the relaxed species (z_soft) ...
    assert sum(v for n, v in grads.items() if n.startswith("task.species.")) > 0
    # ... the noise head only through the generated positions ...
    assert grads["task.noise.mix"] > 0
    # ... and the shared backbone through both
    bb = [v for n, v in grads.items() if n.startswith("backbone.") and "readout" not in n]
    assert sum(v > 0 for v in bb) > 0.9 * len(bb)
    assert all(v == v for v in grads.values())  # finite
    assert disc.head.net[0].weight.grad is None or disc.head.net[0].weight.grad.abs().sum() == 0


def test_species_only_critic_reaches_the_species_head_not_the_noise_head(setup):
    gen, disc, batch = setup
    grads = _adversarial_grads(gen, disc, batch, positions="real", gumbel=False, hard=True)
    assert sum(v for n, v in grads.items() if n.startswith("task.species.")) > 0
    assert grads["task.noise.mix"] == 0  # positions shown to the critic are the real ones
    c = corrupt_batch(batch, "species", 0.2, generator=torch.Generator().manual_seed(2))
    fake, _, _ = generate(gen, batch, c)
    shown = critic_view(fake, batch, "real")
    assert torch.equal(shown.pos, batch.pos) and torch.equal(shown.z_soft, fake.z_soft)
    assert critic_view(fake, batch) is fake
    with pytest.raises(ConfigError):
        critic_view(fake, batch, "noisy")


def test_reference_bug_gives_no_species_gradient(setup):
    """Control: building the fake from arg-max species (as the reference code did) cuts the species
    head off from the adversarial term, so the test above can fail."""
    gen, disc, batch = setup
    gen.zero_grad()
    c = corrupt_batch(batch, "mixed", 0.2, generator=torch.Generator().manual_seed(1))
    fake, _, _ = generate(gen, batch, c)
    fake.z_soft = one_hot_species(fake.z, fake.pos.dtype)  # arg-max species, no relaxation
    disc.requires_grad_(False)
    generator_adversarial_loss(disc, fake).backward()
    disc.requires_grad_(True)
    species = [p.grad for n, p in gen.named_parameters() if n.startswith("task.species.")]
    assert all(g is None or g.abs().sum() == 0 for g in species)


def test_relaxed_species():
    torch.manual_seed(0)
    logits = torch.randn(5, 118, requires_grad=True)
    for gumbel in (True, False):
        for hard in (True, False):
            p = relaxed_species(logits, tau=0.7, hard=hard, gumbel=gumbel)
            assert p.shape == (5, 119)
            assert torch.all(p[:, 0] == 0)
            assert torch.allclose(p.sum(-1), torch.ones(5))
            if hard:
                assert torch.all((p == 0) | (p == 1))
            (p[:, 1:] * torch.arange(118.0)).sum().backward()
            assert logits.grad.abs().sum() > 0
            logits.grad = None
    # without Gumbel noise, the hard sample is the arg-max
    p = relaxed_species(logits, hard=True, gumbel=False)
    assert torch.equal(p[:, 1:].argmax(-1), logits.argmax(-1))


@pytest.mark.parametrize("kind", ["nonsaturating", "wgan-gp"])
def test_discriminator_loss_trains_only_the_critic(setup, kind):
    gen, disc, batch = setup
    c = corrupt_batch(batch, "species", 0.2, generator=torch.Generator().manual_seed(2))
    fake, _, _ = generate(gen, batch, c)
    gen.zero_grad()
    disc.zero_grad()
    out = discriminator_loss(disc, real_batch(batch), fake, kind)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert disc.head.net[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in gen.parameters())
    if kind == "wgan-gp":
        assert out["gp"] >= 0


def test_real_batch_jitter_is_tiny(setup):
    _, _, batch = setup
    from atomssl.task.denoise import graph_index, min_distances

    real = real_batch(batch, 1e-3, torch.Generator().manual_seed(0))
    dmin = min_distances(batch)[graph_index(batch)]
    dev = (real.pos - batch.pos).abs()
    assert torch.all(dev <= 1e-3 * dmin[:, None] + 1e-7) and dev.max() > 0
    assert torch.equal(real.z_soft.argmax(-1), batch.z)


@pytest.mark.slow
def test_gan_run_writes_checkpoints_that_load(tmp_path):
    config = {
        "data": {"sources": [{"name": "synthetic", "n": 8}], "batch_size": 4},
        "generator": {"backbone": BACKBONE},
        "discriminator": {"classifier_steps": 2},
        "optim": {"d_every": 2, "lr_d": 1e-5},
        "train": {"steps": 4, "log_every": 2},
    }
    summary = gan(config, run_dir=tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.csv", "classifier.csv", "loss_curve.png", "summary.json"):
        assert (run / name).is_file(), name
    gen = Generator.from_checkpoint(summary["generator_checkpoint"])
    disc = Discriminator.from_checkpoint(summary["discriminator_checkpoint"])
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "d_loss" in rows[0]
    batch = collate([to_graph(s, cutoff=5.0) for s in synthetic_crystals(2)])
    assert disc(real_batch(batch, 0.0)).shape == (2,)
    assert gen.train_sigma == pytest.approx(0.1)


def test_composition_critic_reads_element_fractions_and_round_trips(setup, tmp_path):
    from atomssl.generate._discriminator import element_fractions

    gen, _, batch = setup
    torch.manual_seed(1)
    disc = Discriminator.build(BACKBONE, composition=True)
    frac = element_fractions(batch)
    assert frac.shape == (batch.num_graphs, 119)
    torch.testing.assert_close(frac.sum(-1), torch.ones(batch.num_graphs, dtype=frac.dtype))
    n0 = int((batch.batch == 0).sum())
    z0 = batch.z[:n0]
    assert abs(float(frac[0, int(z0[0])]) - float((z0 == z0[0]).float().mean())) < 1e-6
    # species-only view: the gradient reaches the species head (through z_soft: embedding and fractions)
    grads = _adversarial_grads(gen, disc, batch, positions="real", gumbel=False, hard=False)
    assert sum(v for n, v in grads.items() if n.startswith("task.species.")) > 0
    path = disc.save(tmp_path / "d.pt")
    again = Discriminator.from_checkpoint(path)
    assert again.head.composition
    disc.eval(), again.eval()
    with torch.no_grad():
        torch.testing.assert_close(disc(real_batch(batch, 0.0)), again(real_batch(batch, 0.0)))


def test_chemistry_critic_features_are_smact_oxidation_states_and_reach_the_generator(
    setup, tmp_path
):
    from smact import Element

    from atomssl.generate._discriminator import (
        N_CHEMISTRY,
        OXIDATION_RANGE,
        chemistry_descriptors,
        chemistry_features,
        element_fractions,
    )

    table = chemistry_descriptors()
    assert (
        table.shape == (119, N_CHEMISTRY) and not table[0].any()
    )  # the mask token has no chemistry
    for z, sym in ((8, "O"), (26, "Fe"), (17, "Cl")):
        states = Element(sym).oxidation_states_smact14
        assert [
            OXIDATION_RANGE[i] for i in torch.nonzero(table[z, : len(OXIDATION_RANGE)]).flatten()
        ] == sorted(states)
        assert float(table[z, -4]) == min(states) / 8 and float(table[z, -3]) == max(states) / 8
    gen, _, batch = setup
    frac = element_fractions(batch)
    feats = chemistry_features(frac)
    n0 = int((batch.batch == 0).sum())
    brute = torch.stack([table[int(z)] for z in batch.z[:n0]]).mean(0).to(feats.dtype)
    torch.testing.assert_close(feats[0], brute)
    torch.manual_seed(2)
    disc = Discriminator.build(BACKBONE, chemistry=True)
    grads = _adversarial_grads(gen, disc, batch, positions="real", gumbel=False, hard=False)
    assert sum(v for n, v in grads.items() if n.startswith("task.species.")) > 0
    again = Discriminator.from_checkpoint(disc.save(tmp_path / "d.pt"))
    assert again.head.chemistry and not again.head.composition
    disc.eval(), again.eval()
    with torch.no_grad():
        torch.testing.assert_close(disc(real_batch(batch, 0.0)), again(real_batch(batch, 0.0)))
