"""Offline datasets: matbench_dielectric (+ cache), official folds, AFLOW prototypes, idealized
crystals, folders, the registry."""

from __future__ import annotations

import gzip
import json
import re

import numpy as np
import pytest

from atomssl.data import (
    DATASETS,
    MATBENCH_DIELECTRIC_COUNT,
    MATBENCH_DIELECTRIC_MAD,
    PRETRAINING_PROTOTYPES,
    DatasetError,
    FolderDataset,
    Structure,
    _matbench,
    _prototypes,
    aflow_prototypes,
    get_prototype,
    idealized_crystal,
    load_dataset,
    load_matbench_dielectric,
    matbench_folds,
    mean_absolute_deviation,
    nearest_distance,
)
from atomssl.data._cache import cache_path, source_key
from atomssl.errors import MissingFileError


@pytest.fixture(scope="module")
def dielectric():
    return load_matbench_dielectric()  # served from the user cache after the first run


# --------------------------------------------------------------------------- matbench_dielectric
def test_dielectric_count_mad_ids_labels(dielectric):
    assert len(dielectric) == MATBENCH_DIELECTRIC_COUNT == 4764
    n = np.array([s.labels["n"] for s in dielectric])
    assert mean_absolute_deviation(n) == pytest.approx(MATBENCH_DIELECTRIC_MAD, abs=1e-7)
    assert np.all(n >= 1.0)  # refractive indices
    assert [s.id for s in dielectric[:2]] == ["mb-dielectric-0001", "mb-dielectric-0002"]
    assert dielectric[-1].id == "mb-dielectric-4764"
    assert [s.index for s in dielectric[:3]] == [0, 1, 2]
    assert all(s.pbc.all() for s in dielectric)
    assert sum(s.n_atoms for s in dielectric) == 80487
    first = dielectric[0]
    assert first.formula == "K6S6" and first.labels["n"] == pytest.approx(1.7520636404)


def test_limit_keeps_the_first_rows(dielectric):
    head = load_matbench_dielectric(limit=7)
    assert [s.id for s in head] == [s.id for s in dielectric[:7]]
    for a, b in zip(head, dielectric):
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.numbers, b.numbers)
    assert load_matbench_dielectric(limit=0) == []


def test_fast_parser_matches_pymatgen(dielectric):
    from pymatgen.core import Structure as PmgStructure

    with gzip.open(_matbench.matbench_dielectric_path(), "rb") as fh:
        table = json.loads(fh.read())["structure"]
    rng = np.random.default_rng(1)
    for i in rng.choice(len(dielectric), 25, replace=False):
        ref = Structure.from_pymatgen(PmgStructure.from_dict(table[str(i)]))
        ours = dielectric[i]
        np.testing.assert_array_equal(ours.numbers, ref.numbers)
        np.testing.assert_allclose(ours.positions, ref.positions, atol=1e-8)
        np.testing.assert_allclose(ours.cell, ref.cell, atol=1e-12)


def test_cold_cache_build_equals_warm_and_is_reused(dielectric, tmp_path, monkeypatch):
    monkeypatch.setenv("ATOMSSL_CACHE", str(tmp_path))
    cpath = cache_path("matbench_dielectric", _matbench.matbench_dielectric_path())
    assert cpath.parent == tmp_path
    cpath.write_bytes(b"not an npz")  # a corrupt cache is rebuilt, not fatal
    cold = load_matbench_dielectric()
    assert len(cold) == len(dielectric)
    for a, b in zip(cold[::97], dielectric[::97]):
        assert a.id == b.id and a.labels == b.labels
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.cell, b.cell)
    with np.load(cpath, allow_pickle=False) as z:  # plain arrays, no pickled objects
        assert z["offsets"][-1] == 80487 and len(z["ids"]) == 4764

    def no_parsing(*_):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(_matbench, "_parse_dielectric", no_parsing)
    assert [s.id for s in load_matbench_dielectric(limit=3)] == [s.id for s in dielectric[:3]]


def _write_table(path, table):
    with gzip.open(path, "wt", compresslevel=1) as fh:
        json.dump(table, fh)


