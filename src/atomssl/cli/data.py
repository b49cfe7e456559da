"""``atomssl data SUBVERB``: import structures into a store, inspect files, build graphs.

Built-in sub-verbs: ``import``, ``info``, ``graph``.

Adding a sub-verb (e.g. ``simulate``, dataset commands) without editing this file, either:

* write a module ``atomssl/cli/data_<name>.py`` defining ``register_data(subparsers)``; it is
  discovered automatically (modules named ``data_*`` in :mod:`atomssl.cli`), or
* call ``add_data_subcommand(name, register_fn)`` before the parser is built.

``register_fn(subparsers)`` adds its parser with ``subparsers.add_parser(name, ...)`` and sets
``func=callable(args) -> int`` with ``set_defaults``, exactly like a top-level verb module.
Shared option helpers: :func:`add_read_options` / :func:`read_options` (format, LAMMPS
species/atom style) so that every sub-verb reads files the same way.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from collections.abc import Callable
from typing import Any

from ._data_options import _species, add_read_options, read_options  # noqa: F401 (_species: re-export)

RegisterFn = Callable[[Any], None]

#: name -> function adding that sub-verb's parser to ``atomssl data``'s subparsers.
DATA_SUBCOMMANDS: dict[str, RegisterFn] = {}
PLUGIN_PREFIX = "data_"


def add_data_subcommand(name: str, register_fn: RegisterFn) -> None:
    """Register a sub-verb ``atomssl data NAME`` (``register_fn(subparsers)`` adds its parser)."""
    DATA_SUBCOMMANDS[name] = register_fn


def _discover_plugins() -> list[RegisterFn]:
    from .. import cli

    found = []
    for info in sorted(pkgutil.iter_modules(cli.__path__), key=lambda m: m.name):
        if info.name.startswith(PLUGIN_PREFIX):
            module = importlib.import_module(f"{cli.__name__}.{info.name}")
            fn = getattr(module, "register_data", None)
            if fn is not None:
                found.append(fn)
    return found


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="import, inspect and graph structure files",
        description="Structure files: import into a store, inspect, build neighbour graphs.",
    )
    sub = parser.add_subparsers(dest="data_verb", metavar="SUBVERB")
    plugins = _discover_plugins()  # imported first: a plugin may call add_data_subcommand
    for fn in list(DATA_SUBCOMMANDS.values()) + [
        f for f in plugins if f not in DATA_SUBCOMMANDS.values()
    ]:
        fn(sub)

    def _help(args) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=_help)


# ---------------------------------------------------------------------- import
def _register_import(sub) -> None:
    p = sub.add_parser(
        "import",
        help="read files/folders into a structure store (ASE db)",
        description="Read structure files and folders into a store (an ASE SQLite database). "
        "Without --skip-bad the first bad entry aborts the import and nothing is written. "
        "A folder as --out (an existing folder, or a name without .db) gets a sharded corpus: .aselmdb shards "
        "and manifest.json; it is written shard by shard, and an import killed or stopped by a bad entry "
        "resumes after its complete shards when run again.",
    )
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SRC",
        help="structure files or folders (searched recursively), or dataset:NAME[?key=value&...] (a built-in dataset)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="STORE",
        help="store to write (.db), or a folder: a sharded corpus (.aselmdb shards + manifest.json; resumable)",
    )
    p.add_argument("--skip-bad", action="store_true", help="report bad entries and go on")
    p.add_argument(
        "--append", action="store_true", help="add to an existing store instead of replacing it"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no bar (else: on a terminal)")
    add_read_options(p)
    from ._corpus import add_import_options

    add_import_options(p)  # --shard-size, --workers (sharded corpus)
    p.set_defaults(func=_cmd_import)


def _cmd_import(args: argparse.Namespace) -> int:
    from ..data import import_structures
    from ..data._datasets import expand_dataset_sources, is_dataset_source
    from ..errors import StructureError
    from ._corpus import import_progress, import_to_folder
    from ._paths import input_sources, output_file

    rc = import_to_folder(args)  # --out FOLDER: a sharded corpus (None: a .db store, below)
    if rc is not None:
        return rc
    out = output_file(args.out)  # a store goes only into an existing folder
    input_sources(
        [s for s in args.sources if not is_dataset_source(s)]
    )  # a named folder without structure files is an error
    sources = expand_dataset_sources(
        args.sources
    )  # dataset:NAME -> its structures (atomssl.data.load_dataset)
    opts = read_options(args)
    try:  # an import that writes no structure raises EmptyInputError and leaves the store as it was
        report = import_structures(
            sources, out, skip_bad=args.skip_bad, append=args.append,
            progress=import_progress(args), **opts,
        )  # fmt: skip
    except StructureError as err:
        print(
            f"atomssl data import: error: {err}; nothing was written to {args.out} (use --skip-bad to skip bad entries)",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0


# ---------------------------------------------------------------------- info
def _register_info(sub) -> None:
    p = sub.add_parser(
        "info",
        help="list the structures in files/folders and whether they are usable",
        description="One line (or JSON object) per structure: source, index, formula, n_atoms, error, "
        "warnings (what the reader changed or doubted; status 'ok*' in the table). "
        "Exit code 0 when every structure is fine, 1 otherwise.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="structure files, folders or stores")
    p.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list of {source, index, formula, n_atoms, error, warnings}",
    )
    add_read_options(p)
    from ._corpus import add_info_options

    add_info_options(p)  # --all, --verify (corpus folders: summary from the manifest)
    p.set_defaults(func=_cmd_info)


def info_entries(paths, **options: Any) -> list[dict[str, Any]]:
    """One dict per structure (or per unreadable file, with ``index`` None) of ``paths``:
    ``source``, ``index``, ``formula``, ``n_atoms``, ``error`` (None when usable) and
    ``warnings`` (list of strings: what the reader changed or doubted)."""
    from ..data import iter_entries
    from ..errors import StructureError

    out: list[dict[str, Any]] = []
    for entry in iter_entries(paths, validate=False, **options):
        if isinstance(entry, StructureError):
            out.append(
                {
                    "source": entry.source,
                    "index": entry.index,
                    "formula": None,
                    "n_atoms": None,
                    "error": str(entry),
                    "warnings": [],
                }
            )
            continue
        try:
            entry.validate()
            error = None
        except StructureError as err:
            error = str(err)
        out.append(
            {
                "source": entry.source,
                "index": entry.index,
                "formula": entry.formula,
                "n_atoms": entry.n_atoms,
                "error": error,
                "warnings": [str(w) for w in entry.warnings],
            }
        )
    return out


def _cmd_info(args: argparse.Namespace) -> int:
    from ..errors import EmptyInputError
    from ._corpus import info_corpora
    from ._paths import input_sources

    rc = info_corpora(
        args, _cmd_info
    )  # corpus folders: a summary from the manifest (None: none, or --all)
    if rc is not None:
        return rc

    paths = input_sources(args.paths)  # a named folder without structure files is an error
    entries = info_entries(paths, **read_options(args))
    if not entries:
        raise EmptyInputError(f"no structures in {', '.join(paths)}")
    n_bad = sum(e["error"] is not None for e in entries)
    if args.json:
        print(json.dumps(entries, indent=2))
    else:
        _print_table(entries)
        print(f"{len(entries) - n_bad} fine, {n_bad} with errors")
    if n_bad:  # the report is on stdout; stderr says, in one line, that it is not all fine
        first = next(e["error"] for e in entries if e["error"] is not None)
        more = f" (and {n_bad - 1} more)" if n_bad > 1 else ""
        print(
            f"atomssl data info: error: {n_bad} of {len(entries)} entries unusable: {first}{more}",
            file=sys.stderr,
        )
    return 1 if n_bad else 0


def _print_table(entries: list[dict[str, Any]]) -> None:
    def cell(v: Any) -> str:
        return "-" if v is None else str(v)

    def status(e: dict[str, Any]) -> str:
        if e["error"] is not None:
            return "ERROR"
        return "ok*" if e.get("warnings") else "ok"  # '*': read with warnings (listed below it)

    rows = [
        [cell(e["source"]), cell(e["index"]), cell(e["formula"]), cell(e["n_atoms"]), status(e)]
        for e in entries
    ]
    head = ["source", "index", "formula", "n_atoms", "status"]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
    for r, e in zip(rows, entries):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if e["error"] is not None:
            print(f"    {e['error']}")
        for w in e.get("warnings") or []:
            print(f"    warning: {w}")


# ---------------------------------------------------------------------- graph
def _register_graph(sub) -> None:
    p = sub.add_parser(
        "graph",
        help="write the neighbour graph of one structure to .npz",
        description="Neighbour graph of one structure: arrays src, dst, shift (int image offsets of dst), "
        "vec (Cartesian src -> image of dst), cell, positions, numbers, pbc. With --k: the k nearest "
        "neighbours (and, when --cutoff is also given, only those within it).",
    )
    p.add_argument("path", metavar="PATH", help="structure file")
    p.add_argument("--index", type=int, default=0, help="frame/entry in the file (default 0)")
    p.add_argument(
        "--cutoff", type=float, default=None, metavar="R", help="radius cutoff in Angstrom"
    )
    p.add_argument("--k", type=int, default=None, help="k nearest neighbours per atom")
    p.add_argument("--out", required=True, metavar="FILE.npz")
    add_read_options(p)
    p.set_defaults(func=_cmd_graph)


def _cmd_graph(args: argparse.Namespace) -> int:
    import numpy as np

    from ..data import read
    from ..graph import knn_graph, radius_graph
    from ..utils import atomic_save_npz
    from ._paths import output_file

    output_file(args.out)  # before reading: an output goes only into an existing folder

    if args.cutoff is None and args.k is None:
        print("atomssl data graph: error: give --cutoff R and/or --k K", file=sys.stderr)
        return 2
    if args.cutoff is not None and not args.cutoff > 0:
        print(
            f"atomssl data graph: error: --cutoff must be positive, got {args.cutoff}",
            file=sys.stderr,
        )
        return 2
    if args.k is not None and args.k < 1:
        print(f"atomssl data graph: error: --k must be >= 1, got {args.k}", file=sys.stderr)
        return 2
    (structure,) = read(args.path, index=args.index, **read_options(args))
    if args.k is not None:
        nl = knn_graph(structure, args.k)
        keep = (
            nl.distance < args.cutoff if args.cutoff is not None else np.ones(len(nl), dtype=bool)
        )
    else:
        nl = radius_graph(structure, args.cutoff)
        keep = np.ones(len(nl), dtype=bool)
    atomic_save_npz(
        args.out,
        src=nl.src[keep].astype(np.int64),
        dst=nl.dst[keep].astype(np.int64),
        shift=nl.shift[keep].astype(np.int64),
        vec=nl.vec[keep].astype(np.float64),
        cell=structure.cell,
        positions=structure.positions,
        numbers=structure.numbers,
        pbc=structure.pbc,
    )
    how = (
        f"k={args.k}" + (f", cutoff={args.cutoff} A" if args.cutoff is not None else "")
        if args.k
        else f"cutoff={args.cutoff} A"
    )
    print(
        f"{structure.where()}: {structure.formula}, {structure.n_atoms} atoms, {int(keep.sum())} edges ({how}) -> {args.out}"
    )
    return 0


add_data_subcommand("import", _register_import)
add_data_subcommand("info", _register_info)
add_data_subcommand("graph", _register_graph)
