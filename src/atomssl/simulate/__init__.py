"""LAMMPS simulations of one-component crystallisation (slow cooling) written as extxyz trajectories."""

from ._crystallise import CrystallisationConfig, crystallise
from ._lammps import SimulationError, open_lammps, run_lammps
from ._potentials import KINDS, PairPotential

__all__ = [
    "SimulationError",
    "open_lammps",
    "run_lammps",
    "KINDS",
    "PairPotential",
    "CrystallisationConfig",
    "crystallise",
]
