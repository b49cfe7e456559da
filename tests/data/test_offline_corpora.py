"""The offline corpora read from installed wheels: qm9, minerals, csd_molecular_crystals, all_offline."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest

from atomssl.data import (
    CSD_MOLECULAR_CRYSTALS_COUNT,
    DATASETS,
    MINERALS_COUNT,
    OFFLINE_CORPORA,
    QM9_COUNT,
    QM9_TARGETS,
    DatasetError,
    _minerals,
    _molecular_crystals,
    _qm9,
    _qm9_parse,
    all_offline_excluded_ids,
    load_all_offline,
    load_csd_molecular_crystals,
    load_dataset,
    load_minerals,
    load_qm9,
    matbench_folds,
    qm9_split,
    skipped_structures,
)
from atomssl.errors import MissingFileError


@pytest.fixture(scope="module")
def qm9_head():
    return load_qm9(limit=20)


# --------------------------------------------------------------------------- qm9
def test_qm9_molecule_1_is_methane_with_its_targets(qm9_head):
    m = qm9_head[0]
    assert m.id == "qm9-000001" and m.formula == "CH4" and m.source == "qm9"
    assert not m.pbc.any() and not m.cell.any()
    m.validate()
    # the row of dsgdb9nsd_000001.xyz in qm9pack/data/qm9_part1.csv, in the file's units
    expected = {
        "A": 157.7118,
        "B": 157.70997,
        "C": 157.70699,
        "mu": 0.0,
        "alpha": 13.21,
        "homo": -0.3877,
        "lumo": 0.1171,
        "gap": 0.5048,
        "r2": 35.3641,
        "zpve": 0.044749,
        "U0": -40.47893,
        "U": -40.476062,
        "H": -40.475117,
        "G": -40.498597,
        "Cv": 6.469,
        # U0 - (U0(C) + 4 U0(H)) with QM9's atomic references: -40.47893 + 37.846772 + 4 * 0.500273
        "U0_atom": -0.631066,
        "U_atom": -0.635279,
        "H_atom": -0.639058,
        "G_atom": -0.593572,
        "alpha_xx": 13.211,
        "alpha_zz": 13.211,
        "alpha_xy": 0.0,
        "qm9_index": 1,
    }
    for name, value in expected.items():
        assert m.labels[name] == pytest.approx(value, abs=1e-9), name
    assert m.labels["smiles"] == "C" and m.labels["inchi"] == "InChI=1S/CH4/h1H4"
    np.testing.assert_allclose(m.positions[0], [-0.0126981359, 1.0858041578, 0.0080009958])
    assert np.linalg.norm(m.positions[1:] - m.positions[0], axis=1) == pytest.approx(
        [1.0919] * 4, abs=1e-3
    )  # C-H


def test_qm9_all_19_targets_and_units(qm9_head):
    assert len(QM9_TARGETS) == 19
    assert set(QM9_TARGETS) == {
        "mu",
        "alpha",
        "homo",
        "lumo",
        "gap",
        "r2",
        "zpve",
        "U0",
        "U",
        "H",
        "G",
        "Cv",
        "U0_atom",
        "U_atom",
        "H_atom",
        "G_atom",
        "A",
        "B",
        "C",
    }
    assert (
        QM9_TARGETS["U0"][0] == "Ha"
        and QM9_TARGETS["mu"][0] == "D"
        and QM9_TARGETS["A"][0] == "GHz"
    )
    for s in qm9_head:
        assert set(QM9_TARGETS) <= set(s.labels)
        assert s.labels["gap"] == pytest.approx(s.labels["lumo"] - s.labels["homo"], abs=2e-4)
    assert [s.id for s in qm9_head[:3]] == ["qm9-000001", "qm9-000002", "qm9-000003"]
    assert [s.formula for s in qm9_head[:3]] == ["CH4", "H3N", "H2O"]
    assert len({s.id for s in qm9_head}) == len(qm9_head)


def test_qm9_row_count_of_the_wheel():
    paths = _qm9_parse.qm9_paths()
    assert _qm9_parse._count_rows(paths[:3]) == QM9_COUNT == 130831
    assert len(_qm9_parse._read_polarizability(paths[3])) == QM9_COUNT


def test_load_dataset_qm9_limit_and_frequencies():
    head = load_dataset("qm9", limit=10)
    assert len(head) == 10 and [s.index for s in head] == list(range(10))
    assert "frequencies" not in head[0].labels
    freq = load_qm9(limit=3, frequencies=True)
    methane = freq[0].labels["frequencies"]
    assert (
        len(methane) == 3 * 5 - 6
        and methane[0] == pytest.approx(1341.307)
        and methane[-1] == pytest.approx(3151.7078)
    )
    fresh = load_qm9(limit=5, cache=False)  # parses the first rows, whether or not a cache exists
    for a, b in zip(fresh, head):
        assert a.id == b.id and a.labels == b.labels
        np.testing.assert_array_equal(a.positions, b.positions)
    assert load_qm9(limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        load_qm9(limit=-1)


def _small_qm9_folder(tmp_path, n_rows=6):
    """qm9pack's four tables, each cut to its first ``n_rows`` rows."""
    paths = _qm9.qm9_paths()
    for src in paths:
        with open(src, newline="") as fh:
            rows = [row for _, row in zip(range(n_rows + 1), csv.reader(fh))]
        with open(tmp_path / src.name, "w", newline="") as out:
            csv.writer(out, quoting=csv.QUOTE_MINIMAL).writerows(rows)
    return tmp_path


