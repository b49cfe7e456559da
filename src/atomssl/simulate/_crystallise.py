"""One-component crystallisation by slow cooling with LAMMPS, written frame by frame as extxyz.

Protocol: fcc lattice at ``density`` -> melt at ``t_melt`` -> linear cooling ``t_melt -> t_final``
-> hold at ``t_final``; NPT (Nose-Hoover, isotropic, ``pressure``) or NVT. ``n_frames`` frames are
taken evenly over cooling + hold, each carrying the potential, schedule, seed and thermodynamic state
in its ``info`` so a trajectory documents how it was made.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data import Structure
from ..utils._schema import Schema
from ._lammps import SimulationError, open_lammps
from ._potentials import KINDS, PairPotential


@dataclass
class CrystallisationConfig:
    """A cooling run in reduced (LJ) units; ``n_cells`` fcc cells per side give 4 n^3 particles."""

    name: str = "lj_fcc"
    potential: PairPotential = field(default_factory=PairPotential)
    n_cells: int = 10
    density: float = 0.95
    ensemble: str = "npt"
    pressure: float = 5.0
    t_melt: float = 2.0
    t_final: float = 0.5
    melt_steps: int = 5000
    cool_steps: int = 40000
    hold_steps: int = 10000
    n_frames: int = 100
    timestep: float = 0.005
    tdamp: float = 0.5
    pdamp: float = 5.0
    seed: int = 1
    element: str = "Ar"  # species written to the file (reduced units throughout)

    def __post_init__(self) -> None:
        if isinstance(self.potential, dict):
            self.potential = PairPotential(**self.potential)
        if self.ensemble not in ("npt", "nvt"):
            raise SimulationError(f"ensemble must be 'npt' or 'nvt', got {self.ensemble!r}")
        if self.n_cells < 2:
            raise SimulationError(f"n_cells must be >= 2, got {self.n_cells}")
        if self.seed < 1:
            raise SimulationError(f"LAMMPS seeds must be positive integers, got {self.seed}")
        if self.n_frames < 1 or self.cool_steps + self.hold_steps < self.n_frames:
            raise SimulationError("need 1 <= n_frames <= cool_steps + hold_steps")

    @property
    def n_particles(self) -> int:
        return 4 * self.n_cells**3

    def schedule(self) -> dict:
        keys = (
            "ensemble",
            "pressure",
            "density",
            "t_melt",
            "t_final",
            "melt_steps",
            "cool_steps",
            "hold_steps",
            "timestep",
            "tdamp",
            "pdamp",
        )
        return {k: getattr(self, k) for k in keys}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["potential"] = self.potential.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CrystallisationConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise SimulationError(
                f"unknown simulation settings {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**d)


#: validated on load (atomssl.utils._schema): the fields above. Loosely, on purpose:
#: ``potential.params`` (the parameters of the chosen potential kind)
SCHEMA = Schema(
    "simulate",
    CrystallisationConfig().to_dict(),
    choices={"ensemble": ("npt", "nvt"), "potential.kind": tuple(KINDS)},
    open=("potential.params",),
)


def _frame(lmp, cfg: CrystallisationConfig, stage: str, t_set: float) -> Structure:
    nlocal = lmp.extract_global("nlocal")
    x = np.array(lmp.numpy.extract_atom("x")[:nlocal], dtype=np.float64)  # slice off ghost atoms
    ids = np.array(lmp.numpy.extract_atom("id")[:nlocal])
    order = np.argsort(ids)
    boxlo, boxhi, xy, yz, xz, _periodic, _ = lmp.extract_box()
    lo, hi = np.asarray(boxlo), np.asarray(boxhi)
    cell = np.array([[hi[0] - lo[0], 0, 0], [xy, hi[1] - lo[1], 0], [xz, yz, hi[2] - lo[2]]])
    from ase.data import atomic_numbers

    step = int(lmp.extract_global("ntimestep"))
    labels = {
        "system": cfg.name,
        "potential": json.dumps(cfg.potential.to_dict(), sort_keys=True),
        "schedule": json.dumps(cfg.schedule(), sort_keys=True),
        "seed": cfg.seed,
        "step": step,
        "time": step * cfg.timestep,
        "stage": stage,
        "t_set": float(t_set),
        "temperature": float(lmp.get_thermo("temp")),
        "potential_energy": float(lmp.get_thermo("pe")),
        "pressure_measured": float(lmp.get_thermo("press")),
        "density_measured": float(nlocal / abs(np.linalg.det(cell))),
    }
    return Structure(
        numbers=np.full(nlocal, atomic_numbers[cfg.element]),
        positions=x[order] - lo,
        cell=cell,
        pbc=np.ones(3, dtype=bool),
        labels=labels,
        id=f"{cfg.name}-seed{cfg.seed}-step{step}",
    ).wrapped()


def _frame_steps(cfg: CrystallisationConfig) -> list[int]:
    """Steps (counted from the start of cooling) at which frames are taken; the last is the end."""
    total = cfg.cool_steps + cfg.hold_steps
    return sorted({int(round(s)) for s in np.linspace(total / cfg.n_frames, total, cfg.n_frames)})


def crystallise(
    config: CrystallisationConfig,
    path: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Structure]:
    """Run the cooling protocol; return the frames and, with ``path``, write them as extxyz.

    Frames are appended to ``path + '.partial'`` as they are made and renamed at the end, so a long run
    that is stopped leaves its frames so far.
    """
    import ase.io

    cfg = config
    rng = np.random.default_rng(cfg.seed)
    seeds = rng.integers(1, 2**30, size=3)
    frames: list[Structure] = []
    partial = Path(str(path) + ".partial") if path is not None else None
    if partial is not None:
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text("")
    with tempfile.TemporaryDirectory(prefix="atomssl-cryst-") as tmp:
        table = None
        if cfg.potential.kind != "lj":
            table = cfg.potential.write_table(Path(tmp) / "pair.table")
        lmp = open_lammps()
        try:
            setup = [
                "units lj",
                "atom_style atomic",
                "boundary p p p",
                f"lattice fcc {cfg.density}",
                f"region box block 0 {cfg.n_cells} 0 {cfg.n_cells} 0 {cfg.n_cells}",
                "create_box 1 box",
                "create_atoms 1 box",
                "mass 1 1.0",
                *cfg.potential.lammps_commands(table),
                "neighbor 0.3 bin",
                "neigh_modify every 1 delay 0 check yes",
                f"timestep {cfg.timestep}",
                f"velocity all create {cfg.t_melt} {seeds[0]} mom yes rot yes dist gaussian",
                "thermo_style custom step temp pe press vol",
            ]
            for line in setup:
                lmp.command(line)

            def fix(t0: float, t1: float) -> str:
                if cfg.ensemble == "npt":
                    return f"fix md all npt temp {t0} {t1} {cfg.tdamp} iso {cfg.pressure} {cfg.pressure} {cfg.pdamp}"
                return f"fix md all nvt temp {t0} {t1} {cfg.tdamp}"

            # melt: the lattice start is forgotten well before cooling begins
            if cfg.melt_steps:
                lmp.command(fix(cfg.t_melt, cfg.t_melt))
                lmp.command(f"run {cfg.melt_steps}")
                lmp.command("unfix md")
            total = cfg.cool_steps + cfg.hold_steps
            done = 0
            for stage, n, t0, t1 in (
                ("cool", cfg.cool_steps, cfg.t_melt, cfg.t_final),
                ("hold", cfg.hold_steps, cfg.t_final, cfg.t_final),
            ):
                if n == 0:
                    continue
                lmp.command(fix(t0, t1))
                start = int(lmp.extract_global("ntimestep"))
                stage_begin = done
                for target in [s for s in _frame_steps(cfg) if stage_begin < s <= stage_begin + n]:
                    # start/stop keep the temperature ramp linear across run chunks
                    lmp.command(f"run {target - done} start {start} stop {start + n}")
                    done = target
                    t_set = t0 + (t1 - t0) * (done - stage_begin) / n
                    frame = _frame(lmp, cfg, stage, t_set)
                    frames.append(frame)
                    if partial is not None:
                        with open(partial, "a") as fh:
                            ase.io.write(fh, frame.to_ase(), format="extxyz")
                    if progress is not None:
                        progress(done, total)
                if done < stage_begin + n:
                    lmp.command(f"run {stage_begin + n - done} start {start} stop {start + n}")
                    done = stage_begin + n
                lmp.command("unfix md")
        except Exception as exc:
            if isinstance(exc, SimulationError):
                raise
            raise SimulationError(f"LAMMPS run {cfg.name!r} failed: {exc}") from exc
        finally:
            lmp.close()
    if partial is not None and path is not None:  # partial is set exactly when path is
        os.replace(partial, path)
    return frames
