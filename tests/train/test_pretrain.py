"""The pretraining run: run folder, determinism, exact resume, SIGKILL + resume, 2-process DDP, CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import toy_backbone  # noqa: F401  (registers "toy"; tests/train is on sys.path under pytest)
import yaml
from toy_backbone import tiny_config

from atomssl.cli.main import main
from atomssl.train import merged_metrics, pretrain

HERE = Path(__file__).resolve().parent
ATOMSSL = [sys.executable, "-m", "atomssl.cli.main"]


def _env(**extra):
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    )
    env.update(extra)
    return env


def _weights(run):
    return torch.load(Path(run) / "checkpoints" / "last.pt", weights_only=True)["backbone"]


def _same_weights(a, b, rtol=0.0):
    return all(torch.allclose(a[k], b[k], rtol=rtol, atol=0.0) for k in a)


def test_run_folder_determinism_and_exact_resume(tmp_path):
    cfg = tiny_config(optim__scheduler="constant", trainer__max_epochs=4)
    a = pretrain(cfg, run_dir=tmp_path / "a", progress=False)
    b = pretrain(cfg, run_dir=tmp_path / "b", progress=False)
    assert a["tasks"] == b["tasks"]  # same seed + config on CPU: identical metrics
    assert _same_weights(_weights(tmp_path / "a"), _weights(tmp_path / "b"))

    run = tmp_path / "a"
    for name in (
        "config.yaml",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "loss_curve.png",
        "summary.json",
        "summary.md",
    ):
        assert (run / name).is_file(), name
    assert (run / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert yaml.safe_load((run / "config.yaml").read_text())["backbone"]["name"] == "toy"
    rows = merged_metrics(run)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert all("val/mask/loss" in r and "val/denoise/baseline" in r for r in rows)
    table = (run / "summary.md").read_text()
    assert "| mask | toy |" in table and "| denoise | toy |" in table
    assert a["epochs"] == 4 and a["structures_per_s"] > 0
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["metrics"]["val/loss"] == pytest.approx(min(r["val/loss"] for r in rows), rel=1e-6)

    # interrupted after 2 epochs, resumed to 4: the same weights and metrics as the straight run
    pretrain(
        tiny_config(optim__scheduler="constant", trainer__max_epochs=2),
        run_dir=tmp_path / "c",
        progress=False,
    )
    c = pretrain(cfg, run_dir=tmp_path / "c", resume=True, progress=False)
    assert c["tasks"] == a["tasks"]
    assert _same_weights(_weights(tmp_path / "a"), _weights(tmp_path / "c"))
    assert len(list((tmp_path / "c" / "logs").glob("version_*"))) == 2
    assert [r["epoch"] for r in merged_metrics(tmp_path / "c")] == [0, 1, 2, 3]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tmp_path):
    cfg = tiny_config(trainer__max_epochs=5)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.pt"
    proc = subprocess.Popen(
        ATOMSSL + ["pretrain", "--config", str(cfg_path), "--out", str(run), "--no-progress"],
        env=_env(TOY_SLEEP="0.03"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if last.is_file():
                try:
                    if torch.load(last, weights_only=True)["epoch"] >= 1:
                        break
                except Exception:  # being replaced right now: the rename is atomic, retry
                    pass
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        time.sleep(0.15)  # into the next epoch (each batch sleeps 0.03 s per task)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = torch.load(last, weights_only=True)  # intact after the kill
    assert 1 <= killed_at["epoch"] < 4

    res = subprocess.run(
        ATOMSSL + ["pretrain", "--resume", str(run), "--no-progress"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Restoring states from the checkpoint" in res.stderr
    final = torch.load(last, weights_only=True)
    assert final["epoch"] == 4
    assert not list(run.rglob(".*.tmp")), "partial files left behind"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 5
    assert [r["epoch"] for r in merged_metrics(run)] == [0, 1, 2, 3, 4]
    # the resumed run ends where an uninterrupted one does
    ref = pretrain(cfg, run_dir=tmp_path / "ref", progress=False)
    for got, want in zip(summary["tasks"], ref["tasks"]):
        assert got["reached"] == pytest.approx(want["reached"], rel=1e-4)


def test_cli_errors_are_one_clean_line(tmp_path, capsys):
    assert main(["pretrain"]) == 1
    assert "give --config" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny_config(backbone={"name": "nope"})))
    assert (
        main(["pretrain", "--config", str(bad), "--out", str(tmp_path / "r"), "--no-progress"]) == 1
    )
    err = capsys.readouterr().err
    assert "unknown backbone 'nope'" in err and "Traceback" not in err
    assert main(["pretrain", "--resume", str(tmp_path / "nowhere")]) == 1
    assert "not a pretraining run folder" in capsys.readouterr().err


CONFIGS = sorted((HERE.parents[1] / "src" / "atomssl" / "configs").glob("pretrain_*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_build(path):
    from atomssl.train import PretrainModule
    from atomssl.train._pretrain import prepare_config
    from atomssl.utils import load_config

    module = PretrainModule(prepare_config(load_config(path)))
    assert module.keys and all(k in module.tasks for k in module.keys)


def test_tiny_config_runs_with_a_real_backbone(tmp_path):
    assert (
        main(
            [
                "pretrain",
                "--config",
                "pretrain_tiny",  # a packaged config, by name
                "--out",
                str(tmp_path),
                "--epochs",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["backbone"] == "megnet" and [t["task"] for t in summary["tasks"]] == [
        "edge_denoise",
        "mask",
    ]
    assert (
        torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)["backbone_config"][
            "name"
        ]
        == "megnet"
    )
