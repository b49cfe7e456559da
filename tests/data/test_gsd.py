"""HOOMD-blue GSD trajectories: positions, boxes (tilt factors), types, frames, damaged files."""

from __future__ import annotations

import itertools

import gsd.hoomd as gsd_hoomd  # a dependency of atomssl: no importorskip
import numpy as np
import pytest

from atomssl.data import FrameIndexError, iter_structures, read
from atomssl.errors import (
    EmptyStructureError,
    StructureError,
    UnknownElementError,
    UnreadableFileError,
)

TRICLINIC = [10.0, 11.0, 12.0, 0.1, -0.2, 0.3]  # Lx Ly Lz xy xz yz


def _frame(box, types, typeid, frac, step=0, dimensions=3):
    """A gsd Frame with particles at fractional coordinates ``frac`` of the HOOMD box
    (HOOMD's box is centred on the origin: position = (frac - 1/2) @ box vectors)."""
    f = gsd_hoomd.Frame()
    f.configuration.step = step
    f.configuration.box = list(map(float, box))
    f.configuration.dimensions = dimensions
    frac = np.asarray(frac, dtype=np.float64)
    f.particles.N = len(frac)
    f.particles.types = list(types)
    f.particles.typeid = np.asarray(typeid, dtype=np.uint32)
    f.particles.position = ((frac - 0.5) @ _hoomd_vectors(box)).astype(np.float32)
    return f


def _hoomd_vectors(box) -> np.ndarray:
    """Lattice vectors (rows) of a HOOMD box, from the HOOMD documentation, in float32 like GSD stores it."""
    lx, ly, lz, xy, xz, yz = (float(np.float32(v)) for v in box)
    return np.array([[lx, 0, 0], [xy * ly, ly, 0], [xz * lz, yz * lz, lz]])


def _write(path, frames) -> None:
    with gsd_hoomd.open(str(path), "w") as traj:
        for f in frames:
            traj.append(f)


def _written_positions(path, i) -> np.ndarray:
    with gsd_hoomd.open(str(path), "r") as traj:
        return np.asarray(traj[i].particles.position, dtype=np.float64)


def _random_frames(n_frames=5, n=6, box=TRICLINIC, types=("Si", "O"), seed=0):
    rng = np.random.default_rng(seed)
    typeid = np.arange(n) % len(types)
    return [
        _frame(box, types, typeid, rng.uniform(0.02, 0.98, (n, 3)), step=100 * k)
        for k in range(n_frames)
    ]


def test_orthorhombic_positions_box_and_types(tmp_path):
    box = [8.0, 9.0, 10.0, 0.0, 0.0, 0.0]
    path = tmp_path / "ortho.gsd"
    _write(
        path,
        [
            _frame(
                box,
                ["Ar", "Kr"],
                [0, 1, 0],
                [[0.1, 0.2, 0.3], [0.5, 0.5, 0.5], [0.9, 0.8, 0.7]],
                step=7,
            )
        ],
    )
    (s,) = read(path)
    assert s.source == str(path) and s.index == 0 and s.labels["timestep"] == 7
    np.testing.assert_array_equal(s.numbers, [18, 36, 18])
    np.testing.assert_array_equal(s.cell, np.diag([8.0, 9.0, 10.0]))
    assert s.pbc.all() and s.warnings == []
    # exactly what was written, moved from HOOMD's centred box to a cell starting at the origin
    np.testing.assert_array_equal(
        s.positions, _written_positions(path, 0) + np.array([4.0, 4.5, 5.0])
    )
    np.testing.assert_allclose(
        s.scaled_positions, [[0.1, 0.2, 0.3], [0.5, 0.5, 0.5], [0.9, 0.8, 0.7]], atol=1e-6
    )


