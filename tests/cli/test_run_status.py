"""Every run folder a verb makes says how the run ended: ``status.json`` is ``done`` after a
success and ``failed`` with a one-line error when training raises (or is interrupted) after the
folder exists; nested folders (folds, sub-runs) carry no status of their own."""

from __future__ import annotations

import json

import pytest
import yaml

from atomssl.cli.main import main
from atomssl.errors import ConfigError
from atomssl.utils import make_run_dir, run_status


def _status(folder) -> dict:
    return json.loads((folder / "status.json").read_text())


def test_a_successful_pretraining_is_marked_done(tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", "trainer.max_epochs=1", "--config", "pretrain_tiny", "--out", str(run),
                 "--no-progress", "seed=3"]) == 0  # fmt: skip
    status = _status(run)
    assert status["status"] == "done" and "error" not in status and status["finished"]
    saved = yaml.safe_load((run / "config.yaml").read_text())  # overrides before and after options
    assert saved["trainer"]["max_epochs"] == 1 and saved["seed"] == 3


def test_training_that_raises_after_the_folder_exists_is_marked_failed(tmp_path, monkeypatch):
    def broken_fit(self, *args, **kwargs):
        raise RuntimeError("loss is nan at step 3\n(second line of the message)")

    monkeypatch.setattr("lightning.pytorch.Trainer.fit", broken_fit)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="loss is nan"):
        main(["pretrain", "--config", "pretrain_tiny", "--out", str(run), "--no-progress"])
    assert (run / "config.yaml").is_file()  # the folder was made before training
    status = _status(run)  # one line, the exception's type first
    assert status["status"] == "failed" and status["finished"]
    assert status["error"] == "RuntimeError: loss is nan at step 3 (second line of the message)"


def test_an_interrupted_finetuning_is_marked_failed(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("atomssl.evaluate._finetune.train_and_predict", interrupted)
    run = tmp_path / "run"
    argv = ["finetune", "data.limit=40", "--config", "finetune_dielectric", "--out", str(run),
            "--no-progress", "trainer.max_epochs=1"]  # fmt: skip
    assert main(argv) == 130
    assert _status(run)["status"] == "failed"
    assert _status(run)["error"] == "interrupted (KeyboardInterrupt)"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["limit"] == 40 and saved["trainer"]["max_epochs"] == 1


def test_a_config_error_found_late_is_marked_failed_with_its_message(tmp_path, monkeypatch,
                                                                     capsys):  # fmt: skip
    def late(*args, **kwargs):
        raise ConfigError("fold 0: data.train_where='x==y' leaves 0 training rows")

    monkeypatch.setattr("atomssl.evaluate._matbench._load_task", late)
    out = tmp_path / "mb"
    assert main(["evaluate", "matbench_dielectric", "--out", str(out), "--no-progress"]) == 1
    assert "leaves 0 training rows" in capsys.readouterr().err
    status = _status(out)  # an atomssl error: its message as the CLI prints it
    assert status["status"] == "failed"
    assert status["error"] == "fold 0: data.train_where='x==y' leaves 0 training rows"


def test_a_run_that_fails_before_its_folder_exists_leaves_none(tmp_path):
    assert main(["finetune", "--config", "finetune_dielectric", "data.sources=[nowhere.cif]",
                 "--out", str(tmp_path / "run")]) == 1  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_run_status_marks_the_outer_folders_once(tmp_path):
    with run_status() as status:
        run = make_run_dir(tmp_path / "runs", "x")
        running = _status(run)
        inner = make_run_dir(run / "fold_0", exist_ok=True)
        other = make_run_dir(tmp_path / "other", exist_ok=True)
    assert running["status"] == "running" and running["pid"] > 0
    assert _status(run)["status"] == _status(other)["status"] == "done"
    assert not (inner / "status.json").exists() and status.folders == [run.resolve(), other]
    later = make_run_dir(tmp_path / "later", exist_ok=True)  # outside a run_status block
    assert not (later / "status.json").exists()


def test_run_status_failed_without_an_exception_and_clean_exits(tmp_path):
    with run_status() as status:
        run = make_run_dir(tmp_path / "a", exist_ok=True)
        status.failed("exit status 3")
    assert _status(run)["status"] == "failed" and _status(run)["error"] == "exit status 3"
    with pytest.raises(SystemExit), run_status():
        run = make_run_dir(tmp_path / "b", exist_ok=True)
        raise SystemExit(0)
    assert _status(run)["status"] == "done"