def test_qm9_wrong_count_fails_loudly(tmp_path, monkeypatch):
    monkeypatch.setenv("ATOMSSL_CACHE", str(tmp_path / "cache"))
    folder = _small_qm9_folder(tmp_path)
    with pytest.raises(
        DatasetError,
        match=r"expected 130831 QM9 molecules, found 18.*pip install --no-deps qm9pack==1\.0\.3",
    ):
        load_qm9(path=folder)
    with pytest.raises(DatasetError, match="expected 130831"):
        load_qm9(limit=2, path=folder)


def test_qm9_bad_rows_are_skipped_with_a_reason(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ATOMSSL_CACHE", str(tmp_path / "cache"))
    folder = _small_qm9_folder(tmp_path)
    part = folder / "qm9_part1.csv"
    rows = list(csv.reader(open(part, newline="")))
    rows[2][7] = (
        "[[0.,0.,0.],[0.,0.,0.01],[1.,0.,0.],[0.,1.,0.]]"  # ammonia with N and H 0.01 A apart
    )
    rows[3][7] = "[[0.,0.,0.],[1.,0.]]"  # water with one coordinate missing
    with open(part, "w", newline="") as out:
        csv.writer(out).writerows(rows)
    for name in ("qm9_part2.csv", "qm9_part3.csv"):  # headers only
        (folder / name).write_text(open(folder / name).readline())
    for module in (_qm9, _qm9_parse):  # the count the parser checks and the loader reports
        monkeypatch.setattr(module, "QM9_COUNT", 6)
    with caplog.at_level(logging.WARNING, logger="atomssl.data"):
        mols = load_qm9(path=folder, cache=False)
    assert [s.id for s in mols] == ["qm9-000001", "qm9-000004", "qm9-000005", "qm9-000006"]
    skipped = dict(skipped_structures("qm9"))
    assert set(skipped) == {"qm9-000002", "qm9-000003"}
    assert skipped["qm9-000002"].startswith("overlapping atoms")
    assert (
        skipped["qm9-000003"].startswith("unreadable")
        and "coordinates for 3 atoms" in skipped["qm9-000003"]
    )
    assert "qm9: skipped 2 structure(s) of 6" in caplog.text


def test_qm9_missing_wheel(monkeypatch):
    monkeypatch.setattr(_qm9_parse, "_PACKAGE", ("qm9pack-not-installed", "qm9pack_not_installed"))
    with pytest.raises(
        MissingFileError, match=r"data/qm9_part1\.csv.*pip install --no-deps qm9pack==1\.0\.3"
    ):
        load_dataset("qm9", limit=1)


def test_qm9_split_is_fixed_disjoint_and_complete():
    a, b = qm9_split(), qm9_split()
    assert {k: len(v) for k, v in a.items()} == {"train": 104665, "val": 13083, "test": 13083}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    everything = np.concatenate(list(a.values()))
    assert len(np.unique(everything)) == QM9_COUNT
    # fixed by a hash of (seed, id), independent of numpy's generators: these never change
    assert a["test"][:5].tolist() == [
        "qm9-000003",
        "qm9-000007",
        "qm9-000011",
        "qm9-000012",
        "qm9-000049",
    ]
    other = qm9_split(seed=1)
    assert not np.array_equal(other["test"], a["test"])
    assert len(qm9_split(test_fraction=0.2, val_fraction=0.0)["test"]) == round(0.2 * QM9_COUNT)
    with pytest.raises(ValueError, match="fractions"):
        qm9_split(test_fraction=0.8, val_fraction=0.3)


@pytest.mark.slow
def test_qm9_full_load_count_ids_labels_split():
    """All 130,831 molecules (the first run parses the tables, ~40 s, then ~3 s from the cache)."""
    mols = load_qm9(frequencies=True)
    assert len(mols) == QM9_COUNT and skipped_structures("qm9") == []
    ids = [s.id for s in mols]
    assert len(set(ids)) == QM9_COUNT and ids[-1] == "qm9-133885"
    for name in QM9_TARGETS:
        values = np.array([s.labels[name] for s in mols])
        assert np.isfinite(values).all(), name
    n_freq = np.array([len(s.labels["frequencies"]) for s in mols])
    n_atoms = np.array([s.n_atoms for s in mols])
    assert np.isin(n_freq - 3 * n_atoms, (-6, -5)).all()
    assert sum(bool(s.warnings) for s in mols) == 334  # molecules listed with two frequency sets
    assert sum(n_atoms) == 2359210 and not any(s.pbc.any() for s in mols)
    test = load_qm9(split="test")
    assert [s.id for s in test] == qm9_split()["test"].tolist()


# --------------------------------------------------------------------------- minerals
def test_minerals():
    minerals = load_minerals()
    assert len(minerals) == MINERALS_COUNT == 180 and skipped_structures("minerals") == []
    ids = [s.id for s in minerals]
    assert len(set(ids)) == 180
    first = minerals[0]
    assert first.id == "Cinnabar" and first.formula == "Hg3S3" and first.pbc.all()
    assert first.labels == {
        "mineral": "Cinnabar",
        "aflow": "AB_hP6_154_a_b",
        "pearson": "hP6",
        "strukturbericht": "B9",
        "n_elems": 2,
    }
    assert (
        "Clathrate [A_cP46_223_dik]" in ids and "Wurtzite" in ids
    )  # shared names carry their AFLOW label
    assert sum("[" in i for i in ids) == 10
    for s in minerals:
        assert set(s.labels) == {"mineral", "aflow", "pearson", "strukturbericht", "n_elems"}
        assert (
            int(s.labels["pearson"][2:]) % s.n_atoms == 0
            or s.n_atoms % int(s.labels["pearson"][2:]) == 0
        )
    assert [s.id for s in load_dataset("minerals", limit=3)] == ids[:3]


def test_minerals_missing_wheel(monkeypatch):
    monkeypatch.setattr(
        _minerals,
        "_FILE",
        ("robocrys-not-installed", "robocrys_absent", "condense/mineral_db.json.gz"),
    )
    with pytest.raises(MissingFileError, match=r"pip install --no-deps robocrys==0\.2\.13"):
        load_minerals()


# --------------------------------------------------------------------------- csd_molecular_crystals
def test_csd_molecular_crystals():
    crystals = load_csd_molecular_crystals()
    assert len(crystals) == CSD_MOLECULAR_CRYSTALS_COUNT == 149
    ids = [s.id for s in crystals]
    assert len(set(ids)) == 149 and ids[0] == "BIYRIM01" and "COUMAR01" in ids
    assert all(s.pbc.all() for s in crystals)
    assert [s.index for s in crystals] == list(range(149))
    first = crystals[0]
    assert (
        first.formula == "C36H28N4O8"
        and first.labels["mol_formula"] == "C18H14N2O4"
        and first.labels["Z"] == 2
    )
    assert first.labels["spg_num"] == 14 and first.labels["database"] == "mech.db"
    for s in crystals:
        assert s.labels["csd_code"] == s.id
        assert {
            "space_group",
            "spg_num",
            "Z",
            "Zprime",
            "smiles",
            "mol_formula",
            "mol_weight",
            "lattice_type",
        } <= set(s.labels)
    # COUMAR01 is in both of pyxtal's databases: kept once, the other copy reported
    assert skipped_structures("csd_molecular_crystals") == [
        ("COUMAR01 (test.db)", "duplicate: the same crystal as COUMAR01 of mech.db")
    ]
    assert {s.labels["database"] for s in crystals} == {"mech.db", "test.db"}
    assert [s.id for s in load_dataset("csd_molecular_crystals", limit=2)] == ids[:2]


def test_csd_missing_wheel(monkeypatch):
    monkeypatch.setattr(_molecular_crystals, "_PACKAGE", ("pyxtal-not-installed", "pyxtal_absent"))
    with pytest.raises(
        MissingFileError, match=r"database/mech\.db.*pip install --no-deps pyxtal==1\.1\.5"
    ):
        load_csd_molecular_crystals()


# --------------------------------------------------------------------------- all_offline
def test_all_offline_registered_and_labelled():
    assert {"qm9", "minerals", "csd_molecular_crystals", "all_offline"} <= set(DATASETS)
    some = load_dataset("all_offline", limit_per_corpus=3)
    assert [s.labels["corpus"] for s in some] == [c for c in OFFLINE_CORPORA for _ in range(3)]
    assert len({s.id for s in some}) == len(some)
    assert [s.id for s in some if s.labels["corpus"] == "qm9"] == [
        "qm9-000001",
        "qm9-000002",
        "qm9-000003",
    ]
    assert len(load_all_offline(limit=7)) == 7
    with pytest.raises(ValueError, match="unknown corpus"):
        load_all_offline(corpora=["nope"])


@pytest.mark.parametrize("k", range(5))
def test_exclude_matbench_fold_is_exactly_the_official_test_rows(k):
    train, test = matbench_folds()[k]
    kept = load_all_offline(corpora=["matbench_dielectric"], exclude_matbench_fold=k)
    excluded = all_offline_excluded_ids(exclude_matbench_fold=k)
    assert set(excluded) == {"matbench_dielectric"}
    assert excluded["matbench_dielectric"] == [f"mb-dielectric-{i + 1:04d}" for i in sorted(test)]
    assert [s.id for s in kept] == [f"mb-dielectric-{i + 1:04d}" for i in sorted(train)]
    assert [s.index for s in kept] == sorted(train.tolist())
    assert not set(excluded["matbench_dielectric"]) & {s.id for s in kept}


def test_exclude_matbench_entirely_and_bad_fold():
    kept = load_all_offline(corpora=["matbench_dielectric", "minerals"], exclude_matbench=True)
    assert {s.labels["corpus"] for s in kept} == {"minerals"} and len(kept) == 180
    assert len(all_offline_excluded_ids(exclude_matbench=True)["matbench_dielectric"]) == 4764
    for bad in (5, -1, 1.5):
        with pytest.raises(ValueError, match="exclude_matbench_fold"):
            load_all_offline(corpora=["minerals"], exclude_matbench_fold=bad)


def test_exclude_qm9_test_split():
    excluded = all_offline_excluded_ids(exclude_qm9="test")["qm9"]
    assert excluded == qm9_split()["test"].tolist()
    head = load_all_offline(corpora=["qm9"], exclude_qm9="test", limit=50)
    assert len(head) == 50 and not {s.id for s in head} & set(excluded)
    assert "qm9-000003" in excluded and "qm9-000003" not in {s.id for s in head}
    with pytest.raises(ValueError, match="exclude_qm9"):
        load_all_offline(corpora=["qm9"], exclude_qm9="holdout")


def test_drop_duplicates_removes_the_minerals_copied_from_aflow():
    kept = load_all_offline(corpora=["aflow_prototypes", "minerals"], drop_duplicates=True)
    assert len(kept) == 288
    skipped = skipped_structures("minerals")
    assert len(skipped) == 180 and skipped[0] == (
        "Cinnabar",
        "duplicate: identical to hP6-HgS (aflow_prototypes)",
    )


def test_training_data_source_and_cli_import(tmp_path):
    from atomssl.cli.main import main
    from atomssl.data import StructureStore
    from atomssl.train._data import load_source

    assert [s.id for s in load_source({"name": "csd_molecular_crystals", "limit": 2})] == [
        "BIYRIM01",
        "DAHLOQ",
    ]
    out = tmp_path / "s.db"
    assert (
        main(
            ["data", "import", "dataset:qm9?limit=3", "dataset:minerals?limit=2", "--out", str(out)]
        )
        == 0
    )
    store = StructureStore(out)
    assert [s.id for s in store] == [
        "qm9-000001",
        "qm9-000002",
        "qm9-000003",
        "Cinnabar",
        "High Pressure (4-7GPa) Tellurium",
    ]
    assert store[0].labels["U0"] == pytest.approx(-40.47893) and not store[0].pbc.any()
    assert main(["data", "import", "dataset:nope", "--out", str(tmp_path / "t.db")]) == 1


@pytest.mark.slow
def test_all_offline_counts():
    everything = load_all_offline()
    counts = {c: sum(s.labels["corpus"] == c for s in everything) for c in OFFLINE_CORPORA}
    assert counts == {
        "matbench_dielectric": 4764,
        "aflow_prototypes": 288,
        "minerals": 180,
        "csd_molecular_crystals": 149,
        "qm9": 130831,
    }
    assert len({s.id for s in everything}) == len(everything) == 136212