def test_triclinic_box_matches_hoomd_and_freud_conventions(tmp_path):
    path = tmp_path / "tri.gsd"
    frames = _random_frames(n_frames=1, n=12)
    _write(path, frames)
    (s,) = read(path)
    a = _hoomd_vectors(TRICLINIC)
    np.testing.assert_array_equal(
        s.cell, a
    )  # a1 = (Lx,0,0), a2 = (xy Ly, Ly, 0), a3 = (xz Lz, yz Lz, Lz)
    written = _written_positions(path, 0)
    np.testing.assert_array_equal(s.positions, written + a.sum(axis=0) / 2)
    frac = s.scaled_positions
    assert (frac > 0).all() and (frac < 1).all()  # inside the cell that starts at the origin

    # minimum-image distances: brute force over images in our cell == freud on the HOOMD box
    def brute(pos, cell):
        shifts = np.array(list(itertools.product(range(-2, 3), repeat=3))) @ cell
        d = pos[None, :, None, :] - pos[:, None, None, :] + shifts[None, None]
        return np.linalg.norm(d, axis=-1).min(axis=-1)

    mine = brute(s.positions, s.cell)
    hoomd = brute(written, a)  # the same pairs in HOOMD's own frame
    np.testing.assert_allclose(mine, hoomd, atol=1e-9)
    freud = pytest.importorskip("freud")
    fbox = freud.box.Box.from_box(TRICLINIC)
    np.testing.assert_allclose(fbox.to_matrix().T, s.cell, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fbox.make_fractional(written), frac, atol=1e-6)
    i, j = np.triu_indices(len(written), 1)
    d_freud = fbox.compute_distances(written[i].astype(np.float32), written[j].astype(np.float32))
    # freud wraps the separation into the box: the true minimum image when shorter than half the
    # narrowest width of the cell, an upper bound otherwise
    widths = abs(np.linalg.det(a)) / np.linalg.norm(np.cross(a[[1, 2, 0]], a[[2, 0, 1]]), axis=1)
    short = mine[i, j] < widths.min() / 2
    assert short.sum() >= 10
    np.testing.assert_allclose(d_freud[short], mine[i, j][short], rtol=1e-5)
    assert (d_freud >= mine[i, j] * (1 - 1e-5)).all()


def test_2d_box_is_periodic_in_plane_only(tmp_path):
    path = tmp_path / "flat.gsd"
    f = _frame(
        [6.0, 7.0, 0.0, 0.25, 0.0, 0.0],
        ["A"],
        [0, 0, 0],
        [[0.1, 0.2, 0.5], [0.6, 0.3, 0.5], [0.4, 0.8, 0.5]],
        dimensions=2,
    )
    _write(path, [f])
    (s,) = read(path, species="types")
    np.testing.assert_array_equal(s.pbc, [True, True, False])
    np.testing.assert_array_equal(s.cell, [[6.0, 0, 0], [1.75, 7.0, 0], [0, 0, 0]])
    assert (s.positions[:, 2] == 0).all()
    np.testing.assert_allclose(
        s.positions[:, :2],
        (np.array([[0.1, 0.2], [0.6, 0.3], [0.4, 0.8]])) @ s.cell[:2, :2],
        atol=1e-5,
    )


def test_type_names_that_are_not_elements_need_an_option(tmp_path):
    path = tmp_path / "ab.gsd"
    _write(path, _random_frames(n_frames=2, types=("A", "B")))
    with pytest.raises(UnknownElementError) as err:
        read(path)
    msg = str(err.value)
    assert str(path) in msg and "'A', 'B'" in msg and "species=" in msg and "--species types" in msg
    assert err.value.index is None  # one error for the file, not one per frame
    for species in (
        {1: "Ar", 2: "Kr"},
        {"A": "Ar", "B": "Kr"},
        ["Ar", "Kr"],
        {"1": "Ar", "2": "Kr"},
    ):
        out = read(path, species=species)
        assert [s.formula for s in out] == ["Ar3Kr3"] * 2 and all(s.warnings == [] for s in out)
    points = read(path, species="types")
    np.testing.assert_array_equal(points[0].numbers, [1, 2, 1, 2, 1, 2])
    for s in points:
        assert (
            len(s.warnings) == 1
            and "point particles" in s.warnings[0]
            and "A=1, B=2" in s.warnings[0]
        )
    # an explicit switch wins over element-looking names too
    si = tmp_path / "sio.gsd"
    _write(si, _random_frames(n_frames=1))
    assert read(si)[0].formula == "O3Si3"
    np.testing.assert_array_equal(read(si, species="types")[0].numbers, [1, 2, 1, 2, 1, 2])
    # a mapping must cover every type used
    with pytest.raises(UnknownElementError, match=r"'B'.*missing from the species mapping"):
        read(path, species={"A": "Ar"})
    with pytest.raises(UnknownElementError, match=r"2 \('B'\).*missing"):
        read(path, species={1: "Ar"})
    with pytest.raises(UnknownElementError, match="'Qq' is not a chemical element"):
        read(path, species={"A": "Ar", "B": "Qq"})


