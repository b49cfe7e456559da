"""LAMMPS atom types -> elements: from species=, type labels or masses; refused when unknown;
``species="types"`` (CLI ``--species types``) takes them as point particles, on the record."""

from __future__ import annotations

import argparse
import logging

import ase.io
import numpy as np
import pytest

from atomssl.data import read
from atomssl.errors import UnknownElementError

POSITIONS = [(0.0, 0.0, 0.0), (2.0, 0.0, 0.0), (0.0, 2.0, 0.0), (2.0, 2.0, 2.0)]
TYPES = [1, 2, 2, 1]


def _data_file(
    path,
    masses: dict[int, float] | None = None,
    labels: dict[int, str] | None = None,
    n_types: int = 2,
):
    """A LAMMPS data file (atom_style atomic, 4 atoms in a 4 A cube) with the sections given."""
    lines = [
        "LAMMPS data file (test)",
        "",
        f"{len(POSITIONS)} atoms",
        f"{n_types} atom types",
        "",
        "0.0 4.0 xlo xhi",
        "0.0 4.0 ylo yhi",
        "0.0 4.0 zlo zhi",
        "",
    ]
    if masses is not None:
        lines += ["Masses", ""] + [f"{t} {m}" for t, m in masses.items()] + [""]
    if labels is not None:
        lines += ["Atom Type Labels", ""] + [f"{t} {name}" for t, name in labels.items()] + [""]
    lines += ["Atoms # atomic", ""]
    lines += [f"{i + 1} {t} {x} {y} {z}" for i, (t, (x, y, z)) in enumerate(zip(TYPES, POSITIONS))]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_data_file_without_masses_is_refused_with_both_ways_out(tmp_path, small_atoms):
    path = tmp_path / "nacl.lmp"
    ase.io.write(
        path, small_atoms["nacl"], format="lammps-data", specorder=["Na", "Cl"], atom_style="atomic"
    )
    assert "Masses" not in path.read_text()
    with pytest.raises(UnknownElementError) as err:
        read(path)  # ASE alone would read H4He4
    msg = str(err.value)
    assert str(path) in msg and "no Masses section" in msg
    assert "species=" in msg and "--species 1=Si,2=O" in msg and "--species types" in msg
    assert read(path, species={1: "Na", 2: "Cl"})[0].formula == "Cl4Na4"
    assert read(path, species=["Na", "Cl"])[0].formula == "Cl4Na4"


def test_species_mapping_reads_the_named_elements(tmp_path):
    path = _data_file(tmp_path / "si.lmp", n_types=1)
    text = (
        path.read_text()
        .replace("\n1 2 2.0", "\n1 1 2.0")
        .replace("\n2 2 ", "\n2 1 ")
        .replace("\n3 2 ", "\n3 1 ")
    )
    path.write_text(text)
    (s,) = read(path, species={1: "Si"}, validate=False)
    np.testing.assert_array_equal(s.numbers, [14, 14, 14, 14])
    assert s.warnings == []


def test_types_as_point_particles_are_recorded(tmp_path):
    for masses in (None, {1: 28.0855, 2: 15.999}):  # the explicit switch wins over masses
        path = _data_file(tmp_path / "pp.lmp", masses=masses)
        (s,) = read(path, species="types")
        np.testing.assert_array_equal(s.numbers, TYPES)
        assert (
            len(s.warnings) == 1
            and "point particles" in s.warnings[0]
            and "species='types'" in s.warnings[0]
        )
        np.testing.assert_allclose(s.positions, POSITIONS)


def test_masses_name_elements_within_a_tolerance(tmp_path):
    exact = _data_file(tmp_path / "exact.lmp", masses={1: 28.0855, 2: 15.999})
    (s,) = read(exact)
    np.testing.assert_array_equal(s.numbers, [14, 8, 8, 14])
    assert s.warnings == []
    rounded = _data_file(tmp_path / "rounded.lmp", masses={1: 28, 2: 16})
    (s,) = read(rounded)
    np.testing.assert_array_equal(s.numbers, [14, 8, 8, 14])
    assert (
        len(s.warnings) == 1 and "type 1 (mass 28) as Si 28.09" in s.warnings[0]
    )  # only the inexact one


@pytest.mark.parametrize(
    "mass, words",
    [
        (50.0, ["mass 50", "no element's", "nearest: V"]),  # between Ti (47.87) and V (50.94)
        (3.0, ["mass 3", "no element's"]),
        (40.0, ["could be Ar", "Ca"]),  # Ar 39.95 and Ca 40.08 are both 0.1 amu away
        (-1.0, ["mass -1"]),
    ],
)
def test_a_mass_that_is_no_element_is_refused(tmp_path, mass, words):
    path = _data_file(tmp_path / "odd.lmp", masses={1: 28.0855, 2: mass})
    with pytest.raises(UnknownElementError) as err:
        read(path)
    msg = str(err.value)
    assert "atom type 2" in msg and "--species types" in msg
    for w in words:
        assert w in msg


