"""Every report in ``benchmarks/results`` is written by a script (issue 20, item 5).

- each ``.md`` names, in its first lines, the ``python benchmarks/...`` command that wrote it, and
  that script exists;
- the reports with a report-only mode are regenerated from the committed raw records into a
  temporary folder and must equal the committed files (up to the ``--out`` of the command line);
- nothing here writes into ``benchmarks/results``: the scripts run with ``ATOMSSL_RESULTS_READONLY``
  (``benchmarks/_outputs.guard`` then refuses that folder) and the folder is compared before and after.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COMMAND = re.compile(r"python (benchmarks/[\w/]+\.py)")
HEAD_LINES = 5

# report -> the report-only command that writes it (every one reads only committed records)
REPORT_ONLY = {
    "learning_curves.md": ("benchmarks/learning_curves.py", "--report-only"),
    "matbench_dielectric.md": ("benchmarks/matbench_dielectric.py", "--report-only"),
    "motif.md": ("benchmarks/motif.py", "--report-only"),
    "motif_bounds.md": ("benchmarks/motif_bounds.py", "--report-only"),
    "order_liquid_auc.md": ("benchmarks/order_liquid.py", "--report-only"),
    "order_transfer.md": ("benchmarks/order_transfer.py", "report"),
    "pretraining.md": ("benchmarks/pretraining.py", "--report-only"),
    "reconstruction.md": ("benchmarks/reconstruction.py", "report"),
    "reconstruction_critic_probe.md": ("benchmarks/reconstruction.py", "report"),
}
REPORTS = sorted(p.name for p in RESULTS.glob("*.md"))


def _snapshot() -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(RESULTS.iterdir())
        if p.is_file()
    }


@pytest.mark.parametrize("name", REPORTS)
def test_report_names_its_command(name):
    head = "\n".join((RESULTS / name).read_text().splitlines()[:HEAD_LINES])
    found = COMMAND.search(head)
    assert found, f"{name}: no `python benchmarks/....py` command in its first {HEAD_LINES} lines"
    assert (ROOT / found.group(1)).is_file(), f"{name}: {found.group(1)} does not exist"


def test_report_only_table_is_current():
    assert set(REPORT_ONLY) <= set(REPORTS), set(REPORT_ONLY) - set(REPORTS)
    for name, (script, *_) in REPORT_ONLY.items():
        assert (ROOT / script).is_file(), f"{name}: {script} does not exist"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    """Run every report-only command once into its own temporary folder: {command: folder}."""
    env = {**os.environ, "ATOMSSL_RESULTS_READONLY": "1", "MPLBACKEND": "Agg"}
    before = _snapshot()
    folders = {}
    for command in sorted(set(REPORT_ONLY.values())):
        out = tmp_path_factory.mktemp(Path(command[0]).stem)
        proc = subprocess.run([sys.executable, *command, "--out", str(out)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, f"{' '.join(command)}:\n{proc.stdout}\n{proc.stderr}"
        folders[command] = out
    assert _snapshot() == before, "a report-only command wrote into benchmarks/results"
    return folders


def _header(text: str) -> int:
    """Index of the ``Command:`` line among the first lines."""
    lines = text.splitlines()[:HEAD_LINES]
    return next(i for i, line in enumerate(lines) if line.startswith("Command: `"))


def _body(text: str) -> list[str]:
    """The report without its ``Command:`` line (a full run names its own command there)."""
    lines = text.splitlines()
    return lines[: _header(text)] + lines[_header(text) + 1 :]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REPORT_ONLY))
def test_report_regenerates_from_records(name, regenerated):
    command = REPORT_ONLY[name]
    out = regenerated[command]
    text = (out / name).read_text().replace(f" --out {out}", "")
    assert text.splitlines()[_header(text)] == f"Command: `python {' '.join(command)}`"
    committed = (RESULTS / name).read_text()
    assert COMMAND.search(committed.splitlines()[_header(committed)]).group(1) == command[0]
    assert _body(text) == _body(committed), (
        f"{name} differs from `python {' '.join(command)}`'s output: regenerate it with that command"
    )


def test_guard_refuses_results(tmp_path):
    """With ATOMSSL_RESULTS_READONLY set, a script asked to write into benchmarks/results stops."""
    env = {**os.environ, "ATOMSSL_RESULTS_READONLY": "1"}
    before = _snapshot()
    proc = subprocess.run([sys.executable, "benchmarks/order_transfer.py", "report"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode != 0 and "read-only" in proc.stderr
    assert _snapshot() == before
