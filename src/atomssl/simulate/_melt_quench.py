"""Amorphous silicon by LAMMPS melt-quench with the Vink et al. (2001) modified Stillinger-Weber potential.

The original SW silicon over-coordinates the glass (mean coordination ~4.4); Vink, Barkema, van der
Weg & Mousseau (J. Non-Cryst. Solids 282, 248 (2001)) raise the three-body strength lambda from 21 to
31.5 and lower epsilon from 2.1683 to 1.64833 eV, which gives ~3.99 with ~98 % four-fold atoms.
Atoms start from random positions: a diamond start in a commensurate box recrystallises.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data import Structure
from ._lammps import SimulationError, open_lammps

log = logging.getLogger(__name__)

SI_MASS = 28.0855
# Volume per atom of crystalline Si (a = 5.431 A); the NPT run relaxes the density from here.
SI_VOLUME_PER_ATOM = 5.431**3 / 8

# Stillinger-Weber parameter sets (LAMMPS "sw" file order):
# epsilon sigma a lambda gamma costheta0 A B p q tol
SW_PARAMETERS = {
    "vink": (
        1.64833,
        2.0951,
        1.80,
        31.5,
        1.20,
        -1.0 / 3.0,
        7.049556277,
        0.6022245584,
        4.0,
        0.0,
        0.0,
    ),
    "original": (
        2.1683,
        2.0951,
        1.80,
        21.0,
        1.20,
        -1.0 / 3.0,
        7.049556277,
        0.6022245584,
        4.0,
        0.0,
        0.0,
    ),
}


@dataclass
class MeltQuenchConfig:
    """Protocol of one melt-quench run (times in ps, temperatures in K, pressure in bar)."""

    n_atoms: int = 512
    seed: int = 1
    potential: str = "vink"
    t_melt: float = 3000.0
    t_final: float = 300.0
    melt_ps: float = 20.0
    quench_rate: float = 1e13  # K/s
    anneal_ps: float = 10.0
    timestep_fs: float = 1.0
    pressure: float = 0.0
    min_start_distance: float = 2.0  # A, between random initial atoms
    chunk_steps: int = 5000  # steps per LAMMPS "run" call (progress granularity)

    @property
    def quench_steps(self) -> int:
        seconds = (self.t_melt - self.t_final) / self.quench_rate
        return max(1, int(round(seconds * 1e15 / self.timestep_fs)))

    def steps(self, ps: float) -> int:
        return max(0, int(round(ps * 1000.0 / self.timestep_fs)))


def write_sw_file(path: str | os.PathLike, potential: str = "vink") -> Path:
    """Write a one-element Si Stillinger-Weber parameter file for LAMMPS ``pair_style sw``."""
    if potential not in SW_PARAMETERS:
        raise SimulationError(
            f"unknown SW potential {potential!r}; choose from {sorted(SW_PARAMETERS)}"
        )
    values = " ".join(f"{v:.12g}" for v in SW_PARAMETERS[potential])
    path = Path(path)
    path.write_text(f"# Si Stillinger-Weber ({potential})\nSi Si Si {values}\n")
    return path


def melt_quench(
    config: MeltQuenchConfig | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    **overrides,
) -> Structure:
    """Run one melt-quench with LAMMPS and return the final cell as a :class:`Structure`.

    Random start (minimum separation ``min_start_distance``) at crystal density, energy minimisation,
    NPT melt at ``t_melt``, linear NPT quench to ``t_final`` at ``quench_rate``, NPT anneal at ``t_final``.
    ``progress(stage, done_steps, total_steps)`` is called after every chunk.
    """
    merged = {**asdict(config or MeltQuenchConfig()), **overrides}
    unknown = set(merged) - set(MeltQuenchConfig.__dataclass_fields__)
    if unknown:
        raise SimulationError(f"unknown melt-quench options {sorted(unknown)}")
    try:  # values from YAML/CLI may arrive as strings (YAML reads "1e13" as a string)
        defaults = asdict(MeltQuenchConfig())
        cfg = MeltQuenchConfig(**{k: type(defaults[k])(v) for k, v in merged.items()})
    except (TypeError, ValueError) as exc:
        raise SimulationError(f"invalid melt-quench option: {exc}") from exc
    if cfg.n_atoms < 2:
        raise SimulationError(f"n_atoms must be >= 2, got {cfg.n_atoms}")
    if cfg.seed < 1:
        raise SimulationError(f"LAMMPS seeds must be positive integers, got {cfg.seed}")
    length = (cfg.n_atoms * SI_VOLUME_PER_ATOM) ** (1.0 / 3.0)
    rng = np.random.default_rng(cfg.seed)
    seeds = rng.integers(1, 2**30, size=4)
    total = cfg.steps(cfg.melt_ps) + cfg.quench_steps + cfg.steps(cfg.anneal_ps)
    done = 0

    with tempfile.TemporaryDirectory(prefix="atomssl-lmp-") as tmp:
        sw = write_sw_file(Path(tmp) / "Si.sw", cfg.potential)
        lmp = open_lammps()
        try:
            for line in [
                "units metal",
                "atom_style atomic",
                "boundary p p p",
                f"region box block 0 {length:.8f} 0 {length:.8f} 0 {length:.8f}",
                "create_box 1 box",
                f"create_atoms 1 random {cfg.n_atoms} {seeds[0]} NULL overlap {cfg.min_start_distance} maxtry 1000",
                f"mass 1 {SI_MASS}",
                "pair_style sw",
                f"pair_coeff * * {sw} Si",
                "neighbor 1.0 bin",
                "neigh_modify every 1 delay 0 check yes",
                "min_style cg",
                "minimize 1.0e-6 1.0e-8 2000 20000",
                "reset_timestep 0",
                f"timestep {cfg.timestep_fs / 1000.0}",
                f"velocity all create {cfg.t_melt} {seeds[1]} mom yes rot yes dist gaussian",
                "thermo 1000",
            ]:
                lmp.command(line)
            n = lmp.get_natoms()
            if n != cfg.n_atoms:
                raise SimulationError(
                    f"LAMMPS placed {n} of {cfg.n_atoms} random atoms; lower min_start_distance"
                )
            tdamp, pdamp = 100 * cfg.timestep_fs / 1000.0, 1000 * cfg.timestep_fs / 1000.0
            stages = [
                ("melt", cfg.steps(cfg.melt_ps), cfg.t_melt, cfg.t_melt),
                ("quench", cfg.quench_steps, cfg.t_melt, cfg.t_final),
                ("anneal", cfg.steps(cfg.anneal_ps), cfg.t_final, cfg.t_final),
            ]
            for name, nsteps, t0, t1 in stages:
                if nsteps == 0:
                    continue
                lmp.command(
                    f"fix md all npt temp {t0} {t1} {tdamp} iso {cfg.pressure} {cfg.pressure} {pdamp}"
                )
                start = lmp.extract_global("ntimestep")
                stop = start + nsteps
                s = 0
                while s < nsteps:
                    chunk = min(cfg.chunk_steps, nsteps - s)
                    # start/stop keep the temperature ramp linear across the chunks
                    lmp.command(f"run {chunk} start {start} stop {stop}")
                    s += chunk
                    done += chunk
                    if progress is not None:
                        progress(name, done, total)
                lmp.command("unfix md")
            structure = _extract(lmp, cfg)
        finally:
            lmp.close()
    return structure


def _extract(lmp, cfg: MeltQuenchConfig) -> Structure:
    nlocal = lmp.extract_global("nlocal")
    x = np.array(lmp.numpy.extract_atom("x")[:nlocal], dtype=np.float64)  # ghosts sliced off
    ids = np.array(lmp.numpy.extract_atom("id")[:nlocal])
    order = np.argsort(ids)
    boxlo, boxhi, xy, yz, xz, _periodic, _ = lmp.extract_box()
    lo, hi = np.asarray(boxlo), np.asarray(boxhi)
    cell = np.array([[hi[0] - lo[0], 0, 0], [xy, hi[1] - lo[1], 0], [xz, yz, hi[2] - lo[2]]])
    energy = float(lmp.get_thermo("pe")) / cfg.n_atoms
    temperature = float(lmp.get_thermo("temp"))
    pressure = float(lmp.get_thermo("press"))
    structure = Structure(
        numbers=np.full(cfg.n_atoms, 14),
        positions=x[order] - lo,
        cell=cell,
        pbc=np.ones(3, dtype=bool),
        labels={
            "energy_per_atom": energy,
            "temperature": temperature,
            "pressure": pressure,
            "seed": cfg.seed,
            "potential": cfg.potential,
            "quench_rate": cfg.quench_rate,
        },
        id=f"a-Si-{cfg.potential}-{cfg.n_atoms}-seed{cfg.seed}",
    ).wrapped()
    return structure


def write_cells(structures: list[Structure], path: str | os.PathLike) -> Path:
    """Write cells to one extxyz file atomically (labels become ``info`` keys)."""
    import ase.io

    from ..utils import atomic_write

    path = Path(path)
    with atomic_write(path, "w") as fh:
        ase.io.write(fh, [s.to_ase() for s in structures], format="extxyz")
    return path


def read_cells(path: str | os.PathLike) -> list[Structure]:
    """Read cells written by :func:`write_cells` (or any extxyz) as :class:`Structure` records."""
    from ..data import read

    return read(
        path, validate=False
    )  # a missing or bad file: one StructureError naming it (and the frame)
