"""LAMMPS simulations: one-component crystallisation (slow cooling) written as extxyz
trajectories, and the amorphous-silicon melt-quench of the motif VAE."""

from ._crystallise import CrystallisationConfig, crystallise
from ._lammps import SimulationError, open_lammps, run_lammps
from ._melt_quench import MeltQuenchConfig, melt_quench
from ._potentials import KINDS, PairPotential

__all__ = [
    "SimulationError",
    "open_lammps",
    "run_lammps",
    "KINDS",
    "PairPotential",
    "CrystallisationConfig",
    "crystallise",
    "MeltQuenchConfig",
    "melt_quench",
]
