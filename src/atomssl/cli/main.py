"""The ``atomssl`` command: one entry point, one sub-module per verb.

Each verb module in :mod:`atomssl.cli` defines ``register(subparsers)`` which adds its parser and
sets ``func`` (called with the parsed namespace, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import AtomsslError

# verb modules, in the order --help lists them
VERB_MODULES = [
    "data",
    "pretrain",
    "finetune",
    "evaluate",
    "embed",
    "order",
    "motif",
    "reconstruct",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="atomssl",
        description="Self-supervised, transfer and generative learning on 3D atomic structures.",
    )
    parser.add_argument("--version", action="version", version=f"atomssl {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show debug logging and full tracebacks"
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in VERB_MODULES:
        importlib.import_module(f"atomssl.cli.{name}").register(
            sub
        )  # a missing verb module is a bug: fail
    return parser


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (a wrapped library message may span several)."""
    return (
        " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        or type(exc).__name__
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AtomsslError as exc:
        if args.verbose:
            raise
        verb = " ".join(
            str(v)
            for v in (args.verb, getattr(args, "data_verb", None) or getattr(args, "action", None))
            if v
        )
        print(f"atomssl {verb}: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
