"""Validity-constrained species decoding: best-first enumeration against brute force, the
constraint against SMACT, and the fallback to arg-max."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from ase.build import bulk

from atomssl.data import Structure
from atomssl.errors import ConfigError
from atomssl.generate import Generator, composition_validity, corrupt_structures, repair
from atomssl.generate._decoding import best_first_assignments, choose_species

NA, CL, MG, O, AR = 11, 17, 12, 8, 18


def _probs(rows: dict[int, float], n_rows: int) -> np.ndarray:
    p = np.full((n_rows, 118), 1e-6)
    for z, v in rows.items():
        p[:, z - 1] = v
    return p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("seed", range(4))
def test_best_first_matches_brute_force_order(seed):
    rng = np.random.default_rng(seed)
    m, n, k = 3, 6, 4
    logp = np.log(rng.dirichlet(np.ones(n), size=m))
    got = list(best_first_assignments(logp, top_k=k, limit=10_000))
    top = np.argsort(-logp, axis=1)[:, :k]
    brute = sorted(
        (float(sum(logp[a, c[a]] for a in range(m))), c) for c in itertools.product(*top)
    )[::-1]
    assert len(got) == k**m
    np.testing.assert_allclose([s for s, _ in got], [s for s, _ in brute], rtol=0, atol=1e-12)
    for s, e in got:  # every yielded score is the score of its own assignment
        assert abs(s - logp[np.arange(m), e].sum()) < 1e-12
    assert len(list(best_first_assignments(logp, top_k=k, limit=5))) == 5


def test_valid_decoding_picks_the_most_probable_valid_composition():
    # NaCl with the Cl sublattice masked; the model prefers Ar (invalid: NaAr), then Cl
    numbers = np.array([NA, NA, 0, 0])
    masked = numbers == 0
    p = _probs({AR: 0.6, CL: 0.3, O: 0.1}, 2)
    arg = choose_species(p, numbers, masked, "argmax")
    assert arg.tolist() == [NA, NA, AR, AR] and not composition_validity(arg)
    val = choose_species(p, numbers, masked, "valid")
    assert val.tolist() == [NA, NA, CL, CL] and composition_validity(val)
    assert (val[~masked] == numbers[~masked]).all()


def test_valid_decoding_finds_a_shared_species_beyond_per_atom_top_k():
    # Mg2 + two masked atoms; O is ranked 7th for each atom: only the one-species candidates reach it
    numbers = np.array([MG, MG, 0, 0])
    masked = numbers == 0
    ranked = {AR: 0.2, 2: 0.19, 10: 0.18, 36: 0.17, 54: 0.16, 86: 0.05, O: 0.04}
    p = _probs(ranked, 2)
    out = choose_species(p, numbers, masked, "valid", top_k=5)
    # no per-atom top-5 combination of noble gases is valid; O (summed rank 7) is outside top_k=5 too
    assert not composition_validity(out) and out.tolist() == [MG, MG, AR, AR]  # fallback: arg-max
    out = choose_species(p, numbers, masked, "valid", top_k=7)
    assert out.tolist() == [MG, MG, O, O] and composition_validity(out)


def test_decoding_errors_and_no_mask():
    numbers = np.array([NA, CL])
    assert choose_species(np.zeros((0, 118)), numbers, np.zeros(2, bool), "valid").tolist() == [
        NA,
        CL,
    ]
    with pytest.raises(ConfigError):
        choose_species(np.zeros((0, 118)), numbers, np.zeros(2, bool), "beam")
    with pytest.raises(ValueError):
        choose_species(np.zeros((2, 118)), numbers, np.array([True, False]), "valid")


def test_repair_with_valid_decoding_keeps_positions_and_gives_valid_compositions():
    torch.manual_seed(0)
    gen = Generator.build({"name": "equiformer", "size": "tiny", "num_layers": 1}).eval()
    s = Structure.from_ase(bulk("NaCl", "rocksalt", a=5.64, cubic=True))
    cs = corrupt_structures([s] * 3, "species", 0.1, seed=1)
    corrupted = [c[1] for c in cs]
    a = repair(gen, corrupted, d_min=[c[3] for c in cs], decoding="argmax")
    v = repair(gen, corrupted, d_min=[c[3] for c in cs], decoding="valid")
    for (ra, pa), (rv, pv), c in zip(a, v, corrupted):
        np.testing.assert_array_equal(ra.positions, rv.positions)
        np.testing.assert_array_equal(pa, pv)
        np.testing.assert_array_equal(rv.numbers[c.numbers > 0], c.numbers[c.numbers > 0])
        assert composition_validity(rv)  # an untrained model: only the constraint makes these valid
    with pytest.raises(ConfigError):
        repair(gen, corrupted, decoding="beam")
