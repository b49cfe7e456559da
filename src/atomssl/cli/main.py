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
    "config",
]


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

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


#: where a verb collects its ``KEY=VALUE`` config overrides (its ``nargs="*"`` positional)
OVERRIDE_DESTS = ("overrides", "inputs")


def _verb_parser(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The (sub-)parser of the verb ``args`` names (``atomssl motif train``: the ``train`` one)."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None:
            return parser
        name = getattr(args, sub.dest, None)
        if name not in sub.choices:
            return parser
        parser = sub.choices[name]


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None):
    """``parser.parse_args``, except that ``KEY=VALUE`` overrides may stand anywhere on the
    command line (before, between or after options): argparse alone gives a positional list only
    the first run of positionals. Anything else it does not know is still a usage error."""
    args, rest = parser.parse_known_args(argv)
    dest = next((d for d in OVERRIDE_DESTS if isinstance(getattr(args, d, None), list)), None)
    if dest is not None:
        extra = [a for a in rest if "=" in a and not a.startswith("-")]
        setattr(args, dest, [*getattr(args, dest), *extra])
        rest = [a for a in rest if a not in extra]
    if rest:
        _verb_parser(parser, args).error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def main(argv: list[str] | None = None) -> int:
    from ..utils import run_status

    parser = build_parser()
    args = parse_args(parser, argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with run_status() as status:  # status.json in every run folder the verb makes
            code = int(args.func(args) or 0)
            if code:
                status.failed(f"exit status {code}")
            return code
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
