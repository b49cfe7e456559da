"""``atomssl data simulate CONFIG``: a LAMMPS crystallisation trajectory from a YAML config."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register_data(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="simulate one-component crystallisation with LAMMPS (writes an extxyz trajectory)",
        description="Cool a one-component liquid through crystallisation (packaged configs: simulate_*); each "
        "frame's info records the potential, temperature schedule, seed and thermodynamic state.",
    )
    p.add_argument(
        "config",
        help="YAML file, or a packaged config by name (keys of atomssl.simulate.CrystallisationConfig)",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="override config entries, e.g. seed=2"
    )
    p.add_argument(
        "--out", "-o", help="output .extxyz (default runs/simulate/<name>_seed<seed>.extxyz)"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing (no progress bar)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar over the MD steps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..simulate import CrystallisationConfig, SimulationError, crystallise
    from ..utils import dump_config, load_config

    if args.out:
        from ._paths import output_file

        output_file(args.out)  # the trajectory goes only into an existing folder
    cfg_dict = load_config(args.config, {}, args.overrides, schema="simulate")
    try:
        cfg = CrystallisationConfig.from_dict(cfg_dict)
    except SimulationError as exc:
        raise ConfigError(f"{args.config}: {exc}") from None
    out = (
        Path(args.out) if args.out else Path("runs/simulate") / f"{cfg.name}_seed{cfg.seed}.extxyz"
    )
    t0 = time.perf_counter()
    from ..utils._progress import counting_bar

    with counting_bar(cfg.name, not (args.quiet or args.no_progress), unit="step") as progress:
        frames = crystallise(cfg, out, progress=progress)
    dump_config(cfg.to_dict(), out.with_suffix(".yaml"))
    if not args.quiet:
        last = frames[-1].labels
        print(
            f"{out}: {len(frames)} frames of {cfg.n_particles} particles in {time.perf_counter() - t0:.0f} s; "
            f"final T {last['temperature']:.3f}, density {last['density_measured']:.3f}"
        )
    return 0