def test_only_the_types_used_must_be_elements(tmp_path):
    path = tmp_path / "unused.gsd"
    _write(path, [_frame(TRICLINIC, ["Cu", "ghost"], [0, 0], [[0.2, 0.2, 0.2], [0.6, 0.6, 0.6]])])
    assert read(path)[0].formula == "Cu2"


def test_frame_selection(tmp_path):
    path = tmp_path / "traj.gsd"
    _write(path, _random_frames(n_frames=5))
    assert [s.index for s in read(path)] == [0, 1, 2, 3, 4]
    assert [s.labels["timestep"] for s in read(path)] == [0, 100, 200, 300, 400]
    assert [s.index for s in read(path, index=2)] == [2]
    assert [s.index for s in read(path, index=-1)] == [4]
    assert [s.index for s in read(path, index=-5)] == [0]
    assert [s.index for s in read(path, index=slice(1, 4))] == [1, 2, 3]
    assert [s.index for s in read(path, index=slice(0, None, 2))] == [0, 2, 4]
    assert [s.index for s in read(path, index="2:5")] == [2, 3, 4]
    assert [s.index for s in read(path, index="::-2")] == [4, 2, 0]
    assert read(path, index="7:9") == []
    shift = _hoomd_vectors(TRICLINIC).sum(axis=0) / 2
    np.testing.assert_array_equal(
        read(path, index=3)[0].positions, _written_positions(path, 3) + shift
    )
    with pytest.raises(FrameIndexError):
        read(path, index=5)
    with pytest.raises(FrameIndexError):
        read(path, index=-6)


def _fl_frames(path, frames: list[dict]) -> None:
    """A GSD file written chunk by chunk: each frame stores only the chunks given for it."""
    import gsd.fl

    with gsd.fl.open(
        str(path), "w", application="test", schema="hoomd", schema_version=[1, 4]
    ) as f:
        for chunks in frames:
            for name, data in chunks.items():
                f.write_chunk(name, data)
            f.end_frame()


def _types_chunk(names) -> np.ndarray:
    width = max(map(len, names)) + 1
    return np.array([list(n.encode()) + [0] * (width - len(n)) for n in names], dtype=np.int8)


def test_omitted_data_comes_from_frame_0(tmp_path):
    path = tmp_path / "sparse.gsd"
    rng = np.random.default_rng(3)
    pos = [rng.uniform(-4, 4, (4, 3)).astype(np.float32) for _ in range(2)]
    box = np.array(TRICLINIC, dtype=np.float32)
    _fl_frames(
        path,
        [
            {
                "configuration/box": box,
                "particles/N": np.array([4], np.uint32),
                "particles/types": _types_chunk(["Si", "O"]),
                "particles/typeid": np.array([0, 1, 1, 0], np.uint32),
                "particles/position": pos[0],
            },
            {
                "configuration/step": np.array([10], np.uint64),
                "particles/position": pos[1],
            },  # box, N, types from frame 0
            {"configuration/step": np.array([20], np.uint64)},  # positions from frame 0 too
        ],
    )
    out = read(path)
    shift = _hoomd_vectors(TRICLINIC).sum(axis=0) / 2
    for s in out:
        assert s.formula == "O2Si2"
        np.testing.assert_array_equal(s.numbers, [14, 8, 8, 14])
        np.testing.assert_array_equal(s.cell, _hoomd_vectors(TRICLINIC))
    assert [s.labels["timestep"] for s in out] == [0, 10, 20]
    np.testing.assert_array_equal(out[1].positions, pos[1].astype(np.float64) + shift)
    np.testing.assert_array_equal(out[2].positions, pos[0].astype(np.float64) + shift)


