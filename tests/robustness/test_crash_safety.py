"""SIGKILL in the middle of writing leaves the previous state intact and readable.

Covered: ``atomic_write`` itself, ``atomssl data import`` (store), checkpoint writing
(``save_checkpoint``, and the trainer's ``last.pt`` during ``atomssl pretrain``) and the output of
``atomssl embed``. To kill *during* a write (not before or after it, which a timer cannot
guarantee), the child runs the real code with ``os.fdopen`` wrapped: when atomssl opens the
temporary file for one of the targets, the wrapper lets one write through, then signals the
parent and stops; the parent sends SIGKILL. The import is killed at several moments of a long
run instead (its store is written by SQLite, not through ``atomic_write``).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from conftest import sigkill_on_cue

from atomssl.data import StructureStore, import_structures

HERE = Path(__file__).resolve().parent
TRAIN_TESTS = HERE.parent / "train"  # the toy backbone of the trainer tests

# Wraps os.fdopen in the child: the temporary file of a target named in ATOMSSL_BLOCK_ON (a
# substring of the temp file name, e.g. ".last.pt.") gets one write through, then the child
# creates ATOMSSL_BLOCKED (the parent's cue) and sleeps until killed. ATOMSSL_BLOCK_AFTER_EXISTS:
# only block when that file already exists (i.e. when an old version is being replaced).
BLOCKER = textwrap.dedent(
    """
    import os, sys, time
    _fdopen = os.fdopen
    _needle = os.environ["ATOMSSL_BLOCK_ON"]
    _cue = os.environ["ATOMSSL_BLOCKED"]
    _must_exist = os.environ.get("ATOMSSL_BLOCK_AFTER_EXISTS")

    class _Blocking:
        def __init__(self, fh):
            self._fh, self._n = fh, 0
        def write(self, data):
            if self._n >= 1:
                self._fh.flush()
                open(_cue, "w").close()
                while True:
                    time.sleep(1)
            self._n += 1
            return self._fh.write(data)
        def __getattr__(self, name):
            return getattr(self._fh, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return self._fh.__exit__(*exc)

    def fdopen(fd, *args, **kwargs):
        fh = _fdopen(fd, *args, **kwargs)
        try:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return fh
        if _needle in name and (not _must_exist or os.path.exists(_must_exist)):
            return _Blocking(fh)
        return fh

    os.fdopen = fdopen
    """
)


def _env(**extra) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(TRAIN_TESTS), env.get("PYTHONPATH", "")])
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def kill_while_writing(
    code: str, needle: str, tmp_path: Path, must_exist: Path | None = None, timeout: float = 240
) -> None:
    """Run ``code`` in a child with the blocker; SIGKILL it once it is inside the write."""
    cue = tmp_path / f"blocked-{time.monotonic_ns()}"
    env = _env(ATOMSSL_BLOCK_ON=needle, ATOMSSL_BLOCKED=cue)
    if must_exist is not None:
        env["ATOMSSL_BLOCK_AFTER_EXISTS"] = str(must_exist)
    proc = subprocess.Popen(
        [sys.executable, "-c", BLOCKER + "\n" + code],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    sigkill_on_cue(proc, cue, timeout)


def _leftover_temps(folder: Path, name: str) -> list[Path]:
    return [
        p for p in folder.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(".tmp")
    ]


# ----------------------------------------------------------------------------- atomic_write
def test_sigkill_during_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old contents\n" * 1000)
    before = _digest(target)
    code = textwrap.dedent(
        f"""
        from atomssl.utils import atomic_write
        with atomic_write({str(target)!r}) as fh:
            for _ in range(100):
                fh.write(b"new" * 100_000)
        """
    )
    kill_while_writing(code, ".data.bin.", tmp_path)
    assert _digest(target) == before
    temps = _leftover_temps(tmp_path, "data.bin")
    assert (
        len(temps) == 1 and 0 < temps[0].stat().st_size < 300 * 100_000
    )  # the write was cut short
    # the next write still works and replaces the file
    from atomssl.utils import atomic_write

    with atomic_write(target) as fh:
        fh.write(b"fresh")
    assert target.read_bytes() == b"fresh"


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    from atomssl.utils import atomic_write

    target = tmp_path / "shared.txt"
    target.write_text("old")
    target.chmod(0o640)
    with atomic_write(target, "w") as fh:
        fh.write("new")
    assert target.read_text() == "new" and target.stat().st_mode & 0o777 == 0o640
    # a new file gets what open() would give it: 0666 & ~umask
    old_mask = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "new.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old_mask)
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o640


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.slow
def test_sigkill_during_checkpoint_save_keeps_the_old_checkpoint(tmp_path):
    from atomssl.representation import build_backbone
    from atomssl.train import load_backbone, load_checkpoint, save_checkpoint

    path = tmp_path / "model.pt"
    config = {"name": "megnet"}
    save_checkpoint(path, build_backbone(config), config={"note": "old"}, metrics={"loss": 1.0})
    before = _digest(path)
    code = textwrap.dedent(
        f"""
        import torch
        from atomssl.representation import build_backbone
        from atomssl.train import save_checkpoint
        torch.manual_seed(1)
        save_checkpoint({str(path)!r}, build_backbone({config!r}), config={{"note": "new"}})
        """
    )
    kill_while_writing(code, ".model.pt.", tmp_path)
    assert _digest(path) == before
    ck = load_checkpoint(path)  # weights_only, and complete
    assert ck["config"] == {"note": "old"} and ck["metrics"] == {"loss": 1.0}
    load_backbone(path)


@pytest.mark.slow
def test_sigkill_while_the_trainer_writes_last_checkpoint_then_resume(tmp_path):
    """``atomssl pretrain`` killed while replacing ``last.pt`` (after epoch 2): the epoch-1
    checkpoint is intact, and ``--resume`` finishes the run from it."""
    import torch
    import yaml

    sys.path.insert(0, str(TRAIN_TESTS))
    from toy_backbone import tiny_config

    from atomssl.train import load_checkpoint

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(trainer__max_epochs=3)))
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.pt"
    code = textwrap.dedent(
        f"""
        import sys
        from atomssl.cli.main import main
        sys.exit(main(["pretrain", "--config", {str(cfg)!r}, "--out", {str(run)!r}, "--no-progress"]))
        """
    )
    kill_while_writing(code, ".last.pt.", tmp_path, must_exist=last)
    ck = load_checkpoint(last)
    assert ck["epoch"] == 0  # the first save (after epoch 0) is intact
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "atomssl.cli.main",
            "pretrain",
            "--resume",
            str(run),
            "--no-progress",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert torch.load(last, weights_only=True)["epoch"] == 2


# ----------------------------------------------------------------------------- embed output
@pytest.mark.slow
def test_sigkill_while_embed_writes_keeps_the_previous_output(tmp_path):
    from atomssl.representation import build_backbone
    from atomssl.train import save_checkpoint

    nacl = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    ase.io.write(tmp_path / "x.extxyz", [nacl, bulk("Si", "diamond", a=5.43)])
    ck = tmp_path / "model.pt"
    save_checkpoint(ck, build_backbone({"name": "megnet"}))
    out = tmp_path / "emb.npz"
    args = ["embed", str(tmp_path / "x.extxyz"), "--checkpoint", str(ck), "--out", str(out)]
    res = subprocess.run(
        [sys.executable, "-m", "atomssl.cli.main", *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    before = _digest(out)
    ase.io.write(
        tmp_path / "x.extxyz", [nacl] * 3
    )  # a different input: the new output would differ
    code = f"import sys\nfrom atomssl.cli.main import main\nsys.exit(main({args!r}))\n"
    kill_while_writing(code, ".emb.npz.", tmp_path)
    assert _digest(out) == before
    with np.load(out) as z:
        assert z["structure"].shape[0] == 2 and np.isfinite(z["structure"]).all()


# ----------------------------------------------------------------------------- dataset import
@pytest.fixture(scope="module")
def many_files(tmp_path_factory) -> Path:
    """~1500 structures in 150 files: an import that takes a few seconds."""
    d = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    base = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    for i in range(150):
        frames = []
        for _ in range(10):
            a = base.copy()
            a.positions += rng.normal(0, 0.03, a.positions.shape)
            frames.append(a)
        ase.io.write(d / f"f{i:03d}.extxyz", frames)
    return d


def _store_snapshot(path: Path) -> list[tuple[str, np.ndarray]]:
    with StructureStore(path) as store:
        return [(s.id, s.positions.copy()) for s in store]


def test_sigkill_during_import_keeps_the_previous_store(many_files, tmp_path):
    store = tmp_path / "store.db"
    first = sorted(many_files.iterdir())[:3]
    import_structures(first, store)
    store.chmod(0o640)  # a store shared with a group: every import must keep its mode
    before = _store_snapshot(store)
    digest = _digest(store)
    assert len(before) == 30
    killed_inside = 0
    debris: set[str] = set()
    for delay in (0.3, 1.0, 2.0):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "atomssl.cli.main",
                "data",
                "import",
                str(many_files),
                "--out",
                str(store),
            ],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
        )
        try:
            # wait until the import has started writing its temporary store, then a bit longer
            deadline = time.monotonic() + 240
            while (
                not list(tmp_path.glob(f".store.db.*.{proc.pid}.*.tmp.db")) and proc.poll() is None
            ):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # Atomicity: whatever the moment of the kill, the store is either exactly the old one or
        # the complete new one (the import may have renamed its store just before the signal).
        unchanged = _digest(store) == digest
        # what a killed import leaves behind (its temporary store, SQLite's journal): kept here,
        # the next import must clear it
        debris |= {p.name for p in tmp_path.glob(".store.db.*")}
        assert store.stat().st_mode & 0o777 == 0o640
        if unchanged:
            killed_inside += 1
            assert [(i, p.tolist()) for i, p in _store_snapshot(store)] == [
                (i, p.tolist()) for i, p in before
            ]
        else:
            assert len(_store_snapshot(store)) == 1500, "a killed import left a partial store"
            break
    assert killed_inside >= 1
    assert any(name.endswith(".tmp.db") for name in debris)
    assert any(name.endswith(".tmp.db-journal") for name in debris), (
        debris
    )  # SQLite's rollback journal
    report = import_structures(many_files, store)  # a later import works normally
    assert report.n_written == 1500 and len(_store_snapshot(store)) == 1500
    # ...and leaves nothing of the killed ones behind, and the store's mode as it was
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".store.db")) == []
    assert store.stat().st_mode & 0o777 == 0o640
