"""Where a benchmark writes: its command line, and the results / work folders (``--quick`` never
writes into ``benchmarks/results``)."""

from __future__ import annotations

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


def output_folders(quick: bool, out: str | None, work: str, prefix: str) -> tuple[Path, Path]:
    """``(out, work)``: ``--out`` (default ``benchmarks/results``) and ``--work``; with ``quick`` a
    temporary folder (or ``--out``, never ``benchmarks/results``) holding both."""
    if quick:
        folder = Path(out or tempfile.mkdtemp(prefix=f"{prefix}-quick-"))
        if folder.resolve() == RESULTS.resolve():
            raise SystemExit("--quick never writes into benchmarks/results")
        result = folder, folder / "work"
    else:
        result = Path(out or RESULTS), Path(work)
    for f in result:
        f.mkdir(parents=True, exist_ok=True)
    return result