def test_frame_without_positions_and_another_n_is_refused(tmp_path):
    path = tmp_path / "nopos.gsd"
    _fl_frames(
        path,
        [
            {
                "configuration/box": np.array([5, 5, 5, 0, 0, 0], np.float32),
                "particles/N": np.array([2], np.uint32),
                "particles/types": _types_chunk(["C"]),
                "particles/position": np.array([[0, 0, 0], [1, 1, 1]], np.float32),
            },
            {
                "particles/N": np.array([3], np.uint32)
            },  # gsd would put all 3 particles at the origin
        ],
    )
    errors: list[StructureError] = []
    ok = list(iter_structures(path, skip_bad=True, errors=errors))
    assert [s.index for s in ok] == [0] and ok[0].formula == "C2"
    assert len(errors) == 1 and errors[0].index == 1 and "no particle positions" in str(errors[0])


def test_empty_frame_is_an_error_for_that_frame_only(tmp_path):
    path = tmp_path / "gap.gsd"
    frames = _random_frames(n_frames=3)
    empty = gsd_hoomd.Frame()
    empty.configuration.box = TRICLINIC
    empty.particles.N = 0
    frames[1] = empty
    _write(path, frames)
    with pytest.raises(EmptyStructureError, match=r"gap\.gsd \[index 1\]"):
        read(path, index=1)
    errors: list[StructureError] = []
    ok = list(iter_structures(path, skip_bad=True, errors=errors))
    assert [s.index for s in ok] == [0, 2]
    assert [(type(e), e.index) for e in errors] == [(EmptyStructureError, 1)]
    shift = _hoomd_vectors(TRICLINIC).sum(axis=0) / 2
    np.testing.assert_array_equal(ok[1].positions, _written_positions(path, 2) + shift)


