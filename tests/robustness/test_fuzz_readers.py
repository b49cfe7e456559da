"""Fuzzed structure files: every reader gives a correct result or a typed error naming the file.

For each format (CIF, POSCAR, extxyz, ASE db, LAMMPS data, LAMMPS dump, pymatgen JSON), hypothesis
feeds :func:`atomssl.data.read` random bytes, truncations and text-level garblings of a valid
file. Each call runs in a forked child with a time bound (see ``robust_helpers``), so a hang or
a segfault is caught and reported as such. Accepted outcomes: a list of structures that pass
:meth:`Structure.validate`, or a :class:`StructureError` whose message names the file. Anything
else (a raw ``ValueError``/``KeyError`` from a parser, a hang, a crash) fails the test.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from robust_helpers import TIME_BOUND, bounded

from atomssl.data import Structure, iter_entries, read
from atomssl.errors import OverlapError, StructureError

FUZZ = settings(
    max_examples=12,
    deadline=None,  # the fork time bound is the deadline (the machine may be heavily shared)
    derandomize=True,  # the same examples on every run: CI never turns red at random
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a hang costs a full time bound per try
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Tokens a garbled text file may get: numbers parsers choke on, element-like words, syntax of
# the formats (CIF loops, extxyz headers, LAMMPS sections, JSON brackets).
TOKENS = [
    "nan",
    "inf",
    "-inf",
    "1e400",
    "-1e308",
    "0",
    "-0",
    "1e-300",
    "99999999999999999999",
    "X",
    "Xx",
    "Q",
    "Na",
    "",
    " ",
    "\t",
    "#",
    "'",
    '"',
    ";",
    "_",
    ".",
    "?",
    "-",
    "0.5(3)",
    "1/0",
    "loop_",
    "data_",
    "_atom_site_occupancy",
    "ITEM:",
    "ITEM: ATOMS",
    "Atoms",
    "Masses",
    'Lattice="',
    "Properties=species:S:1",
    "{",
    "}",
    "[",
    "]",
    ",",
    "null",
    "@class",
    "Direct",
    "Cartesian",
]


def _nacl() -> Atoms:
    a = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    a.rattle(0.02, seed=2)
    return a


def _si() -> Atoms:
    return bulk("Si", "diamond", a=5.43)


def _dump_text(frames: list[Atoms]) -> str:
    lines = []
    for step, atoms in enumerate(frames):
        lines += [
            "ITEM: TIMESTEP",
            str(step),
            "ITEM: NUMBER OF ATOMS",
            str(len(atoms)),
            "ITEM: BOX BOUNDS pp pp pp",
        ]
        lines += [f"0.0 {atoms.cell[i, i]:.6f}" for i in range(3)]
        lines.append("ITEM: ATOMS id type element x y z")
        for i, (sym, (x, y, z)) in enumerate(zip(atoms.get_chemical_symbols(), atoms.positions)):
            lines.append(f"{i + 1} {1 if sym == 'Na' else 2} {sym} {x:.6f} {y:.6f} {z:.6f}")
    return "\n".join(lines) + "\n"


def _write_samples(folder: Path) -> dict[str, tuple[Path, list[Atoms]]]:
    """One valid file per format, and the structures it holds."""
    from pymatgen.io.ase import AseAtomsAdaptor

    nacl, si = _nacl(), _si()
    out = {}
    p = folder / "nacl.cif"
    ase.io.write(p, nacl)
    out["cif"] = (p, [nacl])
    p = folder / "POSCAR"
    ase.io.write(p, nacl, format="vasp", direct=True)
    out["vasp"] = (p, [nacl])
    p = folder / "frames.extxyz"
    ase.io.write(p, [nacl, si, nacl])
    out["extxyz"] = (p, [nacl, si, nacl])
    p = folder / "rows.db"
    with ase.db.connect(p) as db:
        db.write(nacl, gap=1.0)
        db.write(si, gap=2.0)
    out["db"] = (p, [nacl, si])
    p = folder / "nacl.lmp"
    ase.io.write(
        p, nacl, format="lammps-data", specorder=["Na", "Cl"], masses=True, atom_style="atomic"
    )
    out["lammps-data"] = (p, [nacl])
    p = folder / "run.lammpstrj"
    p.write_text(_dump_text([nacl, nacl]))
    out["lammps-dump"] = (p, [nacl, nacl])
    p = folder / "structs.json"
    p.write_text(json.dumps([AseAtomsAdaptor.get_structure(a).as_dict() for a in (nacl, si)]))
    out["json"] = (p, [nacl, si])
    return out


TEXT_FORMATS = ["cif", "vasp", "extxyz", "lammps-data", "lammps-dump", "json"]
ALL_FORMATS = TEXT_FORMATS + ["db"]


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    folder = tmp_path_factory.mktemp("valid")
    out = _write_samples(folder)
    quiet = logging.getLogger("atomssl")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # LAMMPS "types as numbers" notes
    # read every sample once here: the forked children then find every parser imported
    for fmt, (path, atoms) in out.items():
        got = read(path)
        assert [s.formula for s in got] == [Structure.from_ase(a).formula for a in atoms], fmt
    yield out
    quiet.setLevel(level)  # later test files read atomssl's INFO lines


def _summary(path: str, format: str | None = None) -> list[tuple[str, int]]:
    """Runs in the child: read + validate, and re-check what validate promises."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = read(path, format=format)
    for s in structures:
        assert s.n_atoms > 0 and ((s.numbers >= 1) & (s.numbers <= 118)).all()
        assert np.isfinite(s.positions).all() and np.isfinite(s.cell).all()
        assert s.source == str(path)
    return [(s.formula, s.n_atoms) for s in structures]