def test_wrong_count_or_mad_is_refused(dielectric, tmp_path, monkeypatch):
    monkeypatch.setenv("ATOMSSL_CACHE", str(tmp_path / "cache"))
    n = [s.labels["n"] for s in dielectric]
    # labels are checked before any structure is parsed, so placeholder structures suffice
    short = {"structure": {str(i): {} for i in range(100)}, "n": {str(i): n[i] for i in range(100)}}
    _write_table(tmp_path / "short.json.gz", short)
    with pytest.raises(
        DatasetError,
        match=r"expected 4764 structures, found 100.*pip install --no-deps crystal-toolkit",
    ):
        load_matbench_dielectric(path=tmp_path / "short.json.gz")
    n[0] += 5.0  # one label changed -> MAD no longer matches
    edited = {
        "structure": {str(i): {} for i in range(len(n))},
        "n": {str(i): v for i, v in enumerate(n)},
    }
    _write_table(tmp_path / "edited.json.gz", edited)
    with pytest.raises(DatasetError, match=r"label MAD 0\.80\d+ != expected 0\.8085347"):
        load_matbench_dielectric(path=tmp_path / "edited.json.gz")
    assert not (tmp_path / "cache").exists() or not any(
        (tmp_path / "cache").iterdir()
    )  # nothing cached


def test_missing_or_garbled_file(tmp_path, monkeypatch):
    with pytest.raises(
        MissingFileError, match=r"pip install --no-deps crystal-toolkit==2026\.7\.20"
    ):
        load_matbench_dielectric(path=tmp_path / "absent.json.gz")
    monkeypatch.setattr(_matbench, "find_package_file", lambda *a: None)
    with pytest.raises(
        MissingFileError,
        match=r"matbench_dielectric\.json\.gz.*pip install --no-deps crystal-toolkit",
    ):
        load_matbench_dielectric()
    monkeypatch.undo()
    bad = tmp_path / "garbled.json.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    monkeypatch.setenv("ATOMSSL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(Exception, match="garbled.json.gz.*not a matbench_dielectric table"):
        load_matbench_dielectric(path=bad)


# --------------------------------------------------------------------------- folds
def test_official_folds_partition_and_map_to_ids(dielectric):
    folds = matbench_folds("matbench_dielectric")
    assert len(folds) == 5
    everything = np.arange(len(dielectric))
    tests = np.concatenate([test for _, test in folds])
    np.testing.assert_array_equal(np.sort(tests), everything)  # test sets partition (so disjoint)
    for train, test in folds:
        assert len(np.intersect1d(train, test)) == 0
        np.testing.assert_array_equal(np.union1d(train, test), everything)
        assert abs(len(test) - len(dielectric) / 5) <= 1
    # the fold files name rows by matbench id; the loaded structures carry the same ids
    with open(_matbench.find_package_file(*_matbench._VALIDATION_FILE)) as fh:
        official = json.load(fh)["splits"]["matbench_dielectric"]
    for k in (0, 4):
        assert {dielectric[i].id for i in folds[k][1]} == set(official[f"fold_{k}"]["test"])


def test_folds_are_sklearn_kfold_of_dataset_order():
    """Independent check of the id -> row mapping: matbench made the splits with this KFold."""
    from sklearn.model_selection import KFold

    ref = KFold(5, shuffle=True, random_state=18012019).split(np.arange(MATBENCH_DIELECTRIC_COUNT))
    for (train, test), (rtrain, rtest) in zip(matbench_folds(), ref):
        np.testing.assert_array_equal(test, np.sort(rtest))
        np.testing.assert_array_equal(train, np.sort(rtrain))


def test_damaged_fold_cache_is_rebuilt(tmp_path, monkeypatch):
    reference = matbench_folds()
    monkeypatch.setenv("ATOMSSL_CACHE", str(tmp_path))
    path = _matbench.find_package_file(*_matbench._VALIDATION_FILE)
    damaged = {f"fold{k}_{p}": np.arange(3) for k in range(5) for p in ("train", "test")}
    cached = tmp_path / f"matbench_folds-matbench_dielectric-{source_key(path)}-v1.npz"
    np.savez(cached, **damaged)
    for (train, test), (rtrain, rtest) in zip(matbench_folds(), reference):
        np.testing.assert_array_equal(train, rtrain)
        np.testing.assert_array_equal(test, rtest)
    with np.load(cached) as z:  # replaced by the rebuilt folds
        assert len(z["fold0_test"]) == 953


def test_unknown_matbench_task():
    with pytest.raises(DatasetError, match="unknown matbench task"):
        matbench_folds("matbench_nonexistent")


# --------------------------------------------------------------------------- prototypes
@pytest.fixture(scope="module")
def prototypes():
    return aflow_prototypes()