def test_atom_type_labels_name_elements(tmp_path):
    path = _data_file(tmp_path / "labels.lmp", labels={1: "Zn", 2: "S"})
    np.testing.assert_array_equal(read(path)[0].numbers, [30, 16, 16, 30])
    ff = _data_file(
        tmp_path / "ff.lmp", labels={1: "c1", 2: "o2"}
    )  # force-field names are not elements
    with pytest.raises(UnknownElementError, match="no Masses section"):
        read(ff)


def test_a_type_missing_from_the_masses_is_refused(tmp_path):
    path = _data_file(tmp_path / "half.lmp", masses={1: 28.0855})
    with pytest.raises(UnknownElementError, match="atom type 2 has no entry in the Masses section"):
        read(path)


def _dump(path, element: bool = False):
    cols = "id type element x y z" if element else "id type x y z"
    rows = [
        f"{i + 1} {t}{' Cu' if element else ''} {x} {y} {z}"
        for i, (t, (x, y, z)) in enumerate(zip(TYPES, POSITIONS))
    ]
    path.write_text(
        "\n".join(
            [
                "ITEM: TIMESTEP",
                "0",
                "ITEM: NUMBER OF ATOMS",
                "4",
                "ITEM: BOX BOUNDS pp pp pp",
                "0 4",
                "0 4",
                "0 4",
                f"ITEM: ATOMS {cols}",
            ]
            + rows
        )
        + "\n"
    )
    return path


def test_dump_types_as_atomic_numbers_are_recorded(tmp_path, caplog):
    path = _dump(tmp_path / "run.lammpstrj")
    with caplog.at_level(logging.WARNING, logger="atomssl"):
        (s,) = read(path)  # kept for compatibility: types as atomic numbers, but on the record
    np.testing.assert_array_equal(s.numbers, TYPES)
    assert len(s.warnings) == 1 and "no element or mass column" in s.warnings[0]
    assert "types taken as atomic numbers" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="atomssl"):
        (s,) = read(path, species="types")  # asked for: recorded, not logged
    np.testing.assert_array_equal(s.numbers, TYPES)
    assert len(s.warnings) == 1 and "point particles" in s.warnings[0]
    assert caplog.text == ""
    (s,) = read(path, species={1: "Cu", 2: "Zr"})
    assert s.formula == "Cu2Zr2" and s.warnings == []
    (s,) = read(
        _dump(tmp_path / "el.lammpstrj", element=True), species="types"
    )  # elements in the file win
    assert s.formula == "Cu4" and s.warnings == []


def test_species_option_parsing():
    from atomssl.cli.data import _species

    assert _species("types") == "types" and _species(" Types ") == "types"
    assert _species("1=Si,2=O") == {1: "Si", 2: "O"}
    assert _species("Si,O") == {1: "Si", 2: "O"}
    for bad in ("", "1=", "=Si", "a=Si"):
        with pytest.raises(argparse.ArgumentTypeError):
            _species(bad)


def test_a_type_name_in_a_lammps_mapping_is_a_clear_error(tmp_path):
    path = _data_file(tmp_path / "x.lmp", masses={1: 28.0855, 2: 15.999})
    with pytest.raises(UnknownElementError, match="'A' is not a type number"):
        read(path, species={"A": "Ar"})
    with pytest.raises(UnknownElementError, match="species='bogus'"):
        read(path, species="bogus")


def test_cli_data_info_on_a_file_without_masses(tmp_path, small_atoms, capsys):
    from atomssl.cli.main import main

    path = tmp_path / "nacl.lmp"
    ase.io.write(
        path, small_atoms["nacl"], format="lammps-data", specorder=["Na", "Cl"], atom_style="atomic"
    )
    assert main(["data", "info", str(path)]) == 1
    cap = capsys.readouterr()
    errors = [line for line in cap.out.splitlines() if f"{path}:" in line]
    assert len(errors) == 1 and "no Masses section" in errors[0] and "--species types" in errors[0]
    assert "Traceback" not in cap.out + cap.err
    assert main(["data", "info", str(path), "--species", "types"]) == 0
    out = capsys.readouterr().out
    assert "H4He4" in out and "point particles" in out
    assert main(["data", "info", str(path), "--species", "1=Na,2=Cl"]) == 0
    assert "Cl4Na4" in capsys.readouterr().out
