"""Shared reading options of the ``atomssl data`` sub-verbs (format, LAMMPS species/atom style, CIF)."""

from __future__ import annotations

import argparse
from typing import Any


def _species(text: str) -> dict[int, str] | str:
    """``"1=Si,2=O"`` or ``"Si,O"`` (types 1, 2, ...) -> {1: "Si", 2: "O"}; ``"types"`` -> ``"types"``
    (LAMMPS/GSD types as point particles)."""
    if text.strip().lower() == "types":
        return "types"
    out: dict[int, str] = {}
    for n, part in enumerate(p.strip() for p in text.split(",") if p.strip()):
        if "=" in part:
            t, el = part.split("=", 1)
            try:
                out[int(t)] = el.strip()
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"bad species entry {part!r}: expected TYPE=ELEMENT with TYPE a type number (1, 2, ...), or 'types'"
                ) from None
            if not el.strip():
                raise argparse.ArgumentTypeError(
                    f"bad species entry {part!r}: expected TYPE=ELEMENT"
                )
        else:
            out[n + 1] = part
    if not out:
        raise argparse.ArgumentTypeError("empty species mapping")
    return out


def add_read_options(parser: argparse.ArgumentParser) -> None:
    """Options controlling how structure files are read (shared by the data sub-verbs)."""
    g = parser.add_argument_group("reading")
    g.add_argument(
        "--format",
        default=None,
        help="file format (default: from the file name); e.g. cif, vasp, extxyz, db, lammps-data, lammps-dump-text",
    )
    g.add_argument(
        "--species",
        type=_species,
        default=None,
        metavar="MAP",
        help="LAMMPS/GSD type number -> element, e.g. '1=Si,2=O' or 'Si,O'; 'types': types as point "
        "particles (atomic number = type number, noted in the warnings)",
    )
    g.add_argument(
        "--atom-style",
        default=None,
        help="LAMMPS data atom_style (default: from the file's Atoms section comment)",
    )
    g.add_argument("--units", default=None, help="LAMMPS units (default: metal)")
    g.add_argument(
        "--disorder",
        choices=["refuse", "majority", "order"],
        default="refuse",
        help="CIF sites with partial occupancy: refuse (default), take the majority species, or order them "
        "on a bounded supercell (lowest Ewald energy); every change is listed in the structure's warnings",
    )
    g.add_argument(
        "--merge-tolerance",
        type=float,
        default=0.01,
        metavar="A",
        help="CIF: merge same-species symmetry images closer than A Angstrom (default 0.01)",
    )
    g.add_argument(
        "--formula-mismatch",
        choices=["refuse", "warn"],
        default="refuse",
        help="CIF: what to do when the atoms read do not match the file's declared formula (default refuse)",
    )
    g.add_argument(
        "--cif-reader", choices=["auto", "pymatgen", "ase"], default="auto",
        help="CIF: take this parser's reading when pymatgen and ASE disagree (default: refuse the file)",
    )  # fmt: skip


def read_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "format": args.format,
        "species": args.species,
        "atom_style": args.atom_style,
        "units": args.units,
        "disorder": getattr(args, "disorder", "refuse"),
        "merge_tolerance": getattr(args, "merge_tolerance", 0.01),
        "formula": getattr(args, "formula_mismatch", "refuse"),
        "cif_reader": getattr(args, "cif_reader", "auto"),
    }
