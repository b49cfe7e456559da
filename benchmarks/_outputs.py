"""Where a benchmark writes: its command line, and the results / work folders (``--quick`` never
writes into ``benchmarks/results``; nothing does while ``ATOMSSL_RESULTS_READONLY`` is set, as in
``tests/test_reports.py``)."""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def command_line(argv=None) -> str:
    """The command that ran this script, as recorded at the top of its report."""
    args = sys.argv[1:] if argv is None else list(argv)
    return "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0])), *args])


def guard(folder: str | os.PathLike) -> Path:
    """``folder`` as a Path; refused inside ``benchmarks/results`` while ``ATOMSSL_RESULTS_READONLY``
    is set (the report tests run every script with it)."""
    folder = Path(folder)
    if os.environ.get("ATOMSSL_RESULTS_READONLY") and folder.resolve().is_relative_to(
        RESULTS.resolve()
    ):
        raise SystemExit(
            f"{folder}: benchmarks/results is read-only here (ATOMSSL_RESULTS_READONLY)"
        )
    return folder


def report_folder(out: str | os.PathLike | None) -> Path:
    """Where ``--report-only`` writes its markdown: ``--out`` (default ``benchmarks/results``); the
    raw records are always read from ``benchmarks/results``."""
    folder = guard(out or RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def output_folders(quick: bool, out: str | None, work: str, prefix: str) -> tuple[Path, Path]:
    """``(out, work)``: ``--out`` (default ``benchmarks/results``) and ``--work``; with ``quick`` a
    temporary folder (or ``--out``, never ``benchmarks/results``) holding both."""
    if quick:
        folder = Path(out or tempfile.mkdtemp(prefix=f"{prefix}-quick-"))
        if folder.resolve().is_relative_to(RESULTS.resolve()):
            raise SystemExit("--quick never writes into benchmarks/results")
        result = folder, folder / "work"
    else:
        result = Path(out or RESULTS), Path(work)
    guard(result[0])
    for f in result:
        f.mkdir(parents=True, exist_ok=True)
    return result
