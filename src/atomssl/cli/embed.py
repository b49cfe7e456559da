"""``atomssl embed``: per-structure and per-atom embeddings from a pretrained backbone."""

from __future__ import annotations

import argparse

# the constant only: importing atomssl.train (torch) here would slow every CLI start
DEFAULT_MAX_EDGES_PER_CHUNK = 2**17


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "embed",
        help="embed structures with a pretrained backbone (writes .npz)",
        description=(
            "Write per-structure embeddings (array 'structure', one row per input structure in input order) "
            "and per-atom embeddings ('atom', with 'atom_index' giving each row's structure) to an .npz file; "
            "'ids' and 'sources' name each structure row, 'skipped' lists the entries left out by --skip-bad. "
            "Without --skip-bad the first bad entry aborts with its reason and nothing is written."
        ),
    )
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="structure files, folders or stores (.db)"
    )
    p.add_argument(
        "--checkpoint",
        "-k",
        help="atomssl checkpoint (default: the one shipped with atomssl, if any)",
    )
    p.add_argument("--out", "-o", required=True, help="output .npz file (in an existing folder)")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="report bad entries (one line each on stderr) and embed the rest",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--float64", action="store_true", help="compute in double precision")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--max-edges-per-chunk", type=_count, default=DEFAULT_MAX_EDGES_PER_CHUNK, metavar="N",
        help=f"embed a batch with more than N bonds in chunks, exactly: MEGNet N bonds at a time, Equiformer "
        f"blocks of atoms with their receptive-field halo; bounds the memory of huge structures (default "
        f"{DEFAULT_MAX_EDGES_PER_CHUNK}; 0: never)",
    )  # fmt: skip
    from ._data_options import add_read_options

    add_read_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    import torch

    from ..errors import ConfigError, EmptyInputError
    from ..train import embed_files
    from ._data_options import read_options
    from ._paths import check_device, input_sources, output_file

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    output_file(args.out)  # before any work: an output goes only into an existing folder
    paths = input_sources(args.paths, must_exist=True)
    check_device(args.device)
    errors: list = []
    try:
        arrays = embed_files(
            paths,
            args.checkpoint,
            args.out,
            batch_size=args.batch_size,
            dtype=torch.float64 if args.float64 else torch.float32,
            device=args.device,
            max_edges_per_chunk=args.max_edges_per_chunk,
            skip_bad=args.skip_bad,
            errors=errors,
            progress=not args.no_progress,
            **read_options(args),
        )
    except EmptyInputError:
        if not errors:
            raise
        n = len(errors)  # one line, not a list of skips followed by a failure
        raise EmptyInputError(
            f"no structures to embed: every entry was bad ({n} skipped; first: {errors[0]}); "
            f"nothing was written to {args.out}"
        ) from None
    for err in errors:
        print(f"atomssl embed: skipped: {err}", file=sys.stderr)
    if errors:
        n = len(errors)
        print(
            f"atomssl embed: skipped {n} bad entr{'y' if n == 1 else 'ies'} (listed in the 'skipped' array of {args.out})",
            file=sys.stderr,
        )
    print(
        f"{args.out}: {arrays['structure'].shape[0]} structures x {arrays['structure'].shape[1]}, "
        f"{arrays['atom'].shape[0]} atoms x {arrays['atom'].shape[1]}"
    )
    return 0