def assert_clean(outcome, path: Path) -> None:
    """A correct result, or a StructureError naming the file; never a hang, crash or raw error."""
    if outcome.kind in ("hang", "crash"):
        again = bounded(
            _summary, str(path), timeout=4 * TIME_BOUND
        )  # a loaded machine is not a hang
        assert again.kind not in ("hang", "crash"), (
            f"{path}: {again.describe()}\n--- input:\n{_show(path)}"
        )
        outcome = again
    if outcome.kind == "ok":
        assert isinstance(outcome.value, list) and outcome.value, f"{path}: read returned nothing"
        return
    assert "StructureError" in outcome.error_type, (
        f"raw library error leaked:\n{outcome.describe()}\n--- input:\n{_show(path)}"
    )
    assert str(path) in outcome.message, f"error does not name the file: {outcome.message}"
    assert "\n" not in outcome.message.strip(), f"error is not one line: {outcome.message!r}"


def _show(path: Path) -> str:
    data = path.read_bytes()[:1500]
    try:
        return data.decode()
    except UnicodeDecodeError:
        return repr(data)


def _fuzz_path(samples, fmt: str) -> Path:
    path = samples[fmt][0]
    # keep the name pattern (POSCAR*, *.lammpstrj...) so that the format is detected from it
    return path.with_name("POSCAR_fuzz" if fmt == "vasp" else f"fuzz_{path.name}")


@st.composite
def garbled_text(draw, text: str) -> str:
    """``text`` with a few line-level edits: delete/duplicate/truncate lines, replace a word or
    insert a token, swap two lines."""
    lines = text.split("\n")
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            lines = [""]
        op = draw(st.integers(0, 5))
        i = draw(st.integers(0, len(lines) - 1))
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[draw(st.integers(0, len(lines) - 1))])
        elif op == 2:
            words = lines[i].split(" ")
            words[draw(st.integers(0, len(words) - 1))] = draw(st.sampled_from(TOKENS))
            lines[i] = " ".join(words)
        elif op == 3:
            k = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:k] + draw(st.sampled_from(TOKENS)) + lines[i][k:]
        elif op == 4:
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- hypothesis
@pytest.mark.parametrize("fmt", ALL_FORMATS)
@FUZZ
@given(data=st.binary(max_size=3000))
def test_random_bytes(samples, fmt, data):
    path = _fuzz_path(samples, fmt)
    path.write_bytes(data)
    assert_clean(bounded(_summary, str(path)), path)


@pytest.mark.parametrize("fmt", ALL_FORMATS)
@FUZZ
@given(cut=st.floats(0.0, 1.0))
def test_truncated(samples, fmt, cut):
    data = samples[fmt][0].read_bytes()
    path = _fuzz_path(samples, fmt)
    path.write_bytes(data[: int(cut * len(data))])
    assert_clean(bounded(_summary, str(path)), path)


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
@FUZZ
@given(data=st.data())
def test_garbled_text(samples, fmt, data):
    text = samples[fmt][0].read_text()
    path = _fuzz_path(samples, fmt)
    path.write_text(data.draw(garbled_text(text)))
    assert_clean(bounded(_summary, str(path)), path)


@pytest.mark.parametrize("fmt", ["db", "cif", "extxyz"])
@FUZZ
@given(
    flips=st.lists(
        st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)),
        min_size=1,
        max_size=20,
    )
)
def test_flipped_bytes(samples, fmt, flips):
    data = bytearray(samples[fmt][0].read_bytes())
    for where, value in flips:
        data[int(where * len(data))] = value
    path = _fuzz_path(samples, fmt)
    path.write_bytes(bytes(data))
    assert_clean(bounded(_summary, str(path)), path)


# ----------------------------------------------------------------------------- exact outcomes
def _frame_offsets(text: str, n_frames: int, marker) -> list[int]:
    """Character offsets where each frame starts (and the end of the text)."""
    lines = text.splitlines(keepends=True)
    starts, pos = [], 0
    for line in lines:
        if marker(line):
            starts.append(pos)
        pos += len(line)
    assert len(starts) == n_frames
    return starts + [len(text)]


