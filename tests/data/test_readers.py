"""Reading structure files into Structure records: every format round-trips through ASE writers."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest

from atomssl.data import FrameIndexError, Structure, detect_format, iter_structures, read
from atomssl.errors import OverlapError, StructureError, UnknownFormatError


def _same(s: Structure, atoms, wrap: bool = False, atol: float = 1e-6) -> None:
    """Structure equals ``atoms`` (species, cell, pbc, positions; modulo wrapping when ``wrap``)."""
    np.testing.assert_array_equal(s.numbers, atoms.numbers)
    np.testing.assert_allclose(s.cell, atoms.cell[:], atol=atol)
    np.testing.assert_array_equal(s.pbc, atoms.pbc)
    if wrap:
        d = s.scaled_positions - atoms.get_scaled_positions(wrap=False)
        np.testing.assert_allclose(d - np.round(d), 0.0, atol=atol)
    else:
        np.testing.assert_allclose(s.positions, atoms.positions, atol=atol)


@pytest.mark.parametrize("name", ["si", "nacl", "triclinic"])
def test_cif_roundtrip_through_pymatgen(tmp_path, small_atoms, name):
    atoms = small_atoms[name]
    path = tmp_path / f"{name}.cif"
    ase.io.write(path, atoms)
    (s,) = read(path)
    assert s.source == str(path) and s.index == 0
    # pymatgen may re-express the cell (standard orientation): compare invariants + fractional coords
    np.testing.assert_allclose(s.cell @ s.cell.T, atoms.cell[:] @ atoms.cell[:].T, atol=1e-4)
    # CIF writers group atoms by species: match atoms up to order (same Z, same fractional
    # position modulo lattice translations)
    d = s.scaled_positions[:, None, :] - atoms.get_scaled_positions()[None, :, :]
    close = (np.abs(d - np.round(d)) < 1e-4).all(-1) & (
        s.numbers[:, None] == atoms.numbers[None, :]
    )
    assert len(s) == len(atoms)
    assert (close.sum(0) == 1).all() and (close.sum(1) == 1).all()


@pytest.mark.parametrize("filename", ["POSCAR", "CONTCAR", "si.vasp", "POSCAR_relaxed"])
def test_poscar_names(tmp_path, small_atoms, filename):
    atoms = small_atoms["triclinic"]
    path = tmp_path / filename
    ase.io.write(path, atoms, format="vasp", direct=True)
    (s,) = read(path)
    _same(s, atoms, wrap=True)
    assert s.formula == "MgO2"


def test_extxyz_multiframe_labels_and_index(tmp_path, small_atoms):
    frames = [small_atoms["si"], small_atoms["water"], small_atoms["slab"]]
    for i, a in enumerate(frames):
        a.info["energy_per_atom"] = -1.5 * i
        a.info["name"] = f"frame{i}"
    path = tmp_path / "traj.extxyz"
    ase.io.write(path, frames)
    out = read(path)
    assert [s.index for s in out] == [0, 1, 2]
    for s, a in zip(out, frames):
        _same(s, a)
        assert s.labels["energy_per_atom"] == a.info["energy_per_atom"]
        assert s.source == str(path)
    # selection keeps the absolute frame number
    assert [s.index for s in read(path, index=1)] == [1]
    assert [s.index for s in read(path, index=-1)] == [2]
    assert [s.index for s in read(path, index=slice(0, None, 2))] == [0, 2]
    assert [s.index for s in read(path, index="1:")] == [1, 2]
    _same(read(path, index=-2)[0], frames[1])
    with pytest.raises(FrameIndexError, match=r"traj\.extxyz.*frame 5.*3 frame"):
        read(path, index=5)
    with pytest.raises(FrameIndexError, match="frame -4"):
        read(path, index=-4)


def test_plain_xyz(tmp_path):
    path = tmp_path / "m.xyz"
    path.write_text("3\nplain comment\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n")
    (s,) = read(path)
    assert s.formula == "H2O" and not s.pbc.any()
    np.testing.assert_allclose(s.positions[1], [0.96, 0, 0])


def test_ase_db_and_traj(tmp_path, small_atoms):
    import ase.db

    names = ["si", "nacl", "water"]
    db = ase.db.connect(tmp_path / "x.db")
    for i, n in enumerate(names):
        db.write(small_atoms[n], band_gap=0.5 * i, label=n)
    out = read(tmp_path / "x.db")
    assert [s.index for s in out] == [0, 1, 2]
    for s, n, i in zip(out, names, range(3)):
        _same(s, small_atoms[n])
        assert s.labels == {"band_gap": 0.5 * i, "label": n}
    (mid,) = read(tmp_path / "x.db", index=1)
    assert mid.labels["label"] == "nacl" and mid.index == 1
    assert read(tmp_path / "x.db", index=-1)[0].labels["label"] == "water"

    ase.io.write(tmp_path / "x.traj", [small_atoms[n] for n in names])
    for s, n in zip(read(tmp_path / "x.traj"), names):
        _same(s, small_atoms[n])


def test_pymatgen_json(tmp_path, small_atoms):
    from pymatgen.io.ase import AseAtomsAdaptor

    structs = [AseAtomsAdaptor.get_structure(small_atoms[n]) for n in ("si", "nacl")]
    (tmp_path / "one.json").write_text(json.dumps(structs[0].as_dict()))
    (tmp_path / "many.json").write_text(json.dumps([s.as_dict() for s in structs]))
    (one,) = read(tmp_path / "one.json")
    _same(one, small_atoms["si"])
    many = read(tmp_path / "many.json")
    assert [s.formula for s in many] == ["Si2", "Cl4Na4"] and [s.index for s in many] == [0, 1]


def test_lammps_data_species_mapping_and_mass_guess(tmp_path, small_atoms):
    atoms = small_atoms["nacl"]
    path = tmp_path / "nacl.lmp"
    ase.io.write(
        path, atoms, format="lammps-data", specorder=["Na", "Cl"], masses=True, atom_style="atomic"
    )
    guessed = read(path, atom_style="atomic")[0]  # elements from the Masses section
    mapped = read(path, format="lammps-data", species={1: "Na", 2: "Cl"})[0]
    by_list = read(path, species=["Na", "Cl"])[0]
    for s in (guessed, mapped, by_list):
        np.testing.assert_array_equal(s.numbers, atoms.numbers)
        np.testing.assert_allclose(s.positions, atoms.positions, atol=1e-6)
        np.testing.assert_allclose(s.cell, atoms.cell[:], atol=1e-6)
    swapped = read(path, species={1: "K", 2: "F"})[0]  # an explicit mapping wins over masses
    assert swapped.formula == "F4K4"
    # LAMMPS convention name "data.*"
    (tmp_path / "data.nacl").write_bytes(path.read_bytes())
    assert read(tmp_path / "data.nacl")[0].formula == "Cl4Na4"


def _dump_text(
    frames: list[np.ndarray], types: list[int], box: float, element: list[str] | None = None
) -> str:
    cols = "id type element x y z" if element else "id type x y z"
    out = []
    for step, pos in enumerate(frames):
        out += (
            [
                "ITEM: TIMESTEP",
                str(step * 100),
                "ITEM: NUMBER OF ATOMS",
                str(len(pos)),
                "ITEM: BOX BOUNDS pp pp pp",
            ]
            + [f"0.0 {box}"] * 3
            + [f"ITEM: ATOMS {cols}"]
        )
        # written in reverse id order: the reader must sort by id
        for i in reversed(range(len(pos))):
            el = f" {element[i]}" if element else ""
            out.append(f"{i + 1} {types[i]}{el} {pos[i, 0]:.6f} {pos[i, 1]:.6f} {pos[i, 2]:.6f}")
    return "\n".join(out) + "\n"


def test_lammps_dump_frames_and_species(tmp_path, rng):
    box = 6.0
    frames = [rng.uniform(0, box, (5, 3)) for _ in range(3)]
    types = [1, 2, 2, 1, 2]
    path = tmp_path / "run.lammpstrj"
    path.write_text(_dump_text(frames, types, box))
    out = read(path, species={1: "Cu", 2: "Zr"}, validate=False)
    assert [s.index for s in out] == [0, 1, 2]
    for s, pos in zip(out, frames):
        assert s.formula == "Cu2Zr3"
        np.testing.assert_array_equal(s.numbers, [29, 40, 40, 29, 40])
        np.testing.assert_allclose(s.positions, pos, atol=1e-5)
        np.testing.assert_allclose(s.cell, np.eye(3) * box)
        assert s.pbc.all()
    # element column in the file: no mapping needed
    el = tmp_path / "dump.melt"
    el.write_text(_dump_text(frames[:1], types, box, element=["Cu", "Zr", "Zr", "Cu", "Zr"]))
    assert read(el, validate=False)[0].formula == "Cu2Zr3"


def test_format_detection():
    cases = {
        "a.cif": "cif",
        "a.CIF": "cif",
        "a.cif.gz": "cif",
        "POSCAR": "vasp",
        "CONTCAR_3": "vasp",
        "x.vasp": "vasp",
        "t.extxyz": "extxyz",
        "t.xyz": "extxyz",
        "s.db": "db",
        "d.lmp": "lammps-data",
        "data.lj": "lammps-data",
        "dump.lj": "lammps-dump-text",
        "t.lammpstrj": "lammps-dump-text",
        "m.json": "json",
        "a.traj": "traj",
    }
    for name, fmt in cases.items():
        assert detect_format(name) == fmt, name


def test_unknown_format_sniffs_content_else_raises(tmp_path, small_atoms):
    p = tmp_path / "structure.weird"
    ase.io.write(p, small_atoms["si"], format="traj")  # ASE recognises the binary header
    assert read(p)[0].formula == "Si2"
    q = tmp_path / "notes.weird"
    q.write_text("just some words\nnothing structural\n")
    with pytest.raises(UnknownFormatError, match=r"notes\.weird.*pass format="):
        read(q)
    # an explicit format is honoured
    r = tmp_path / "si.txt"
    ase.io.write(r, small_atoms["si"], format="vasp")
    assert read(r, format="vasp")[0].formula == "Si2"


def test_iter_structures_folders_objects_and_skip_bad(tmp_path, small_atoms):
    from pymatgen.io.ase import AseAtomsAdaptor

    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    ase.io.write(tmp_path / "a.cif", small_atoms["si"])
    ase.io.write(tmp_path / "sub" / "POSCAR", small_atoms["nacl"], format="vasp")
    ase.io.write(
        tmp_path / "sub" / "deeper" / "t.extxyz", [small_atoms["water"], small_atoms["slab"]]
    )
    ase.io.write(tmp_path / ".hidden" / "h.xyz", small_atoms["water"])  # hidden: skipped
    (tmp_path / "README.txt").write_text("not a structure")  # unknown name in a folder: skipped
    got = list(iter_structures(tmp_path))
    assert [(s.formula, s.index) for s in got] == [
        ("Si2", 0),
        ("Cl4Na4", 0),
        ("H2O", 0),
        ("Al8", 1),
    ]
    assert got[1].source.endswith("sub/POSCAR")

    pmg = AseAtomsAdaptor.get_structure(small_atoms["triclinic"])
    bad = small_atoms["si"].copy()
    bad.positions[1] = bad.positions[0] + 0.01
    mixed = [small_atoms["water"], pmg, bad, Structure.from_ase(small_atoms["nacl"])]
    with pytest.raises(OverlapError, match=r"\[index 2\]"):
        list(iter_structures(mixed))
    errors: list[StructureError] = []
    ok = list(iter_structures(mixed, skip_bad=True, errors=errors))
    assert [s.formula for s in ok] == ["H2O", "MgO2", "Cl4Na4"]
    assert [s.index for s in ok] == [0, 1, 3]
    assert len(errors) == 1 and isinstance(errors[0], OverlapError) and errors[0].index == 2


def test_iter_structures_skips_only_the_bad_frame(tmp_path, small_atoms):
    frames = [small_atoms["si"].copy() for _ in range(4)]
    frames[2].positions[1] = frames[2].positions[0]
    path = tmp_path / "t.extxyz"
    ase.io.write(path, frames)
    errors: list[StructureError] = []
    ok = list(iter_structures([path], skip_bad=True, errors=errors))
    assert [s.index for s in ok] == [0, 1, 3]
    assert [(e.source, e.index) for e in errors] == [(str(path), 2)]


def test_read_without_validation_returns_bad_structure(tmp_path):
    path = tmp_path / "o.xyz"
    path.write_text("2\n\nAr 0 0 0\nAr 0 0 0.05\n")
    with pytest.raises(OverlapError):
        read(path)
    (s,) = read(path, validate=False)
    assert s.n_atoms == 2
