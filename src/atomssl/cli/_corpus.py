"""The sharded-corpus side of ``atomssl data import`` and ``atomssl data info`` (hooked into
:mod:`atomssl.cli.data`): ``--out FOLDER`` writes ``.aselmdb`` shards and a ``manifest.json``
(:func:`atomssl.data.import_shards`); ``info CORPUS`` prints a summary from the manifest.

``--out`` is a corpus folder when it is an existing folder or its name has no ``.db`` suffix; a
``.db`` file is today's SQLite store.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, StructureError

_SHOWN = 20  # skipped entries / warnings listed by `info` (all are in manifest.json)


# ---------------------------------------------------------------------- import
def import_progress(args: argparse.Namespace) -> bool | None:
    """The imports' ``progress``: a bar over several sources when stderr is a terminal (None),
    none with ``--no-progress`` (False)."""
    return False if getattr(args, "no_progress", False) else None


def add_import_options(parser: argparse.ArgumentParser) -> None:
    from ..data._shard_import import DEFAULT_SHARD_SIZE

    g = parser.add_argument_group("sharded corpus (--out FOLDER)")
    g.add_argument(
        "--shard-size",
        type=int,
        default=None,
        metavar="N",
        help=f"structures per .aselmdb shard (default {DEFAULT_SHARD_SIZE})",
    )
    g.add_argument("--workers", type=int, default=None, metavar="K",
                   help="processes parsing the source files (default 1); the corpus is the same for any K")  # fmt: skip


def is_folder_out(out: str) -> bool:
    p = Path(out)
    return p.is_dir() or p.suffix.lower() != ".db"


def import_to_folder(args: argparse.Namespace) -> int | None:
    """``data import`` into a corpus folder; ``None`` when ``--out`` is a ``.db`` store (the caller
    imports into it; ``--shard-size``/``--workers`` are refused there)."""
    from ..data import import_shards
    from ..data._datasets import is_dataset_source
    from ..data._formats import EXTENSIONS
    from ..data._shard_import import DEFAULT_SHARD_SIZE
    from ..data._shards import MANIFEST
    from ._data_options import read_options
    from ._paths import input_sources, run_folder

    if not is_folder_out(args.out):
        if args.shard_size is not None or args.workers is not None:
            raise ConfigError(
                f"--shard-size/--workers: only for a corpus folder as --out, not for the SQLite store {args.out}"
            )
        return None
    if not Path(args.out).exists() and Path(args.out).suffix.lower() in EXTENSIONS:
        raise ConfigError(
            f"--out {args.out}: names a structure file; give a folder (sharded corpus) or a .db file (SQLite store)"
        )
    if args.append:
        raise ConfigError(
            "--append: only for a .db store; an interrupted import into a folder resumes when run again as it was"
        )
    for flag, value in (("--shard-size", args.shard_size), ("--workers", args.workers)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value}: must be at least 1")
    out = run_folder(args.out)
    assert out is not None  # a folder --out was given (is_folder_out above)
    input_sources(
        [s for s in args.sources if not is_dataset_source(s)]
    )  # a named folder without structure files is an error
    sources = list(
        args.sources
    )  # dataset:NAME stays a name: loaded by the import, resumable like a file
    try:
        report = import_shards(
            sources, out, shard_size=DEFAULT_SHARD_SIZE if args.shard_size is None else args.shard_size,
            workers=1 if args.workers is None else args.workers,
            skip_bad=args.skip_bad, progress=import_progress(args), **read_options(args),
        )  # fmt: skip
    except StructureError as err:
        if err.source and Path(err.source).resolve().is_relative_to(out.resolve()):
            raise  # not a bad input entry but a damaged shard or manifest of the folder: its own one line
        if (out / MANIFEST).exists():
            n = len(json.loads((out / MANIFEST).read_text()).get("shards", []))
            state = (
                f"the {n} complete shard(s) in {out} stay: run the import again with --skip-bad (or once the "
                "file is fixed) to resume after them"
            )
        else:
            state = f"nothing was written to {out} (use --skip-bad to skip bad entries)"
        print(f"atomssl data import: error: {err}; {state}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0


# ---------------------------------------------------------------------- info
def add_info_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--all",
        action="store_true",
        help="corpus folders: one line per structure (as for files) instead of the summary from the manifest",
    )
    parser.add_argument("--verify", action="store_true",
                        help="corpus folders: also check each shard's sha256 against the manifest (reads every byte)")  # fmt: skip


def info_corpora(
    args: argparse.Namespace, fallback: Callable[[argparse.Namespace], int]
) -> int | None:
    """``data info`` on corpus folders: their summaries (then ``fallback`` for the other paths);
    ``None`` when there is no corpus among the paths, or with ``--all`` (after ``--verify``)."""
    from ..data import ShardedCorpus
    from ..data._shards import is_corpus

    corpora = [p for p in args.paths if is_corpus(p)]
    if getattr(args, "verify", False) and not corpora:
        raise ConfigError(
            "--verify: no corpus folder (a folder with manifest.json) among the paths"
        )
    if not corpora or getattr(args, "all", False):
        for p in corpora if getattr(args, "verify", False) else []:
            ShardedCorpus(p, verify=True)
        return None
    summaries = [
        corpus_summary(ShardedCorpus(p, verify=args.verify, partial=True), args.verify)
        for p in corpora
    ]
    if args.json:
        print(json.dumps(summaries[0] if len(summaries) == 1 else summaries, indent=2))
    else:
        for s in summaries:
            print(format_summary(s))
    rc = 0
    for s in summaries:
        if not s["complete"]:
            print(f"atomssl data info: error: {s['path']}: the import has not finished ({s['n_shards']} shard(s) complete); "
                  "run the same `atomssl data import` again", file=sys.stderr)  # fmt: skip
            rc = 1
    rest = [p for p in args.paths if p not in corpora]
    if rest:
        rc = max(rc, fallback(argparse.Namespace(**{**vars(args), "paths": rest, "verify": False})))
    return rc


def corpus_summary(corpus, verified: bool) -> dict[str, Any]:
    m = corpus.manifest
    return {
        "path": str(corpus.path),
        "complete": bool(m.get("complete")),
        "n_structures": len(corpus),
        "n_shards": len(corpus.files),
        "shard_size": m.get("options", {}).get("shard_size"),
        "counts": corpus.counts,
        "checked": "sha256" if verified else "size and row count",
        "species": m.get("species", {}),
        "labels": m.get("labels", {}),
        "sources": [
            {k: s.get(k) for k in ("path", "structures", "skipped")} for s in m.get("sources", [])
        ],
        "n_skipped": len(m.get("skipped", [])),
        "skipped": m.get("skipped", []),
        "n_warned": len(m.get("warnings", [])),
        "warnings": m.get("warnings", []),
    }


def _num(x: float) -> str:
    return f"{x:.6g}"


def format_summary(s: dict[str, Any]) -> str:
    state = (
        "complete" if s["complete"] else "NOT complete (interrupted import: run it again to finish)"
    )
    lines = [
        f"corpus {s['path']}: {s['n_structures']} structures in {s['n_shards']} shard(s) of up to {s['shard_size']}, {state}"
    ]
    lines.append(
        f"  shards checked against the manifest: {s['checked']}"
        + ("" if s["checked"] == "sha256" else " (--verify: sha256)")
    )
    species = sorted(s["species"].items(), key=lambda kv: (-kv[1]["structures"], kv[0]))
    lines.append(f"  species ({len(species)}; structures / atoms): "
                 + ", ".join(f"{el} {v['structures']}/{v['atoms']}" for el, v in species))  # fmt: skip
    lines.append(f"  labels ({len(s['labels'])}):" if s["labels"] else "  labels: none")
    for name, st in s["labels"].items():
        text = f"    {name}: {st['kind']}, {st['count']} structures"
        if "mean" in st:
            text += f", mean {_num(st['mean'])}, std {_num(st['std'])}, min {_num(st['min'])}, max {_num(st['max'])}"
        if st.get("non_finite"):
            text += f", {st['non_finite']} NaN/inf"
        if "true" in st:
            text += f", {st['true']} true"
        lines.append(text)
    n_files = len(s["sources"])
    lines.append(
        f"  sources: {n_files} ({sum(x['structures'] or 0 for x in s['sources'])} structures read)"
    )
    lines.append(f"  skipped: {s['n_skipped']}" + (":" if s["n_skipped"] else ""))
    for rec in s["skipped"][:_SHOWN]:
        where = (rec["source"] or "<structure>") + (
            f" [index {rec['index']}]" if rec["index"] is not None else ""
        )
        lines.append(f"    {where}: {rec['kind']}: {rec['reason']}")
    if s["n_skipped"] > _SHOWN:
        lines.append(f"    ... and {s['n_skipped'] - _SHOWN} more (manifest.json lists all)")
    lines.append(
        f"  structures with reader warnings: {s['n_warned']}" + (":" if s["n_warned"] else "")
    )
    for rec in s["warnings"][:_SHOWN]:
        where = (rec["source"] or "<structure>") + (
            f" [index {rec['index']}]" if rec["index"] is not None else ""
        )
        lines.extend(f"    {where}: warning: {w}" for w in rec["warnings"])
    if s["n_warned"] > _SHOWN:
        lines.append(f"    ... and {s['n_warned'] - _SHOWN} more (manifest.json lists all)")
    return "\n".join(lines)