@pytest.mark.parametrize("fmt", ["extxyz", "lammps-dump"])
def test_truncated_multiframe_keeps_complete_frames_or_names_the_frame(samples, fmt, tmp_path):
    """Cut at a frame boundary: exactly the complete frames come back, equal to the originals.
    Cut inside a frame: a typed error naming the file (and, for extxyz, the frame)."""
    path, frames = samples[fmt]
    text = path.read_text()
    if fmt == "extxyz":
        lines = text.splitlines(keepends=True)
        starts, i = [], 0
        pos = [0]
        for line in lines:
            pos.append(pos[-1] + len(line))
        while i < len(lines):  # an extxyz frame: count line, comment line, atoms
            starts.append(pos[i])
            i += int(lines[i]) + 2
        offsets = starts + [len(text)]
    else:
        offsets = _frame_offsets(text, len(frames), lambda line: line.startswith("ITEM: TIMESTEP"))
    cut_path = tmp_path / path.name
    for k in range(1, len(frames) + 1):
        cut_path.write_text(text[: offsets[k]])
        got = read(cut_path)
        assert len(got) == k
        for s, a in zip(got, frames):
            np.testing.assert_array_equal(s.numbers, a.numbers)
            np.testing.assert_allclose(s.positions, a.positions, atol=1e-5)
            np.testing.assert_allclose(s.cell, a.cell[:], atol=1e-5)
    # inside the last frame (past its header): the complete frames before it are not returned
    # silently as if the file were whole
    last = offsets[-2] + (offsets[-1] - offsets[-2]) // 2
    cut_path.write_text(text[:last])
    with pytest.raises(StructureError) as info:
        read(cut_path)
    assert str(cut_path) in str(info.value)
    if fmt == "extxyz":
        assert f"frame {len(frames) - 1}" in str(info.value) or info.value.index == len(frames) - 1


def test_bulk_iteration_yields_one_error_per_bad_file_and_goes_on(samples, tmp_path):
    """Garbled files between good ones: each bad file is one StructureError naming it, and every
    good structure still comes through (the --skip-bad path of import)."""
    import random

    rnd = random.Random(0)
    paths, n_good = [], 0
    for fmt in ALL_FORMATS:
        src, frames = samples[fmt]
        good = tmp_path / src.name.replace("POSCAR", "POSCAR_good")
        good.write_bytes(src.read_bytes())
        bad = tmp_path / ("POSCAR_bad" if fmt == "vasp" else f"bad_{src.name}")
        bad.write_bytes(bytes(rnd.getrandbits(8) for _ in range(200)))
        paths += [good, bad]
        n_good += len(frames)
    entries = list(iter_entries(paths))
    errors = [e for e in entries if isinstance(e, StructureError)]
    assert sum(isinstance(e, Structure) for e in entries) == n_good
    assert sorted(e.source for e in errors) == sorted(str(p) for p in paths[1::2])


# ----------------------------------------------------------------------------- absurd contents
def test_atoms_far_outside_the_cell_read_and_graph_like_wrapped(tmp_path):
    """A POSCAR/extxyz with atoms 1e6 cells away reads fine; its graph equals the wrapped one's."""
    from atomssl.graph import radius_graph

    atoms = _nacl()
    far = atoms.copy()
    far.positions[[0, 5]] += np.array([1e6, -3e6, 2e6]) * 5.64  # whole lattice translations away
    path = tmp_path / "far.extxyz"
    ase.io.write(path, far)
    (s,) = read(path)
    np.testing.assert_allclose(s.positions, far.positions, rtol=0, atol=1e-6)
    ref = radius_graph(s.wrapped(), 4.0)
    for engine in ("auto", "vesin", "pymatgen"):
        out = bounded(lambda engine=engine: radius_graph(s, 4.0, engine=engine))
        assert out.kind == "ok", out.describe()
        g = out.value
        a, b = g.sorted(), ref.sorted()
        np.testing.assert_array_equal(a.src, b.src)
        np.testing.assert_array_equal(a.dst, b.dst)
        np.testing.assert_allclose(a.distance, b.distance, atol=1e-6)
        # the shifts refer to the given (unwrapped) positions
        np.testing.assert_allclose(np.linalg.norm(g.vec, axis=1), g.distance, atol=1e-6)


def test_duplicate_atoms_are_overlap_errors_naming_file_and_frame(tmp_path):
    nacl = _nacl()
    dup = nacl + nacl[3:4]  # atom 8 duplicates atom 3
    path = tmp_path / "dup.extxyz"
    ase.io.write(path, [nacl, dup])
    with pytest.raises(
        OverlapError, match=r"dup\.extxyz \[index 1\].*atoms 3 and 8 are 0\.0000 A apart"
    ):
        read(path)
    assert len(read(path, index=0)) == 1
    cif = tmp_path / "dup.cif"
    ase.io.write(cif, dup)
    # CIF: pymatgen may merge exact duplicates; either way the result has no overlapping atoms
    out = bounded(_summary, str(cif))
    assert_clean(out, cif)
