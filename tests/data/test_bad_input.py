"""Every kind of bad input raises its typed error naming the file (and frame) and the reason."""

from __future__ import annotations

import sqlite3

import ase.io
import numpy as np
import pytest

from atomssl.data import Structure, iter_structures, read
from atomssl.errors import (
    DisorderError,
    EmptyStructureError,
    MaskedSiteError,
    MissingFileError,
    NonFiniteError,
    OverlapError,
    SingularCellError,
    StructureError,
    UnknownElementError,
    UnknownFormatError,
    UnreadableFileError,
)

CUBIC_POSCAR = """{title}
1.0
{a}
{b}
{c}
{species}
{counts}
Direct
{coords}
"""


def _poscar(
    path, a="4 0 0", b="0 4 0", c="0 0 4", species="Si", counts="2", coords="0 0 0\n0.5 0.5 0.5"
):
    path.write_text(
        CUBIC_POSCAR.format(title="t", a=a, b=b, c=c, species=species, counts=counts, coords=coords)
    )
    return path


def _raises(cls, path, *reason_parts, index=None, select=None, **kw):
    """Read ``path`` (frames ``select``); check the error type, that it names the file (+ frame)
    and the reason."""
    with pytest.raises(cls) as info:
        read(path, index=select, **kw)
    err = info.value
    msg = str(err)
    assert path.name in msg and err.source is not None and err.source.endswith(path.name)
    assert err.index == index
    if index is not None:
        assert f"[index {index}]" in msg
    for part in reason_parts:
        assert part.lower() in msg.lower(), (part, msg)
    # the library's own exception is never chained into the traceback
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    return err


def test_missing_file(tmp_path):
    err = _raises(MissingFileError, tmp_path / "nope.cif", "file not found")
    assert isinstance(err, FileNotFoundError)


GARBLED = {
    "garbled.cif": b"data_x\n_cell_length_a 4\nloop_\n_atom_site_label\n\x00\x01\x02 {{{\n",
    "POSCAR": b"comment\nnot-a-number\n1 2\n",
    "garbled.extxyz": b"2\ncomment\nSi 0 0 0\nSi 1 1\n",  # truncated coordinates
    "garbled.db": b"SQLite format 3\x00 then garbage",
    "garbled.json": b'{"@module": "pymatgen.core.structure", ',
    "garbled.lmp": b"LAMMPS data\n\nnonsense here\n",
    "garbled.lammpstrj": b"ITEM: TIMESTEP\nnot-an-int\n",
    "garbled.traj": b"\x89 random binary \xff\xfe" * 20,
    "binary.xyz": bytes(range(256)) * 4,
}


@pytest.mark.parametrize("name", sorted(GARBLED))
def test_unreadable_garbled_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(GARBLED[name])
    err = _raises(UnreadableFileError, path, "unreadable file")
    assert err.reason  # says what the parser choked on


def test_unreadable_empty_file(tmp_path):
    path = tmp_path / "empty.xyz"
    path.write_bytes(b"")
    _raises(UnreadableFileError, path, "empty")


def test_sqlite_that_is_not_an_ase_database_is_refused_untouched(tmp_path):
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (x INTEGER)")
    con.commit()
    con.close()
    before = path.read_bytes()
    _raises(UnreadableFileError, path, "not an ASE database")
    assert path.read_bytes() == before  # ASE would have added its tables


def test_unknown_format(tmp_path):
    path = tmp_path / "notes.unknownext"
    path.write_text("hello\nworld\n")
    _raises(UnknownFormatError, path, "unknown format", "pass format=")
    ok = _poscar(tmp_path / "POSCAR")
    _raises(UnknownFormatError, ok, "not-a-format", format="not-a-format")


def test_partial_occupancy_is_refused(tmp_path):
    path = tmp_path / "disordered.cif"
    path.write_text(
        """data_x
_cell_length_a 4.0
_cell_length_b 4.0
_cell_length_c 4.0
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Fe1 Fe 0 0 0 0.5
Ni1 Ni 0 0 0 0.5
O1 O 0.5 0.5 0.5 1.0
"""
    )
    _raises(DisorderError, path, "partial occupancy", "Fe0.5 Ni0.5", index=0)
    # a vacancy-type partial site (occupancy < 1, one species) is disorder too
    vac = tmp_path / "vacancy.cif"
    vac.write_text(path.read_text().replace("Ni1 Ni 0 0 0 0.5\n", ""))
    _raises(DisorderError, vac, "partial occupancy", index=0)


def test_nan_coordinates_name_the_frame(tmp_path):
    path = tmp_path / "frames.extxyz"
    path.write_text("1\n\nAr 0 0 0\n2\n\nAr 0 0 0\nAr nan 1 1\n1\n\nAr 1 1 inf\n")
    _raises(
        NonFiniteError,
        path,
        "non-finite coordinates",
        "NaN/inf in positions of atom(s) [1]",
        index=1,
    )
    _raises(NonFiniteError, path, "NaN/inf", index=2, select=2)


