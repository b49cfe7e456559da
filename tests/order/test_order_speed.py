"""Fast per-particle order inference: shared neighbour query, chunking, streaming, progress, the student, the benchmark."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from atomssl.data import idealized_crystal
from atomssl.order import analyse_trajectory, embed_clouds, frame_clouds, freud_system
from atomssl.order._steinhardt import (
    frame_steinhardt,
    knn_neighbors,
    particle_q6,
    solid_fraction,
    steinhardt_features,
)
from atomssl.representation import build_backbone
from atomssl.testing import tiny_gaa_config

TINY = tiny_gaa_config()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return build_backbone(TINY).eval()


def _per_query(structure, k=12):
    """The former per-quantity computations: each freud compute makes its own neighbour query."""
    import freud

    system = freud_system(structure)
    op = freud.order.Steinhardt(6)
    op.compute(system, neighbors={"num_neighbors": k})
    sl = freud.order.SolidLiquid(l=6, q_threshold=0.7, solid_threshold=6)
    sl.compute(system, neighbors={"num_neighbors": k})
    cols = []
    for average in (False, True):
        for l, wl in ((4, False), (6, False), (6, True)):
            st = freud.order.Steinhardt(l, average=average, wl=wl, wl_normalize=wl)
            st.compute(system, neighbors={"num_neighbors": k})
            cols.append(np.asarray(st.particle_order, dtype=np.float64))
    return (
        np.asarray(op.particle_order, np.float32),
        float(np.mean(sl.num_connections >= 6)),
        np.nan_to_num(np.stack(cols, axis=1)).astype(np.float32),
    )


@pytest.mark.parametrize("name,sigma", [("cF4-Cu", 0.08), ("cI2-W", 0.03), ("hP2-Mg", 0.15)])
def test_one_shared_neighbour_query_gives_the_per_quantity_results(name, sigma):
    s = idealized_crystal(name, n_min=400, sigma=sigma, seed=5)
    q6_ref, solid_ref, feats_ref = _per_query(s)
    # the same neighbours; freud sums them in another order, so q_l agree to float32 rounding
    same = {"rtol": 1e-5, "atol": 1e-6}
    q6, solid = frame_steinhardt(s)
    np.testing.assert_allclose(q6, q6_ref, **same)
    assert solid == solid_ref
    system = freud_system(s)
    nb = knn_neighbors(system, 12)
    assert len(nb.distances) == 12 * s.n_atoms and not np.any(
        nb.query_point_indices == nb.point_indices
    )
    np.testing.assert_allclose(
        steinhardt_features(s, system=system, neighbors=nb), feats_ref, **same
    )
    np.testing.assert_allclose(steinhardt_features(s), feats_ref, **same)
    np.testing.assert_allclose(particle_q6(s, system=system, neighbors=nb), q6_ref, **same)
    assert solid_fraction(s, system=system, neighbors=nb) == solid_ref
    with pytest.raises(ValueError, match="system"):
        particle_q6(s, neighbors=nb)


def test_chunk_size_does_not_change_embeddings(backbone):
    c = frame_clouds(idealized_crystal("cF4-Cu", n_min=108, sigma=0.06, seed=1))
    whole = embed_clouds(backbone, c, chunk=len(c))
    for chunk in (13, 50):
        np.testing.assert_allclose(embed_clouds(backbone, c, chunk=chunk), whole, atol=2e-5)


def _write_extxyz(path, frames):
    from ase.io import write

    write(path, [f.to_ase() for f in frames], format="extxyz")


def test_frames_are_read_lazily_and_results_spooled(tmp_path, backbone, monkeypatch):
    import atomssl.order._analysis as analysis

    frames = [
        idealized_crystal("cF4-Cu", n_min=108, sigma=sig, seed=i)
        for i, sig in enumerate((0.2, 0.2, 0.02))
    ]
    path = tmp_path / "traj.extxyz"
    _write_extxyz(path, frames)
    pulled = []
    real = analysis.iter_structures

    def counting(*a, **kw):
        for s in real(*a, **kw):
            pulled.append(s.index)
            yield s

    monkeypatch.setattr(analysis, "iter_structures", counting)
    seen = []
    summary = analyse_trajectory(
        path,
        backbone,
        tmp_path / "out",
        per_crystal=16,
        reference_n_min=108,
        progress=lambda n, m: seen.append((n, len(pulled), m)),
    )
    # when frame n is reported, only n frames have been read: one frame at a time
    assert [(n, p) for n, p, _ in seen] == [(1, 1), (2, 2), (3, 3)]
    assert all("particles/s" in m for *_, m in seen)
    assert summary["frames"] == 3 and summary["particles_per_s"] > 0
    z = np.load(tmp_path / "out" / "order.npz")
    assert z["distance"].shape == (3, frames[0].n_atoms) and z["q6"].shape == (3, frames[0].n_atoms)
    q6, _ = frame_steinhardt(frames[2])
    np.testing.assert_allclose(z["q6"][2], q6, rtol=1e-6)
    np.testing.assert_allclose(
        z["distance"][2],
        analysis.reference_embeddings(
            backbone, analysis.reference_clouds(per_crystal=16, n_min=108, seed=0, k=12), seed=0
        ).nearest(embed_clouds(backbone, frame_clouds(frames[2])))[0],
        rtol=1e-4,
        atol=1e-6,
    )
    assert not [
        p for p in (tmp_path / "out").iterdir() if p.name.startswith(".order-")
    ]  # spool files gone


def test_the_extxyz_reader_itself_is_lazy(tmp_path):
    """A garbled last frame: the first frames come out before the reader reaches it."""
    from atomssl.data import iter_structures

    frames = [idealized_crystal("cF4-Cu", n_min=32, sigma=0.05, seed=i) for i in range(3)]
    path = tmp_path / "t.extxyz"
    _write_extxyz(path, frames)
    text = path.read_text().splitlines(keepends=True)
    n = frames[0].n_atoms + 2
    path.write_text("".join(text[: 2 * n]) + text[2 * n] + "garbage line\n")
    it = iter_structures(path)
    assert next(it).n_atoms == frames[0].n_atoms and next(it).n_atoms == frames[1].n_atoms
    from atomssl.errors import StructureError

    with pytest.raises(StructureError):
        next(it)


def _cli(argv, capsys):
    from atomssl.cli.main import main

    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cli_progress_bar_over_frames_and_quiet(tmp_path, backbone, capsys, monkeypatch):
    import atomssl.order._analysis as analysis

    real = analysis.reference_clouds
    monkeypatch.setattr(
        analysis, "reference_clouds", lambda **kw: real(**{**kw, "per_crystal": 16, "n_min": 108})
    )
    ckpt = tmp_path / "bb.pt"
    _save(backbone, ckpt)
    frames = [idealized_crystal("cF4-Cu", n_min=108, sigma=0.1, seed=i) for i in range(2)]
    path = tmp_path / "traj.extxyz"
    _write_extxyz(path, frames)
    rc, out, err = _cli(
        ["order", str(path), "--checkpoint", str(ckpt), "--out", str(tmp_path / "a")], capsys
    )
    assert rc == 0
    assert "2frame" in (out + err).replace(" ", "") and "particles/s" in out + err
    rc, out, err = _cli(
        ["order", str(path), "--checkpoint", str(ckpt), "--out", str(tmp_path / "b"), "--quiet"],
        capsys,
    )
    assert rc == 0 and out == "" and "frame" not in err
    rc, out, err = _cli(
        [
            "order",
            str(path),
            "--checkpoint",
            str(ckpt),
            "--out",
            str(tmp_path / "c"),
            "--no-progress",
        ],
        capsys,
    )
    assert (
        rc == 0 and "it/s" not in err and "frame/s" not in err and "particles/s" in out
    )  # summary line only


def _save(backbone, path):
    from atomssl.train._checkpoint import save_checkpoint

    save_checkpoint(path, backbone)


def test_student_features_are_invariant_and_exact_q_l_and_its_file_round_trips(tmp_path, backbone):
    from atomssl.order._distil import distil
    from atomssl.order._student import OrderStudent, load_student, save_student

    fcc = torch.as_tensor(frame_clouds(idealized_crystal("cF4-Cu", n_min=108, sigma=0.0)))
    st = OrderStudent(8).eval()
    f = st.features(fcc)
    q = (
        f[:, st.features.n_features - st.features.l_max * 11 :]
        .reshape(len(fcc), st.features.l_max, 11)[:, :, 0]
        .sqrt()
    )
    np.testing.assert_allclose(q[:, 3].numpy(), 0.19094, atol=1e-4)  # q4 of fcc (addition theorem)
    np.testing.assert_allclose(q[:, 5].numpy(), 0.57452, atol=1e-4)  # q6
    c = torch.as_tensor(
        frame_clouds(idealized_crystal("cI2-W", n_min=54, sigma=0.0))
    )  # bcc: tied 8+6 shell, K = 14
    assert c.shape[1] == 14
    R = torch.as_tensor(Rotation.random(random_state=1).as_matrix(), dtype=torch.float32)
    padded = torch.cat([c[:, torch.randperm(14)], torch.zeros(len(c), 3, 3)], dim=1)
    np.testing.assert_allclose(st.features(padded @ R.T).numpy(), st.features(c).numpy(), atol=1e-5)
    groups = {
        "reference": frame_clouds(idealized_crystal("cF4-Cu", n_min=108, sigma=0.05, seed=0)),
        "held_out": frame_clouds(idealized_crystal("cI2-W", n_min=54, sigma=0.05, seed=0)),
    }
    student = distil(backbone, groups, hidden=16, steps=30, batch=32)
    assert {"r2_validation", "r2_held_out", "r2_train"} <= set(student.metrics)
    save_student(student, tmp_path / "s.pt")
    again = load_student(tmp_path / "s.pt")
    x = groups["reference"]
    # through the cloud batch (padding dropped there and put back), chunked, as analyse_trajectory runs it
    np.testing.assert_allclose(
        embed_clouds(again, x, chunk=17),
        student.embed(torch.as_tensor(x)).detach().numpy(),
        atol=1e-5,
    )
    from atomssl.errors import CheckpointError
    from atomssl.train._checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "bb.pt", backbone)
    with pytest.raises(CheckpointError, match="not an atomssl order student"):
        load_student(tmp_path / "bb.pt")


def test_distil_trains_on_the_engine_deterministically_and_stops_on_nan(tmp_path, backbone):
    from atomssl.errors import TrainingError
    from atomssl.order._distil import distil

    groups = {"reference": frame_clouds(idealized_crystal("cF4-Cu", n_min=108, sigma=0.05, seed=0))}
    a, b = (distil(backbone, groups, hidden=8, steps=6, batch=16, seed=5) for _ in range(2))
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert a.metrics["r2_validation"] == b.metrics["r2_validation"]
    c = distil(backbone, groups, hidden=8, steps=6, batch=16, seed=6, run_dir=tmp_path / "run")
    assert not torch.equal(a.mlp[0].weight, c.mlp[0].weight)
    assert (tmp_path / "run" / "logs").is_dir()  # the engine's CSV logs
    with pytest.raises(TrainingError, match="non-finite training loss") as exc:
        distil(backbone, groups, hidden=8, steps=6, batch=16, lr=1e30)
    assert "\n" not in str(exc.value)


def test_benchmark_quick_mode_runs_outside_results(tmp_path):
    out = tmp_path / "bench"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "order_speed.py"), "--quick", "--out", str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "order_speed.json").read_text())
    assert res["ssl_particles_per_s_per_core"] > 0 and res["student_particles_per_s_per_core"] > 0
    assert res["ratio_ssl_to_freud"] > 0 and "--quick" in res["command"]
    assert (out / "order_speed.md").read_text().startswith("# order inference speed")
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "order_speed.py"), "--quick"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "never writes into benchmarks/results" in r.stderr
