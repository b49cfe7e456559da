"""The GAN on the training engine: determinism and exact resume, SIGKILL then ``--resume`` ending
with the weights of an uninterrupted run, 2-process DDP on CPU, a non-finite loss stopping with
one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from conftest import sigkill_on_cue

from atomssl.cli.main import main
from atomssl.errors import ConfigError
from atomssl.generate import gan

BACKBONE = {"name": "equiformer", "size": "tiny", "num_layers": 1}
ATOMSSL = [sys.executable, "-m", "atomssl.cli.main"]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as the subprocesses use (OMP_NUM_THREADS=1): tiny models run several
    times faster than with threads contending on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(steps: int = 10, **trainer) -> dict:
    # 8 structures in batches of 2: 4 steps an epoch (2 per rank under 2-process DDP)
    return {
        "seed": 3,
        "data": {"sources": [{"name": "synthetic", "n": 8}], "batch_size": 2},
        "generator": {"backbone": BACKBONE},
        "discriminator": {"classifier_steps": 2},
        "optim": {"d_every": 2, "lr_g": 1.0e-3, "lr_d": 1.0e-3},
        "train": {"steps": steps, "log_every": 3},
        "trainer": {"accelerator": "cpu", **trainer},
    }


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1")


def _state(run: Path) -> dict[str, torch.Tensor]:
    """Generator and critic weights (and buffers) at the end of a run."""
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    return ck["trainer"]["state_dict"]


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def test_determinism_and_exact_resume_from_a_mid_epoch_checkpoint(tmp_path):
    a = gan(_config(), run_dir=tmp_path / "a", progress=False)
    gan(_config(), run_dir=tmp_path / "b", progress=False)
    _assert_same(_state(tmp_path / "a"), _state(tmp_path / "b"))
    ck = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["trainer"]["gan"]["steps_done"] == 10 and a["steps"] == 10
    assert {"mask_denoise"} == set(ck["tasks"])  # last.pt is also a generator checkpoint
    rows = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and rows[1].startswith("3,") and rows[-1].startswith("10,")

    # stopped after 6 steps (mid-epoch 2 of 3), then resumed to 10: the straight run's weights
    # and metrics rows; the critic is not pre-trained again
    gan(_config(steps=6), run_dir=tmp_path / "c", progress=False)
    classifier = (tmp_path / "c" / "classifier.csv").read_text()
    c = gan(_config(), run_dir=tmp_path / "c", progress=False, resume=True)
    _assert_same(_state(tmp_path / "a"), _state(tmp_path / "c"))
    assert (tmp_path / "c" / "metrics.csv").read_text() == (
        tmp_path / "a" / "metrics.csv"
    ).read_text()
    assert (tmp_path / "c" / "classifier.csv").read_text() == classifier
    assert (
        c["final"] == a["final"]
        and c["classifier_final_accuracy"] == a["classifier_final_accuracy"]
    )
    assert len(list((tmp_path / "c" / "logs").glob("version_*"))) == 2

    # resuming a finished run changes nothing
    gan(_config(), run_dir=tmp_path / "a", progress=False, resume=True)
    _assert_same(_state(tmp_path / "a"), _state(tmp_path / "b"))


def test_trainer_options_the_gan_replaces_are_refused(tmp_path):
    for key, instead in (("max_epochs", "train.steps"), ("gradient_clip_val", "optim.grad_clip")):
        with pytest.raises(ConfigError, match=instead):
            gan(_config(**{key: 1}), run_dir=tmp_path / key, progress=False)


def test_non_finite_loss_stops_with_one_line(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_config()))
    run = tmp_path / "run"
    argv = ["gan", "--config", str(cfg), "--out", str(run), "--no-progress", "optim.lr_g=1e30"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("atomssl gan: error: non-finite training loss")
    assert "step 1" in err[0]  # the first step's update blew the weights up; the second stops
    assert not (run / "checkpoints" / "generator.pt").exists()


def test_generate_modules_import_each_other_one_way():
    """No import cycle inside atomssl.generate (the GAN and the critic once imported each other),
    counting imports inside functions too."""
    import ast

    import atomssl.generate

    folder = Path(atomssl.generate.__file__).parent
    deps = {}
    for path in folder.glob("_*.py"):
        nodes = ast.walk(ast.parse(path.read_text()))
        deps[path.stem] = {
            n.module
            for n in nodes
            if isinstance(n, ast.ImportFrom)
            and n.level == 1
            and n.module in {p.stem for p in folder.glob("_*.py")}
        }

    def reaches(start: str, target: str, seen: set) -> bool:
        return any(
            d == target or (d not in seen and reaches(d, target, seen | {d})) for d in deps[start]
        )

    cycles = sorted(m for m in deps if reaches(m, m, set()))
    assert not cycles, f"import cycles through {cycles}"
    assert "_gan" not in deps["_discriminator"]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_ends_with_the_uninterrupted_weights(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_config(checkpoint_every_n_steps=3)))
    ref_run, run, cue = tmp_path / "ref", tmp_path / "run", tmp_path / "killed-here"
    common = ["--no-progress"]
    ref = subprocess.Popen(ATOMSSL + ["gan", "--config", str(cfg), "--out", str(ref_run), *common],
                           env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    # the child stops inside step 8 (last.pt: after step 6, mid-epoch) until it is killed
    code = textwrap.dedent(
        f"""
        import pathlib, sys, time
        from atomssl.generate._gan_module import GanModule
        step = GanModule.training_step
        def training_step(self, batch, batch_idx):
            out = step(self, batch, batch_idx)
            if self.steps_done == 8:
                pathlib.Path({str(cue)!r}).touch()
                time.sleep(600)
            return out
        GanModule.training_step = training_step
        from atomssl.cli.main import main
        sys.exit(main(["gan", "--config", {str(cfg)!r}, "--out", {str(run)!r}, *{common!r}]))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    sigkill_on_cue(proc, cue, timeout=240)
    killed_at = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert killed_at["trainer"]["gan"]["steps_done"] == 6
    assert not (run / "summary.json").exists()

    res = subprocess.run(ATOMSSL + ["gan", "--resume", str(run), *common], env=_env(),
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Restoring states from the checkpoint" in res.stderr
    assert ref.wait(300) == 0, ref.stderr.read().decode()[-3000:]
    _assert_same(_state(ref_run), _state(run))
    assert (run / "metrics.csv").read_text() == (ref_run / "metrics.csv").read_text()
    for name in ("generator.pt", "discriminator.pt"):
        _assert_same(
            torch.load(ref_run / "checkpoints" / name, weights_only=True)["backbone"],
            torch.load(run / "checkpoints" / name, weights_only=True)["backbone"],
        )
    assert json.loads((run / "summary.json").read_text())["steps"] == 10
    assert not list(run.rglob(".*.tmp")), "partial files left behind"


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_config(steps=4)))
    run = tmp_path / "ddp"
    res = subprocess.run(
        ATOMSSL + ["gan", "--config", str(cfg), "--out", str(run), "--devices", "2",
                   "--strategy", "ddp", "--accelerator", "cpu", "--no-progress"],
        env=_env(), capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-4000:]
    assert "distributed_backend=gloo" in res.stderr
    assert "All distributed processes registered" in res.stderr
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    # 8 structures over 2 ranks in batches of 2: 2 steps an epoch; 4 steps = 2 epochs, with
    # 4 generator + 2 critic optimiser steps
    assert ck["trainer"]["gan"]["steps_done"] == 4 and ck["epoch"] == 1 and ck["global_step"] == 6
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 4
    assert all(v == v for v in summary["final"].values())  # averaged over ranks, finite
    assert len(list(tmp_path.iterdir())) == 2  # one run folder for both ranks (and the config)
