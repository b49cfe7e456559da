"""What a user sees: each Lightning message once, and no advertisement tips (a real process)."""

import subprocess
import sys


def test_training_messages_print_once_without_tips(tmp_path):
    cmd = [sys.executable, "-m", "atomssl.cli.main", "finetune", "--config", "finetune_dielectric",
           "data.sources=[{name: matbench_dielectric, limit: 40}]", "--epochs", "1", "--mode", "frozen",
           "--out", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert text.count("GPU available") == 1, text
    assert text.count("max_epochs=1` reached") == 1, text
    assert "Tip:" not in text and "litlogger" not in text
    assert "Warning" not in text, text  # no deprecation warnings (ours or Lightning's pytree)
    assert f"run folder: {tmp_path / 'run'}" in text  # where the run goes, when it starts
    assert "| split |" in out.stdout  # the summary table at the end, also with --no-progress
