"""Shared pytest fixtures (small structures of every periodicity, fast to build, no I/O) and
helpers (``from conftest import sigkill_on_cue``)."""

from __future__ import annotations

import numpy as np
import pytest


def _small_structures():
    from ase import Atoms
    from ase.build import bulk, fcc111, molecule

    si = bulk("Si", "diamond", a=5.43)  # 2 atoms, triclinic primitive cell
    si.rattle(0.02, seed=1)
    nacl = bulk("NaCl", "rocksalt", a=5.64, cubic=True)  # 8 atoms, cubic, two species
    nacl.rattle(0.02, seed=2)
    tri = Atoms(
        "MgO2",
        scaled_positions=[[0.1, 0.2, 0.3], [0.55, 0.45, 0.6], [0.8, 0.9, 0.05]],
        cell=[[4.0, 0.0, 0.0], [1.2, 3.8, 0.0], [0.7, -0.9, 4.4]],
        pbc=True,
    )  # skewed triclinic cell
    water = molecule("H2O")  # no pbc, no cell
    slab = fcc111("Al", size=(2, 2, 2), vacuum=5.0)  # mixed pbc (True, True, False)
    return {"si": si, "nacl": nacl, "triclinic": tri, "water": water, "slab": slab}


@pytest.fixture
def small_atoms():
    """Fresh dict name -> ``ase.Atoms``: si, nacl, triclinic (all periodic), water (no pbc), slab (mixed pbc)."""
    return _small_structures()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny models run several times faster than with threads
    contending on a busy machine, and in-process runs do the arithmetic of children started
    with ``OMP_NUM_THREADS=1``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sigkill_on_cue(proc, cue, timeout: float = 120, poll: float = 0.05) -> None:
    """SIGKILL the child ``proc`` as soon as it creates the file ``cue`` (it must not end first,
    nor take longer than ``timeout`` s to get there); always reaps it."""
    import signal
    import time

    try:
        deadline = time.monotonic() + timeout
        while not cue.exists():
            assert proc.poll() is None, (
                f"child ended before its cue: {proc.stderr.read().decode()[-3000:]}"
            )
            assert time.monotonic() < deadline, "child never reached its cue"
            time.sleep(poll)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
