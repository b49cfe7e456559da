"""CIFs are read right or refused: space groups applied, declared formulas checked, two parsers
cross-checked, symmetry duplicates merged, partial occupancy by an explicit policy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice
from pymatgen.core import Structure as PmgStructure
from pymatgen.io.cif import CifParser

from atomssl.data import read
from atomssl.errors import DisorderError, OverlapError, StructureError, UnreadableFileError

CELL = "_cell_length_a {a}\n_cell_length_b {b}\n_cell_length_c {c}\n_cell_angle_alpha {al}\n_cell_angle_beta {be}\n_cell_angle_gamma {ga}\n"
SITES = "loop_\n_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n"
SITES_OCC = SITES + "_atom_site_occupancy\n"


def _cif(
    name, cell, sites, *, group="'P 1'", ops=None, formula=None, z=None, occupancy=False
) -> str:
    a, b, c, al, be, ga = cell
    text = f"data_{name}\n"
    if formula:
        text += f"_chemical_formula_sum '{formula}'\n"
    if z:
        text += f"_cell_formula_units_Z {z}\n"
    text += CELL.format(a=a, b=b, c=c, al=al, be=be, ga=ga)
    text += f"_symmetry_space_group_name_H-M {group}\n"
    if ops:
        text += "loop_\n_symmetry_equiv_pos_as_xyz\n" + "".join(f"'{op}'\n" for op in ops)
    text += SITES_OCC if occupancy else SITES
    for row in sites:
        text += " ".join(str(v) for v in row) + "\n"
    return text


def _plain_pymatgen(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CifParser(str(path)).parse_structures(primitive=False)[0]


# ------------------------------------------------------------------------------ LiNbO3 (R3c)
A_HEX, C_HEX = 5.148, 13.863
LINBO3_HEX = {"Li": (0, 0, 0.2829), "Nb": (0, 0, 0.0), "O": (0.0492, 0.3446, 0.0647)}
# obverse rhombohedral lattice vectors in hexagonal fractional coordinates
TO_RHOMBO = np.array([[2 / 3, 1 / 3, 1 / 3], [-1 / 3, 1 / 3, 1 / 3], [-1 / 3, -2 / 3, 1 / 3]])


def _linbo3_rhombohedral_cif(group="'R 3 c {rhombohedral axes}'") -> str:
    hexagonal = Lattice.hexagonal(A_HEX, C_HEX).matrix
    rh = TO_RHOMBO @ hexagonal
    a = np.linalg.norm(rh[0])
    alpha = np.degrees(np.arccos(rh[1] @ rh[2] / a**2))
    sites = []
    for el, h in LINBO3_HEX.items():
        r = np.linalg.solve(TO_RHOMBO.T, np.array(h))
        sites.append((f"{el}1", el, *(f"{x:.5f}" for x in r)))
    return _cif(
        "LiNbO3",
        (f"{a:.5f}",) * 3 + (f"{alpha:.5f}",) * 3,
        sites,
        group=group,
        formula="Li Nb O3",
        z=2,
    )


def _linbo3_reference() -> PmgStructure:
    return PmgStructure.from_spacegroup(
        "R3c", Lattice.hexagonal(A_HEX, C_HEX), list(LINBO3_HEX), list(LINBO3_HEX.values())
    )


def test_rhombohedral_axes_setting_is_resolved_not_truncated(tmp_path):
    path = tmp_path / "LiNbO3.cif"
    path.write_text(_linbo3_rhombohedral_cif())
    assert (
        len(_plain_pymatgen(path)) == 3
    )  # what atomssl returned before: the asymmetric unit, "ok"
    (s,) = read(path)
    assert s.formula == "Li2Nb2O6" and s.n_atoms == 10
    assert StructureMatcher().fit(s.to_pymatgen(), _linbo3_reference())
    assert any("rhombohedral-axes setting" in w for w in s.warnings)
    assert any("pymatgen rejected" in w for w in s.warnings)


def test_rhombohedral_cell_named_without_setting_is_not_tripled(tmp_path):
    # 'R -3 m' on a rhombohedral cell with no operations loop: both parsers apply the
    # hexagonal-axes operations (with centring) and make 36 atoms out of 2
    path = tmp_path / "Bi.cif"
    path.write_text(
        _cif(
            "Bi",
            (5.0, 5.0, 5.0, 57.0, 57.0, 57.0),
            [("Bi1", "Bi", 0.23, 0.23, 0.23)],
            group="'R -3 m'",
        )
    )
    assert len(_plain_pymatgen(path)) == 36
    (s,) = read(path)
    assert s.n_atoms == 2
    d = s.positions[1] - s.positions[0]
    frac = np.linalg.solve(s.cell.T, d)
    assert np.allclose(np.abs(frac - np.round(frac)), 0.46, atol=1e-6) or np.allclose(
        np.abs(frac - np.round(frac)), 0.54, atol=1e-6
    )


# ------------------------------------------------------------------------------ declared formula
NACL_OPS = ["x, y, z"]


def test_wrong_multiplicities_refused_naming_formulas(tmp_path):
    # NaCl declared (Z = 4) but the symmetry loop only has the identity: 2 atoms, not 8
    path = tmp_path / "nacl.cif"
    path.write_text(
        _cif(
            "NaCl",
            (5.64,) * 3 + (90,) * 3,
            [("Na1", "Na", 0, 0, 0), ("Cl1", "Cl", 0.5, 0.5, 0.5)],
            group="'F m -3 m'",
            ops=NACL_OPS,
            formula="Na Cl",
            z=4,
        )
    )
    with pytest.raises(UnreadableFileError) as info:
        read(path)
    assert "Z = 4 makes 8" in str(info.value) and "2 atoms read" in str(info.value)
    # the same file with the whole Fm-3m group is read right
    ops = [
        op.as_xyz_str()
        for op in __import__("pymatgen.symmetry.groups", fromlist=["SpaceGroup"])
        .SpaceGroup("Fm-3m")
        .symmetry_ops
    ]
    path.write_text(path.read_text().replace("'x, y, z'\n", "".join(f"'{o}'\n" for o in ops)))
    (s,) = read(path)
    assert s.formula == "Cl4Na4"


def test_declared_hydrogens_without_coordinates(tmp_path):
    path = tmp_path / "ch4.cif"
    path.write_text(
        _cif("CH4", (6.0,) * 3 + (90,) * 3, [("C1", "C", 0, 0, 0)], formula="C H4", z=1)
    )
    with pytest.raises(UnreadableFileError) as info:
        read(path)
    msg = str(info.value)
    assert "H declared but without coordinates" in msg and "C H4" in msg and "ch4.cif" in msg
    (s,) = read(path, formula="warn")  # the user may take it as it is, with the warning kept
    assert s.formula == "C" and any("declared formula" in w for w in s.warnings)


def test_formula_sum_as_cell_content_is_accepted(tmp_path):
    # pymatgen's CifWriter writes the cell content as the formula sum, with Z formula units
    s0 = PmgStructure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    from pymatgen.io.cif import CifWriter

    path = tmp_path / "nacl_pmg.cif"
    CifWriter(s0, symprec=0.01).write_file(path)
    assert "Na4 Cl4" in path.read_text()
    (s,) = read(path)
    assert s.formula == "Cl4Na4"


# ------------------------------------------------------------------------------ duplicates
def _p63mmc_ops():
    from pymatgen.symmetry.groups import SpaceGroup

    return [op.as_xyz_str() for op in SpaceGroup("P6_3/mmc").symmetry_ops]


def test_symmetry_duplicates_from_few_decimals_are_merged(tmp_path):
    # (1/3, 2/3, 1/4) printed as 0.333/0.667: its images land ~0.005 A apart
    path = tmp_path / "few_decimals.cif"
    path.write_text(
        _cif(
            "BN",
            (2.5, 2.5, 6.66, 90, 90, 120),
            [("B1", "B", 0.333, 0.667, 0.25), ("N1", "N", 0.667, 0.333, 0.25)],
            group="'P 63/m m c'",
            ops=_p63mmc_ops(),
            formula="B N",
            z=2,
        )
    )
    assert len(_plain_pymatgen(path)) > 4  # duplicates that atomssl used to refuse as overlapping
    (s,) = read(path)
    assert s.formula == "B2N2"
    assert any(w.startswith("merged") and "0.01 A" in w for w in s.warnings)
    # B-N bond of hexagonal BN: a / sqrt(3)
    from atomssl.graph import radius_graph

    g = radius_graph(s, 1.6)
    assert np.allclose(np.linalg.norm(g.vec, axis=1), 2.5 / np.sqrt(3), atol=0.01)
    with pytest.raises(StructureError):  # without merging: too many atoms for the formula
        read(path, merge_tolerance=0)
    path.write_text(
        "\n".join(line for line in path.read_text().splitlines() if "formula" not in line)
    )
    (s,) = read(path)  # no declared formula: both readers, merged, agree
    assert s.formula == "B2N2"
    with pytest.raises(OverlapError):  # and without merging they are overlapping atoms
        read(path, merge_tolerance=0, cif_reader="pymatgen")


@pytest.mark.parametrize("second", ["Si", "O"])
def test_genuinely_overlapping_atoms_still_refused(tmp_path, second):
    path = tmp_path / "overlap.cif"
    path.write_text(
        _cif("x", (5.0,) * 3 + (90,) * 3, [("Si1", "Si", 0, 0, 0), ("X2", second, 0.01, 0, 0)])
    )  # 0.05 A apart
    with pytest.raises(OverlapError):
        read(path)


# ------------------------------------------------------------------------------ readers
def test_cartesian_sites_read_by_ase_when_pymatgen_cannot(tmp_path):
    path = tmp_path / "cart.cif"
    path.write_text(
        "data_cart\n"
        + CELL.format(a=4, b=4, c=4, al=90, be=90, ga=90)
        + "_symmetry_space_group_name_H-M 'P 1'\n"
        "loop_\n_atom_site_label\n_atom_site_type_symbol\n_atom_site_Cartn_x\n_atom_site_Cartn_y\n_atom_site_Cartn_z\n"
        "Na1 Na 0 0 0\nCl1 Cl 2 2 2\n"
    )
    with pytest.raises(ValueError):
        CifParser(str(path)).parse_structures(on_error="raise")
    (s,) = read(path)
    assert s.formula == "ClNa" and np.allclose(s.positions[1] - s.positions[0], 2.0)


def test_readers_that_disagree_refuse_unless_one_is_picked(tmp_path, monkeypatch):
    from atomssl.data import _cif as cif_module

    path = tmp_path / "two.cif"
    path.write_text(
        _cif("x", (5.0,) * 3 + (90,) * 3, [("Na1", "Na", 0, 0, 0), ("Cl1", "Cl", 0.5, 0.5, 0.5)])
    )
    real = cif_module._ase_block_structure

    def ase_drops_an_atom(block):
        s = real(block)
        s.remove_sites([1])
        return s

    monkeypatch.setattr(cif_module, "_ase_block_structure", ase_drops_an_atom)
    with pytest.raises(UnreadableFileError) as info:
        read(path)
    msg = str(info.value)
    assert (
        "disagree" in msg
        and "pymatgen read Cl Na" in msg
        and "ase read Na" in msg
        and "cif_reader" in msg
    )
    assert read(path, cif_reader="pymatgen")[0].formula == "ClNa"
    assert read(path, cif_reader="ase")[0].formula == "Na"


def test_multiple_blocks_keep_their_names(tmp_path):
    one = _cif(
        "first", (4.0,) * 3 + (90,) * 3, [("Na1", "Na", 0, 0, 0), ("Cl1", "Cl", 0.5, 0.5, 0.5)]
    )
    two = _cif("second", (3.0,) * 3 + (90,) * 3, [("Cu1", "Cu", 0, 0, 0)])
    path = tmp_path / "two_blocks.cif"
    path.write_text(one + "\n" + two)
    s = read(path)
    assert [x.id for x in s] == ["first", "second"] and [x.index for x in s] == [0, 1]
    assert [x.formula for x in s] == ["ClNa", "Cu"]


def test_parser_internals_are_not_shown_as_reasons(tmp_path):
    path = tmp_path / "broken.cif"
    path.write_text(
        "data_x\n" + CELL.format(a=4, b=4, c=4, al=90, be=90, ga=90) + SITES + "Na1 Na 0 0\n"
    )
    with pytest.raises(StructureError) as info:
        read(path)
    assert "zip()" not in str(info.value) and "broken.cif" in str(info.value)


def test_bad_option_values_are_refused(tmp_path):
    path = tmp_path / "a.cif"
    path.write_text(_cif("x", (4.0,) * 3 + (90,) * 3, [("Cu1", "Cu", 0, 0, 0)]))
    with pytest.raises(StructureError, match="disorder='most'"):
        read(path, disorder="most")


# ------------------------------------------------------------------------------ disorder
MIXED = [
    ("Ba1", "Ba", 0, 0, 0, 0.5),
    ("Sr1", "Sr", 0, 0, 0, 0.5),
    ("Ti1", "Ti", 0.5, 0.5, 0.5, 1),
    ("O1", "O", 0.5, 0.5, 0, 1),
    ("O2", "O", 0.5, 0, 0.5, 1),
    ("O3", "O", 0, 0.5, 0.5, 1),
]


def _mixed(tmp_path, sites=MIXED, name="bsto.cif"):
    path = tmp_path / name
    path.write_text(_cif("BSTO", (3.9,) * 3 + (90,) * 3, sites, occupancy=True))
    return path


def test_disorder_refused_by_default_with_the_way_out(tmp_path):
    with pytest.raises(DisorderError) as info:
        read(_mixed(tmp_path))
    assert "Ba0.5 Sr0.5" in str(info.value) and "disorder='majority'" in str(info.value)


def test_disorder_majority(tmp_path):
    sites = (
        [("Ba1", "Ba", 0, 0, 0, 0.7), ("Sr1", "Sr", 0, 0, 0, 0.3)]
        + MIXED[2:]
        + [("Li1", "Li", 0.25, 0.25, 0.25, 0.3)]
    )
    (s,) = read(_mixed(tmp_path, sites), disorder="majority")
    assert s.formula == "BaO3Ti"  # Ba takes the mixed site; the 30%-occupied Li site is dropped
    assert any("majority species" in w and "->Ba" in w for w in s.warnings)
    assert any("mostly vacant" in w for w in s.warnings)


def test_disorder_order_lowest_ewald_supercell(tmp_path):
    (s,) = read(_mixed(tmp_path), disorder="order")
    assert s.formula == "BaO6SrTi2" and s.n_atoms == 10
    assert abs(s.volume - 2 * 3.9**3) < 1e-6
    assert any("1x1x2" in w or "1x2x1" in w or "2x1x1" in w for w in s.warnings)


def test_disorder_order_refuses_past_its_bound(tmp_path):
    sites = [("Ba1", "Ba", 0, 0, 0, 0.987), ("Sr1", "Sr", 0, 0, 0, 0.013)] + MIXED[2:]
    with pytest.raises(DisorderError, match="more than 200 atoms"):
        read(_mixed(tmp_path, sites), disorder="order")


def test_formula_tag_written_twice_second_empty_is_still_checked(tmp_path):
    # AMCSD files repeat _chemical_formula_sum, the second time empty; parsers keep the last
    text = _cif(
        "Ag2HPO4",
        (6.0,) * 3 + (90,) * 3,
        [
            ("Ag1", "Ag", 0, 0, 0),
            ("Ag2", "Ag", 0.5, 0, 0),
            ("P1", "P", 0.5, 0.5, 0.5),
            ("O1", "O", 0.25, 0.25, 0.25),
            ("O2", "O", 0.75, 0.25, 0.25),
            ("O3", "O", 0.25, 0.75, 0.25),
            ("O4", "O", 0.25, 0.25, 0.75),
        ],
        formula="Ag2 P O4 H",
    )
    path = tmp_path / "amcsd.cif"
    path.write_text(text.replace("_cell_length_a", "_chemical_formula_sum ''\n_cell_length_a", 1))
    with pytest.raises(UnreadableFileError, match="H declared but without coordinates"):
        read(path)
    path.write_text(
        text.replace("_cell_length_a", "_chemical_formula_sum 'Ag3 P O4'\n_cell_length_a", 1)
    )
    with pytest.raises(UnreadableFileError, match="declares different formulas"):
        read(path)