@pytest.mark.parametrize(
    "a,b,c,reason",
    [
        ("4 0 0", "4 0 0", "0 0 4", "linearly dependent"),  # two equal vectors: zero volume
        ("4 0 0", "0 4 0", "0 0 0", "zero-length"),  # a zero lattice vector
        ("4 0 0", "0 4 0", "2 2 0", "linearly dependent"),  # coplanar vectors
    ],
)
def test_singular_cell(tmp_path, a, b, c, reason):
    path = _poscar(tmp_path / "POSCAR", a=a, b=b, c=c, coords="0 0 0\n0.5 0.5 0.5")
    _raises(SingularCellError, path, "singular cell", reason, index=0)


def test_zero_atoms(tmp_path):
    path = tmp_path / "nothing.xyz"
    path.write_text("0\nno atoms here\n")
    _raises(EmptyStructureError, path, "zero atoms", index=0)


def test_unknown_element(tmp_path):
    xyz = tmp_path / "weird.xyz"
    xyz.write_text("2\n\nSi 0 0 0\nQq 1.5 1.5 1.5\n")
    _raises(UnknownElementError, xyz, "'Qq'")
    poscar = _poscar(tmp_path / "POSCAR", species="Si Zz", counts="1 1")
    _raises(UnknownElementError, poscar, "'Zz'")
    cif = tmp_path / "weird.cif"
    cif.write_text(
        "data_x\n_cell_length_a 4\n_cell_length_b 4\n_cell_length_c 4\n_cell_angle_alpha 90\n"
        "_cell_angle_beta 90\n_cell_angle_gamma 90\n_symmetry_space_group_name_H-M 'P 1'\n"
        "loop_\n_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n"
        "_atom_site_fract_z\nXq1 Xq 0 0 0\nO1 O 0.5 0.5 0.5\n"
    )
    _raises(UnknownElementError, cif, "Xq", index=0)
    # atomic number 0 (ASE's dummy "X", a masked site as `atomssl reconstruct` writes it) read from a
    # file: refused, naming the site, except by reconstruct (read(..., allow_masked=True))
    dummy = tmp_path / "dummy.extxyz"
    dummy.write_text("2\n\nX 0 0 0\nSi 1.5 1.5 1.5\n")
    _raises(
        MaskedSiteError,
        dummy,
        "site(s) [0] are masked (X); only `atomssl reconstruct` accepts them",
        index=0,
    )
    assert read(dummy, allow_masked=True)[0].numbers.tolist() == [0, 14]
    negative = Structure(numbers=[-1, 14], positions=[[0, 0, 0], [1.5, 1.5, 1.5]])
    with pytest.raises(UnknownElementError, match=r"atomic number\(s\) \[-1\]"):
        negative.validate(allow_masked=True)  # only Z = 0 is a masked site


def test_overlapping_atoms(tmp_path):
    path = tmp_path / "close.xyz"
    path.write_text("3\n\nC 0 0 0\nC 1.4 0 0\nC 1.45 0 0\n")
    _raises(OverlapError, path, "atoms 1 and 2", "0.0500 A", "< 0.1 A", index=0)


def test_overlapping_atoms_across_the_periodic_boundary(tmp_path):
    path = _poscar(
        tmp_path / "POSCAR",
        a="10 0 0",
        b="0 10 0",
        c="0 0 10",
        coords="0.001 0.5 0.5\n0.998 0.5 0.5",
    )
    err = _raises(OverlapError, path, "0.0300 A", index=0)
    assert "atoms 0 and 1" in str(err) or "atoms 1 and 0" in str(err)
    # 0.11 A apart is allowed
    _poscar(path, a="10 0 0", b="0 10 0", c="0 0 10", coords="0.005 0.5 0.5\n0.994 0.5 0.5")
    assert read(path)[0].n_atoms == 2


def test_every_bad_entry_is_a_structure_error_in_bulk(tmp_path, small_atoms):
    """Bulk iteration over a folder with one file per problem reports one typed error per entry."""
    (tmp_path / "nan.xyz").write_text("1\n\nAr nan 0 0\n")
    (tmp_path / "zero.xyz").write_text("0\n\n")
    (tmp_path / "garbled.traj").write_bytes(GARBLED["garbled.traj"])
    _poscar(tmp_path / "POSCAR", a="4 0 0", b="4 0 0", c="0 0 4")
    ase.io.write(tmp_path / "good.extxyz", small_atoms["si"])
    errors: list[StructureError] = []
    good = list(iter_structures(tmp_path, skip_bad=True, errors=errors))
    assert [s.formula for s in good] == ["Si2"]
    kinds = sorted(type(e).__name__ for e in errors)
    assert kinds == [
        "EmptyStructureError",
        "NonFiniteError",
        "SingularCellError",
        "UnreadableFileError",
    ]
    assert all(e.source and str(tmp_path) in e.source for e in errors)
    assert np.isfinite(good[0].positions).all()


def test_lammps_type_missing_from_species_mapping(tmp_path, small_atoms):
    path = tmp_path / "nacl.lmp"
    ase.io.write(
        path, small_atoms["nacl"], format="lammps-data", specorder=["Na", "Cl"], atom_style="atomic"
    )
    _raises(UnknownElementError, path, "species mapping", species={1: "Na"})
    _raises(UnknownElementError, path, "'Qq'", species={1: "Na", 2: "Qq"})