def test_prototype_names_and_tags(prototypes):
    assert len(prototypes) == 288
    assert len({p.id for p in prototypes}) == 288
    by_id = {p.id: p for p in prototypes}
    expected = {  # name: (element, atoms in the stored primitive cell)
        "cF4-Cu": ("Cu", 1),
        "cI2-W": ("W", 1),
        "cP1-Po": ("Po", 1),
        "hP2-Mg": ("Mg", 2),
        "cP46-Si": ("Si", 46),
        "tP30-U": ("U", 30),
        "cF8-C": ("C", 2),
        "cI16-Li": ("Li", 8),
    }
    for name, (element, n) in expected.items():
        p = by_id[name]
        assert p.formula == f"{element}{n if n > 1 else ''}" and p.n_atoms == n, name
        assert p.labels["pearson"] == name.split("-")[0]
    assert (
        by_id["cF4-Cu"].labels["aflow"] == "A_cF4_225_a"
        and by_id["cF4-Cu"].labels["strukturbericht"] == "A1"
    )
    assert set(PRETRAINING_PROTOTYPES) <= set(by_id)
    for p in prototypes:
        assert p.labels["short_name"].startswith(p.labels["pearson"] + "-")
        assert p.id.startswith(p.labels["short_name"])


def test_prototypes_match_pymatgen_parser(prototypes):
    from pymatgen.core import Structure as PmgStructure

    with gzip.open(_prototypes.aflow_prototypes_path(), "rb") as fh:
        entries = json.loads(fh.read())
    for p, entry in zip(prototypes, entries):
        ref = Structure.from_pymatgen(PmgStructure.from_dict(entry["snl"]))
        np.testing.assert_array_equal(p.numbers, ref.numbers)
        np.testing.assert_allclose(p.positions, ref.positions, atol=1e-8)


def test_conventional_cells_match_pearson_counts(prototypes):
    """Pearson symbols count atoms per conventional cell (per rhombohedral cell for hR)."""
    mismatched = []
    for p in prototypes:
        expected = int(re.match(r"[amotch][PSCFIRA](\d+)", p.labels["pearson"]).group(1))
        n = (
            p.n_atoms
            if p.labels["pearson"].startswith("hR")
            else _prototypes.conventional_cell(p).n_atoms
        )
        if n != expected:
            mismatched.append(p.id)
    # pymatgen's library stores 4 of the 16 atoms of D0_c U3Si; every other entry is complete
    assert mismatched == ["tI16-U3Si"]


def test_get_prototype_by_any_unique_designation():
    assert get_prototype("cF4-Cu").labels["aflow"] == "A_cF4_225_a"
    assert get_prototype("A_cI2_229_a").id == "cI2-W"
    assert get_prototype("A3").id == "hP2-Mg"  # Strukturbericht
    assert get_prototype("diamond").id == "cF8-C"  # mineral, any case
    with pytest.raises(DatasetError, match="ambiguous.*hP4-C-A_hP4_194_bc"):
        get_prototype("hP4-C")
    with pytest.raises(DatasetError, match="unknown AFLOW prototype 'cF4-Xx'.*similar: cF4-Cu"):
        get_prototype("cF4-Xx")
    a, b = get_prototype("cF4-Cu"), get_prototype("cF4-Cu")
    a.positions += 1.0  # copies, the table is not shared
    assert not np.allclose(a.positions, b.positions)


