"""benchmarks/readers.py: its generators, readers, judging and counting, on a few files in tmp_path.

Nothing here writes into benchmarks/results.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("pymatgen")
pytest.importorskip("ase")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "readers_benchmark", ROOT / "benchmarks" / "readers.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


def _linbo3():
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup(
        "R3c",
        Lattice.hexagonal(5.148, 13.863),
        ["Li", "Nb", "O"],
        [[0, 0, 0.2829], [0, 0, 0.0], [0.0492, 0.3446, 0.0647]],
    )


def _graphite():
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup(
        "P6_3/mmc",
        Lattice.hexagonal(2.464, 6.711),
        ["C", "C"],
        [[0, 0, 0.25], [1 / 3, 2 / 3, 0.25]],
    )


@pytest.fixture(scope="module")
def records(bench, tmp_path_factory):
    """Three generated files, read and judged: the rhombohedral-axes LiNbO3 (pymatgen keeps the
    asymmetric unit), graphite with 3-decimal coordinates (symmetry images 0.001-0.005 A apart),
    and a CifWriter file truncated inside the atom-site loop."""
    tmp = tmp_path_factory.mktemp("readers")
    linbo3, graphite = _linbo3(), _graphite()
    rh = bench.rhombohedral_cif(linbo3, "LiNbO3", "{rhombohedral axes}")
    assert (
        rh is not None
        and "'R 3 c {rhombohedral axes}'" in rh
        and "_symmetry_equiv_pos_as_xyz" not in rh
    )
    text, symmetrized = bench.symmetrized_cif(graphite)
    assert symmetrized
    three = bench.three_decimals(text)
    assert three is not None and " 0.333 " in three
    cut = bench.truncated(str(bench.symmetrized_cif(linbo3)[0]), inside_row=False)
    assert cut is not None and "_atom_site_fract_x" in cut
    items = [
        bench.Item(
            "derived: rhombohedral axes, no operations",
            "LiNbO3_rh.cif",
            bench._write(tmp / "LiNbO3_rh.cif", rh),
            [bench.truth_of_structure(linbo3)],
        ),
        bench.Item(
            "derived: 3-decimal coordinates",
            "graphite_3dec.cif",
            bench._write(tmp / "graphite_3dec.cif", three),
            [bench.truth_of_structure(graphite)],
        ),
        bench.Item(
            "derived: truncated at a row boundary",
            "LiNbO3_cut.cif",
            bench._write(tmp / "LiNbO3_cut.cif", cut),
            [bench.truth_of_structure(linbo3)],
        ),
    ]
    return {r["file"]: r for r in bench.run(items)}


def _verdicts(rec):
    return {name: r["verdict"] for name, r in rec["readers"].items()}


def test_asymmetric_unit_counts_as_pymatgen_wrong_atomssl_correct(records):
    rec = records["LiNbO3_rh.cif"]
    v = _verdicts(rec)
    assert v["pymatgen"] == "wrong"  # LiNbO (3 atoms): the asymmetric unit
    assert "composition" in rec["readers"]["pymatgen"]["why"]
    assert v["atomssl"] == "correct"
    assert v["ase"] in ("refused", "wrong")  # ASE does not know the setting note


def test_three_decimals_and_truncation(records):
    three = _verdicts(records["graphite_3dec.cif"])
    assert three["atomssl"] == "correct"
    assert "wrong" in (three["pymatgen"], three["ase"])  # a plain reader keeps the near-duplicates
    cut = _verdicts(records["LiNbO3_cut.cif"])
    assert cut["atomssl"] == "refused"
    assert (
        cut["pymatgen"] == "wrong" and cut["ase"] == "wrong"
    )  # half the atoms, read as a structure


def test_summary_counts_and_problem_lists(bench, records):
    recs = list(records.values())
    summary = bench.summarize(recs)
    assert summary["all"]["files"] == 3
    for name, s in summary["all"]["readers"].items():
        assert s["correct"] + s["wrong"] + s["refused"] + s["unknown"] == 3, name
        assert sum(s["refused_by"].values()) == s["refused"]
        assert s["wrong_silent"] <= s["wrong"]
    a = summary["all"]["readers"]["atomssl"]
    assert (a["correct"], a["wrong"], a["refused"]) == (2, 0, 1)
    assert summary["all"]["readers"]["pymatgen"]["wrong"] >= 2
    assert summary["derived: rhombohedral axes, no operations"]["files"] == 1
    problems = bench.problem_lists(recs)
    assert problems["atomssl_wrong"] == [] and problems["atomssl_crashed"] == []
    assert (
        problems["atomssl_refused_plain_correct"] == []
    )  # the truncated file: nobody reads it correctly


def test_judge_rules(bench):
    truth = bench.Truth("source structure", {"Li": 2, "O": 1}, density=0.1)
    good = bench.Reading(blocks=[bench._block({"Li": 8, "O": 4}, 120.0)])
    assert bench.judge(good, [truth]) == ("correct", "")
    assert (
        bench.judge(bench.Reading(blocks=[bench._block({"Li": 8, "O": 4}, 100.0)]), [truth])[0]
        == "wrong"
    )  # density
    assert bench.judge(bench.Reading(refused="ValueError"), [truth]) == (
        "refused",
        "ValueError",
    )  # never wrong
    assert (
        bench.judge(bench.Reading(blocks=[]), [truth, truth])[0] == "wrong"
    )  # a block silently dropped
    assert bench.judge(good, [bench.Truth(None)])[0] == "unknown"


def test_declared_truth_z_conventions_and_duplicates(bench):
    lines = ["_chemical_formula_sum 'Li8 O4'", "_cell_formula_units_Z 4"]
    t = bench.declared_truth(lines)
    assert t.counts == [48.0, 12.0]  # Z x formula, or the formula as the cell content (CifWriter)
    # AMCSD files repeat the tag with '' after the real one: the non-empty value is the declaration
    t = bench.declared_truth(["_chemical_formula_sum 'Ag2 P O4 H'", "_chemical_formula_sum ''"])
    assert t.composition == {"Ag": 2, "P": 1, "O": 4, "H": 1} and not t.counts
    t = bench.declared_truth(["_chemical_formula_moiety '2(C6 H8 N2 2+), 2(Cl1 1-), H2 O'"])
    assert t.source.startswith("_chemical_formula_moiety") and t.composition == {
        "C": 12,
        "H": 18,
        "N": 4,
        "Cl": 2,
        "O": 1,
    }
    assert bench.declared_truth(["_chemical_formula_sum ?"]).source is None


def test_quick_never_writes_into_results(bench, tmp_path):
    assert bench.output_folder(None, quick=False) == bench.RESULTS
    quick = bench.output_folder(None, quick=True)
    assert not quick.resolve().is_relative_to(bench.RESULTS.resolve())
    quick.rmdir()
    with pytest.raises(SystemExit):
        bench.output_folder(bench.RESULTS, quick=True)
    assert bench.output_folder(tmp_path, quick=True) == tmp_path


def test_report_first_line_is_the_command(bench, records):
    recs = list(records.values())
    rep = {
        "command": bench._command(["--quick"]),
        "date": "today",
        "seconds_total": 1.0,
        "quick": True,
        "settings": {"limit": 3},
        "versions": {"ase": "x"},
        "summary": bench.summarize(recs),
        "problems": bench.problem_lists(recs),
    }
    md = bench.render_markdown(rep)
    assert (
        md.splitlines()[0] == f"`{rep['command']}`"
        and "benchmarks/readers.py --quick" in md.splitlines()[0]
    )
    assert "| atomssl | 3 | 2 | 0 |" in md
