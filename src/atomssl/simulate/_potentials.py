"""Isotropic pair potentials for one-component self-assembly, as LAMMPS commands.

``lj`` uses LAMMPS' own ``lj/cut``; every other kind is evaluated here and handed to LAMMPS as a
``pair_style table`` file (linear interpolation on a fine grid), so a new functional form needs only
an energy/force function.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ._lammps import SimulationError


def _ipl(params: dict) -> tuple[Callable, Callable]:
    n, eps, sig = (
        float(params.get("n", 6)),
        float(params.get("epsilon", 1.0)),
        float(params.get("sigma", 1.0)),
    )

    def energy(r):
        return eps * (sig / r) ** n

    def force(r):  # -dV/dr
        return n * eps * sig**n / r ** (n + 1)

    return energy, force


def _opp(params: dict) -> tuple[Callable, Callable]:
    # Oscillating pair potential, V(r) = r^-15 + cos(k (r - r0) - phi) r^-3 (Mihalkovic & Henley 2012;
    # Engel et al., Nat. Mater. 14, 109 (2015) use r0 = 1.25).
    k, phi, r0 = float(params["k"]), float(params["phi"]), float(params.get("r0", 1.0))

    def energy(r):
        return r**-15 + np.cos(k * (r - r0) - phi) * r**-3

    def force(r):
        arg = k * (r - r0) - phi
        return 15 * r**-16 + k * np.sin(arg) * r**-3 + 3 * np.cos(arg) * r**-4

    return energy, force


def _lj(params: dict) -> tuple[Callable, Callable]:
    eps, sig = float(params.get("epsilon", 1.0)), float(params.get("sigma", 1.0))

    def energy(r):
        return 4 * eps * ((sig / r) ** 12 - (sig / r) ** 6)

    def force(r):
        return 24 * eps * (2 * sig**12 / r**13 - sig**6 / r**7)

    return energy, force


KINDS: dict[str, Callable[[dict], tuple[Callable, Callable]]] = {
    "lj": _lj,
    "ipl": _ipl,
    "opp": _opp,
}


@dataclass
class PairPotential:
    """A one-component pair potential in reduced units.

    ``kind``: ``lj`` (params epsilon, sigma), ``ipl`` (inverse power law eps (sigma/r)^n; params n,
    epsilon, sigma) or ``opp`` (params k, phi, r0). Energies are shifted to zero at ``cutoff``.
    """

    kind: str = "lj"
    params: dict = field(default_factory=dict)
    cutoff: float = 2.5
    table_points: int = 4000
    r_min: float = 0.5  # inner end of a tabulated potential

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SimulationError(
                f"unknown pair potential kind {self.kind!r}; choose from {sorted(KINDS)}"
            )
        if not self.cutoff > self.r_min > 0:
            raise SimulationError(
                f"need cutoff > r_min > 0, got cutoff={self.cutoff}, r_min={self.r_min}"
            )
        if self.kind == "opp" and not {"k", "phi"} <= set(self.params):
            raise SimulationError("an 'opp' potential needs params k and phi")
        self.params = dict(self.params)

    def functions(self) -> tuple[Callable, Callable]:
        """(energy(r), force(r) = -dV/dr), unshifted."""
        return KINDS[self.kind](self.params)

    def energy(self, r) -> np.ndarray:
        """Shifted pair energy V(r) - V(cutoff) (zero beyond the cutoff)."""
        e, _ = self.functions()
        r = np.asarray(r, dtype=float)
        return np.where(r < self.cutoff, e(r) - e(self.cutoff), 0.0)

    def write_table(self, path: str | os.PathLike, keyword: str = "PAIR") -> Path:
        """Write a LAMMPS ``pair_style table`` file (N points, ``R`` spacing) for this potential."""
        e, f = self.functions()
        r = np.linspace(self.r_min, self.cutoff, self.table_points)
        v = e(r) - e(self.cutoff)
        force = f(r)
        if not (np.all(np.isfinite(v)) and np.all(np.isfinite(force))):
            raise SimulationError(
                f"{self.kind} potential is not finite on [{self.r_min}, {self.cutoff}]"
            )
        lines = [
            f"# atomssl {self.kind} {self.params}",
            "",
            keyword,
            f"N {self.table_points} R {self.r_min:.10g} {self.cutoff:.10g}",
            "",
        ]
        lines += [
            f"{i + 1} {ri:.10g} {vi:.12g} {fi:.12g}"
            for i, (ri, vi, fi) in enumerate(zip(r, v, force))
        ]
        path = Path(path)
        path.write_text("\n".join(lines) + "\n")
        return path

    def lammps_commands(self, table_path: str | os.PathLike | None) -> list[str]:
        """``pair_style``/``pair_coeff`` lines; tabulated kinds need ``table_path`` written first."""
        if self.kind == "lj":
            eps, sig = self.params.get("epsilon", 1.0), self.params.get("sigma", 1.0)
            return [
                f"pair_style lj/cut {self.cutoff}",
                f"pair_coeff 1 1 {eps} {sig}",
                "pair_modify shift yes",
            ]
        if table_path is None:
            raise SimulationError(f"a {self.kind} potential needs a table file")
        return [
            f"pair_style table linear {self.table_points}",
            f"pair_coeff 1 1 {Path(table_path)} PAIR {self.cutoff}",
        ]

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.kind}({args}; cutoff={self.cutoff})"

    def minimum(self) -> float:
        """Position of the deepest well inside the cutoff (numerical)."""
        r = np.linspace(max(self.r_min, 0.8), self.cutoff, 20000)
        return float(r[np.argmin(self.energy(r))])