def test_truncated_and_bogus_files(tmp_path):
    path = tmp_path / "cut.gsd"
    _write(path, _random_frames(n_frames=5))
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # the last frame's data is cut
    with pytest.raises(
        UnreadableFileError, match=r"cut\.gsd \[index 4\].*frame 4.*truncated or corrupt"
    ):
        read(path)
    assert [s.index for s in read(path, index="0:4")] == [0, 1, 2, 3]
    errors: list[StructureError] = []
    assert len(list(iter_structures(path, skip_bad=True, errors=errors))) == 4
    assert [(type(e), e.index) for e in errors] == [(UnreadableFileError, 4)]
    for cut in (len(data) // 2, 200, 1):
        path.write_bytes(data[: len(data) - cut])
        with pytest.raises(UnreadableFileError, match=r"cut\.gsd.*truncated or corrupt"):
            read(path)
    for name, content in (("text.gsd", b"hello\n"), ("empty.gsd", b"")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UnreadableFileError, match=name):
            read(tmp_path / name)
    with pytest.raises(StructureError):  # a GSD file named otherwise still needs format=
        (tmp_path / "x.bin").write_bytes(data)
        read(tmp_path / "x.bin")
    (tmp_path / "x.bin").write_bytes(data)
    assert len(read(tmp_path / "x.bin", format="gsd")) == 5


def test_cli_data_info(tmp_path, capsys):
    from atomssl.cli.main import main

    good = tmp_path / "good.gsd"
    _write(good, _random_frames(n_frames=2))
    assert main(["data", "info", str(good)]) == 0
    out = capsys.readouterr().out
    assert "O3Si3" in out and "2 fine, 0 with errors" in out

    ab = tmp_path / "ab.gsd"
    _write(ab, _random_frames(n_frames=2, types=("A", "B")))
    assert main(["data", "info", str(ab)]) == 1
    cap = capsys.readouterr()
    errors = [line for line in cap.out.splitlines() if "ab.gsd:" in line]
    assert (
        len(errors) == 1 and "--species types" in errors[0] and "Traceback" not in cap.out + cap.err
    )
    assert main(["data", "info", str(ab), "--species", "types"]) == 0
    assert "H3He3" in capsys.readouterr().out
    assert main(["data", "info", str(ab), "--species", "1=Ar,2=Kr"]) == 0
    assert "Ar3Kr3" in capsys.readouterr().out

    bad = tmp_path / "bad.gsd"
    bad.write_bytes(good.read_bytes()[:-300])
    assert main(["data", "info", str(bad)]) == 1
    cap = capsys.readouterr()
    errors = [line for line in cap.out.splitlines() if "bad.gsd:" in line]
    assert (
        len(errors) == 1 and "unreadable file" in errors[0] and "Traceback" not in cap.out + cap.err
    )


def test_order_reads_a_one_component_gsd(tmp_path, monkeypatch):
    """``atomssl order traj.gsd --species types|1=Ar`` passes the option to the generic readers."""
    import atomssl.cli.order as order_cli
    import atomssl.order
    from atomssl.cli.main import main

    path = tmp_path / "lj.gsd"
    _write(path, _random_frames(n_frames=2, types=("A",)))
    seen = []

    def fake_analyse(p, backbone, out, **kwargs):
        options = {k: kwargs[k] for k in ("species", "format") if k in kwargs}
        seen.append([s.formula for s in iter_structures(p, **options)])
        return {
            "frames": 2,
            "particles_per_frame": 6,
            "seconds": {"total": 0.0},
            "onset_frame": {
                "ssl_crystalline_fraction": None,
                "q6_mean": None,
                "steinhardt_solid_fraction": None,
            },
        }

    monkeypatch.setattr(atomssl.order, "analyse_trajectory", fake_analyse)
    monkeypatch.setattr(order_cli, "_backbone", lambda args: None)
    for species, formula in (("types", "H6"), ("1=Ar", "Ar6"), ("Ar", "Ar6")):
        assert (
            main(["order", str(path), "--species", species, "--out", str(tmp_path / "o"), "-q"])
            == 0
        )
        assert seen[-1] == [formula, formula]


def _hoomd_box_of(cell: np.ndarray) -> list[float]:
    """HOOMD box parameters of a lower-triangular cell (a1 along x, a2 in the xy plane)."""
    (lx, _, _), (a2x, ly, _), (a3x, a3y, lz) = cell
    return [lx, ly, lz, a2x / ly, a3x / lz, a3y / lz]


def test_a_crystal_in_a_triclinic_box_keeps_its_neighbours(tmp_path):
    """fcc Cu in its primitive (rhombohedral) cell, written as a tilted HOOMD box: every atom has
    its 12 nearest neighbours at a/sqrt(2) across the periodic boundaries."""
    from ase.build import bulk

    from atomssl.graph import radius_graph

    atoms = bulk("Cu", "fcc", a=3.6).repeat((3, 4, 5))
    cell, q = atoms.cell.standard_form()  # lower triangular, rotated by q
    positions = atoms.positions @ q.T
    box = _hoomd_box_of(np.asarray(cell))
    frac = np.linalg.solve(np.asarray(cell).T, positions.T).T % 1.0
    path = tmp_path / "cu.gsd"
    _write(path, [_frame(box, ["Cu"], np.zeros(len(atoms)), frac)])
    (s,) = read(path)
    assert s.formula == "Cu60"
    np.testing.assert_allclose(s.cell, cell, atol=1e-5)  # float32 storage
    g = radius_graph(s, 2.9)
    d = np.linalg.norm(g.vec, axis=1)
    np.testing.assert_allclose(d, 3.6 / np.sqrt(2), atol=1e-4)
    assert (np.bincount(g.src, minlength=len(s)) == 12).all()


def test_order_analysis_of_a_gsd_trajectory(tmp_path):
    torch = pytest.importorskip("torch")
    from atomssl.data import idealized_crystal
    from atomssl.order import analyse_trajectory, solid_fraction
    from atomssl.representation import build_backbone

    fcc = idealized_crystal("cF4-Cu", n_min=256, sigma=0.02, seed=3)
    lengths = np.diag(fcc.cell)
    path = tmp_path / "fcc.gsd"
    frac = fcc.scaled_positions % 1.0
    _write(
        path,
        [_frame([*lengths, 0, 0, 0], ["A"], np.zeros(fcc.n_atoms), frac, step=k) for k in range(2)],
    )
    s = read(path, species="types")[0]
    assert solid_fraction(s) == 1.0  # the crystal survives the box conventions
    torch.manual_seed(0)
    from atomssl.testing import tiny_gaa_config

    backbone = build_backbone(tiny_gaa_config()).eval()
    summary = analyse_trajectory(
        path,
        backbone,
        tmp_path / "out",
        particles=50,
        per_crystal=32,
        reference_n_min=256,
        species="types",
    )
    assert summary["frames"] == 2 and summary["particles_per_frame"] == 50