# --------------------------------------------------------------------------- idealized crystals
def _min_distance(s: Structure) -> float:
    """Brute force, independent of atomssl's neighbour lists: a k-d tree over the 27 nearest
    images (enough when every cell height exceeds the nearest distance)."""
    from scipy.spatial import cKDTree

    shifts = (
        np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij")).reshape(3, -1).T
        @ s.cell
    )
    images = (s.positions[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    d, _ = cKDTree(images).query(s.positions, k=2)
    return float(d[:, 1].min())


def _heights(cell):
    volume = abs(np.linalg.det(cell))
    return volume / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)


@pytest.mark.parametrize("name", list(PRETRAINING_PROTOTYPES) + ["cF8-C", "cI16-Li"])
def test_idealized_crystal_unit_nearest_size_shape(name):
    s = idealized_crystal(name, n_min=4096)
    assert s.n_atoms >= 4096
    assert _min_distance(s) == pytest.approx(1.0, abs=1e-9)  # independent of atomssl's graphs
    assert s.labels["nearest_distance"] == pytest.approx(1.0)
    base = get_prototype(name)
    # the conventional cell is spglib-symmetrized: distances move by ~1e-6 relative
    assert s.labels["scale"] * nearest_distance(base) == pytest.approx(1.0, rel=1e-4)
    h = _heights(s.cell)
    assert h.max() / h.min() < 1.3  # near-cubic
    assert set(s.numbers.tolist()) == set(base.numbers.tolist())
    # density preserved: atoms per (scaled) volume equals the prototype's
    assert s.n_atoms / s.volume == pytest.approx(
        base.n_atoms / (base.volume * s.labels["scale"] ** 3), rel=1e-9
    )


def test_idealized_crystal_noise_statistics():
    clean = idealized_crystal("cI2-W", n_min=4096)
    sigma = 0.05
    noisy = idealized_crystal("cI2-W", n_min=4096, sigma=sigma, seed=3)
    np.testing.assert_array_equal(noisy.cell, clean.cell)
    d = (noisy.positions - clean.positions).reshape(-1)
    n = len(d)
    assert abs(d.mean()) < 4 * sigma / np.sqrt(n)
    assert d.std() == pytest.approx(sigma, rel=0.03)
    assert np.mean(np.abs(d) < sigma) == pytest.approx(0.6827, abs=0.02)  # Gaussian, not uniform
    again = idealized_crystal("cI2-W", n_min=4096, sigma=sigma, seed=3)
    np.testing.assert_array_equal(again.positions, noisy.positions)
    other = idealized_crystal("cI2-W", n_min=4096, sigma=sigma, seed=4)
    assert not np.allclose(other.positions, noisy.positions)


def test_idealized_crystal_angstrom_units():
    base = get_prototype("cF4-Cu")
    d0 = nearest_distance(base)  # 2.556 A for copper
    assert d0 == pytest.approx(3.615 / np.sqrt(2), rel=1e-3)
    clean = idealized_crystal(base, n_min=500, unit_nearest=False)
    assert _min_distance(clean) == pytest.approx(d0, rel=1e-9)
    noisy = idealized_crystal(base, n_min=500, sigma=0.1, unit_nearest=False, seed=0)
    assert (noisy.positions - clean.positions).std() == pytest.approx(0.1 * d0, rel=0.08)
    assert clean.n_atoms >= 500


def test_replication_counts_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        cell = np.diag(rng.uniform(2, 9, 3)) + np.triu(rng.uniform(-1.5, 1.5, (3, 3)), 1)
        n_cell, n_min = int(rng.integers(1, 40)), int(rng.integers(50, 5000))
        reps = _prototypes.replication_counts(cell, n_cell, n_min)
        assert np.prod(reps) * n_cell >= n_min
        h = _heights(cell)
        r = np.arange(1, 101)
        a, b, c = np.meshgrid(r, r, r, indexing="ij")
        ok = a * b * c * n_cell >= n_min
        side = np.maximum(np.maximum(a * h[0], b * h[1]), c * h[2])
        assert max(np.array(reps) * h) == pytest.approx(side[ok].min())  # smallest enclosing cube


def test_idealized_crystals_dataset():
    crystals = load_dataset("idealized_crystals", n_min=64, sigmas=(0.0, 0.02))
    assert [s.index for s in crystals] == list(range(2 * len(PRETRAINING_PROTOTYPES)))
    assert len({s.id for s in crystals}) == len(crystals)
    assert [s.labels["prototype"] for s in crystals[::2]] == list(PRETRAINING_PROTOTYPES)
    for clean, noisy in zip(crystals[::2], crystals[1::2]):
        assert clean.n_atoms >= 64 and noisy.labels["sigma"] == 0.02
        np.testing.assert_array_equal(clean.numbers, noisy.numbers)
        assert 0 < np.abs(noisy.positions - clean.positions).max() < 0.2


# --------------------------------------------------------------------------- folders and registry
def test_registry_and_folders(tmp_path):
    assert {"matbench_dielectric", "aflow_prototypes"} <= set(DATASETS)
    assert [s.id for s in load_dataset("matbench_dielectric", limit=2)] == [
        "mb-dielectric-0001",
        "mb-dielectric-0002",
    ]
    assert len(load_dataset("aflow_prototypes")) == 288

    from ase.io import write

    folder = tmp_path / "structures"
    (folder / "sub").mkdir(parents=True)
    write(folder / "cu.cif", get_prototype("cF4-Cu").to_ase())
    write(folder / "sub" / "POSCAR", get_prototype("hP2-Mg").to_ase(), format="vasp")
    (folder / "broken.cif").write_text("data_x\n_cell_length_a oops\n")
    with pytest.raises(Exception, match="broken.cif"):
        load_dataset(folder)
    ds = FolderDataset(folder, skip_bad=True)
    assert sorted(s.formula for s in ds) == ["Cu", "Mg2"] and len(ds.errors) == 1
    assert "broken.cif" in str(ds.errors[0])
    with pytest.raises(DatasetError, match="neither a dataset"):
        load_dataset("no_such_dataset")
    with pytest.raises(MissingFileError):
        FolderDataset(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no structure files"):
        FolderDataset(tmp_path / "empty")
