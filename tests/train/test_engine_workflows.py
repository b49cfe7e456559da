"""Workflows that bring their own module to the training engine, each checked the same way:

* killed with SIGKILL mid-run (right after a mid-epoch ``last.pt``), then ``--resume``: the final
  weights are bit-identical to those of an uninterrupted run with the same seed (CPU), and the
  resumed run did train on from the kill;
* two DDP processes on CPU (gloo) run to the end;
* a non-finite loss (a learning rate of 1e30) stops the run with one line.

:data:`WORKFLOWS` lists them; a new workflow on the engine adds one :class:`Workflow` entry.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import sigkill_on_cue

from atomssl.cli.main import main

ATOMSSL = [sys.executable, "-m", "atomssl.cli.main"]


def _last_pt(run: Path) -> Path:
    return run / "checkpoints" / "last.pt"


@dataclass(frozen=True)
class Workflow:
    name: str
    #: argv of a run into the run folder ``run``, with extra ``key=value`` overrides
    start: Callable[[Path, list[str]], list[str]]
    #: argv resuming the run in ``run``
    resume: Callable[[Path], list[str]]
    #: the final weights a finished run leaves in ``run``
    weights: Callable[[Path], dict[str, torch.Tensor]]
    #: the run is killed right after the first ``last.pt`` of at least this global step
    kill_at_step: int
    #: global step of the final ``last.pt`` (one process; and with two DDP processes)
    final_step: int
    ddp_final_step: int
    #: overrides making the training loss non-finite
    diverge: list[str]
    #: the ``last.pt`` the run is killed after (and that ``final_step`` is read from)
    last: Callable[[Path], Path] = _last_pt


def _order_start(run: Path, overrides: list[str]) -> list[str]:
    # 360 environments in batches of 40: 9 steps an epoch (5 a process under DDP); 14 steps
    tiny = ["steps=14", "batch=40", "per_crystal=20", "backbone.width=8"]
    every = ["trainer.checkpoint_every_n_steps=3"]
    return ["order", "pretrain", *tiny, *every, *overrides, "--out", str(run), "--no-progress"]


def _order_weights(run: Path) -> dict[str, torch.Tensor]:
    ck = torch.load(run / "backbone.ckpt", weights_only=True)
    heads = {f"{k}.{n}": v for k, t in ck["tasks"].items() for n, v in t.items()}
    return {**ck["backbone"], **heads}


def _motif_start(run: Path, overrides: list[str]) -> list[str]:
    # 2041 bundled training environments + 1 relabelled copy each, batches of 512: 8 steps an
    # epoch (4 a process under DDP), 2 epochs
    tiny = ["train.epochs=2", "train.batch_size=512", "train.permutation_copies=1"]
    every = ["trainer.checkpoint_every_n_steps=5"]
    return ["motif", "train", "--out", str(run), "--no-progress", *tiny, *every, *overrides]


def _motif_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "model.pt", weights_only=True)["state_dict"]


def _pretrain_start(run: Path, overrides: list[str]) -> list[str]:
    # pretrain_tiny: 36 training crystals in batches of 8: 5 steps an epoch (3 a process under
    # DDP), 2 epochs
    every = ["trainer.checkpoint_every_n_steps=3"]
    return ["pretrain", "--config", "pretrain_tiny", "--out", str(run), "--no-progress",
            *every, *overrides]  # fmt: skip


def _last_and_best(run: Path) -> dict[str, torch.Tensor]:
    """Backbone and head weights of ``last.pt`` and (prefixed ``best.``) of ``best.pt``."""
    out = {}
    for name, prefix in (("last.pt", ""), ("best.pt", "best.")):
        ck = torch.load(run / "checkpoints" / name, weights_only=True)
        heads = {f"{k}.{n}": v for k, t in ck["tasks"].items() for n, v in t.items()}
        out.update({prefix + k: v for k, v in {**ck["backbone"], **heads}.items()})
    return out


#: where the fine-tuning entry finds its labelled crystals and config (made once per module)
_FINETUNE: dict[str, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def _finetune_inputs(tmp_path_factory):
    """40 synthetic crystals in one extxyz file, labelled (volume per atom) through their info,
    and a config: a small MEGNet with a dropout head."""
    import ase.io
    import numpy as np
    import yaml

    from atomssl.train import synthetic_crystals

    root = tmp_path_factory.mktemp("finetune-inputs")
    frames = []
    for s in synthetic_crystals(40, seed=3):
        atoms = s.to_ase()
        atoms.info = {"volume": abs(np.linalg.det(s.cell)) / s.n_atoms}
        frames.append(atoms)
    ase.io.write(root / "crystals.extxyz", frames)
    backbone = {"name": "megnet", "n_blocks": 1, "dense": [8, 8], "conv": [8, 8, 8],
                "n_gaussians": 12, "cutoff": 3.5}  # fmt: skip
    data = {"sources": [str(root / "crystals.extxyz")], "label": "volume", "batch_size": 8,
            "val_fraction": 0.2, "test_fraction": 0.2}  # fmt: skip
    cfg = {
        "mode": "full",
        "data": data,
        "backbone": backbone,
        "task": {"name": "regression", "hidden": [16], "dropout": 0.1},
        "trainer": {"max_epochs": 4, "accelerator": "cpu", "patience": 3, "log_every_n_steps": 1},
    }
    (root / "finetune.yaml").write_text(yaml.safe_dump(cfg))
    _FINETUNE["config"] = root / "finetune.yaml"
    yield
    _FINETUNE.clear()


def _finetune_start(run: Path, overrides: list[str]) -> list[str]:
    # 24 training crystals in batches of 8: 3 steps an epoch (2 a process under DDP), 4 epochs
    every = ["trainer.checkpoint_every_n_steps=2"]
    return ["finetune", "--config", str(_FINETUNE["config"]), "--out", str(run), "--no-progress",
            *every, *overrides]  # fmt: skip


#: the GAN's config and the order transfer's backbone checkpoint (made once per module)
_GAN: dict[str, Path] = {}
_TRANSFER: dict[str, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def _gan_and_transfer_inputs(tmp_path_factory):
    """The GAN: 8 synthetic structures in batches of 2 (4 steps an epoch, 2 a process under DDP),
    a one-layer tiny equiformer, 10 steps, critic steps every second step. The order transfer: a
    tiny gaa backbone checkpoint."""
    import yaml

    from atomssl.representation import build_backbone
    from atomssl.testing import tiny_gaa_config
    from atomssl.train._checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("gan-transfer-inputs")
    gan = {
        "seed": 3,
        "data": {"sources": [{"name": "synthetic", "n": 8}], "batch_size": 2},
        "generator": {"backbone": {"name": "equiformer", "size": "tiny", "num_layers": 1}},
        "discriminator": {"classifier_steps": 2},
        "optim": {"d_every": 2, "lr_g": 1.0e-3, "lr_d": 1.0e-3},
        "train": {"steps": 10, "log_every": 3},
        "trainer": {"accelerator": "cpu", "checkpoint_every_n_steps": 3},
    }
    (root / "gan.yaml").write_text(yaml.safe_dump(gan))
    _GAN["config"] = root / "gan.yaml"
    torch.manual_seed(0)
    _TRANSFER["checkpoint"] = save_checkpoint(
        root / "tiny.ckpt", build_backbone(tiny_gaa_config()).eval()
    )
    yield
    _GAN.clear()
    _TRANSFER.clear()


def _gan_start(run: Path, overrides: list[str]) -> list[str]:
    # 10 generator steps and a critic step at every even one (both count as global steps):
    # last.pt at global step 5 (generator step 3), 6 (4, epoch end), 9 (6), 12 (8, epoch end),
    # 14 (9) and 15 (10, the end); 2 DDP processes take the same steps, 2 an epoch each
    return ["gan", "--config", str(_GAN["config"]), "--out", str(run), "--no-progress",
            *overrides]  # fmt: skip


def _gan_weights(run: Path) -> dict[str, torch.Tensor]:
    """The generator and critic (weights, buffers) of ``last.pt``, and the backbones of
    ``generator.pt`` and ``discriminator.pt``."""
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    out = dict(ck["trainer"]["state_dict"])
    for name in ("generator", "discriminator"):
        saved = torch.load(run / "checkpoints" / f"{name}.pt", weights_only=True)["backbone"]
        out.update({f"{name}.{k}": v for k, v in saved.items()})
    return out


def _transfer_start(run: Path, overrides: list[str]) -> list[str]:
    # 67 labelled environments (of 1340, 18 classes), one seed: the frozen core's head for 4
    # steps (last.pt after 3, 4), then scratch and fine-tune-all for 9 each (3, 6, 9), all full
    # batch; under DDP each process takes every step, on half the labelled environments
    tiny = ["--split", "training", "--seeds", "1", "--head-steps", "4", "--full-steps", "9",
            "--fraction", "0.05", "transfer.n_min=64", "transfer.n_test=100"]  # fmt: skip
    every = ["trainer.checkpoint_every_n_steps=3"]
    return ["order", "transfer", "-k", str(_TRANSFER["checkpoint"]), *tiny, *every, *overrides,
            "--out", str(run), "--no-progress"]  # fmt: skip


def _transfer_weights(run: Path) -> dict[str, torch.Tensor]:
    """Backbone and head of every (mode, seed) run's final ``last.pt``."""
    out = {}
    for path in sorted(run.glob("runs/transfer/*/checkpoints/last.pt")):
        ck = torch.load(path, weights_only=True)
        heads = {f"{k}.{n}": v for k, t in ck["tasks"].items() for n, v in t.items()}
        out.update(
            {f"{path.parent.parent.name}.{k}": v for k, v in {**ck["backbone"], **heads}.items()}
        )
    return out


WORKFLOWS = [
    Workflow(
        name="pretrain",
        start=_pretrain_start,
        resume=lambda run: ["pretrain", "--resume", str(run), "--no-progress"],
        weights=_last_and_best,
        kill_at_step=3,  # mid-epoch 0; the resumed run then crosses into epoch 1
        final_step=10,
        ddp_final_step=6,
        diverge=["optim.lr=1e30"],
    ),
    Workflow(
        name="finetune",
        start=_finetune_start,
        resume=lambda run: ["finetune", "--resume", str(run), "--no-progress"],
        weights=_last_and_best,
        kill_at_step=4,  # mid-epoch 1
        final_step=12,
        ddp_final_step=8,
        diverge=["optim.lr=1e30"],
    ),
    Workflow(
        name="order-pretrain",
        start=_order_start,
        resume=lambda run: ["order", "pretrain", "--resume", str(run), "--no-progress"],
        weights=_order_weights,
        kill_at_step=6,  # mid-epoch 0; the resumed run then crosses into epoch 1
        final_step=14,
        ddp_final_step=14,
        diverge=["lr=1e30"],
    ),
    Workflow(
        name="motif-train",
        start=_motif_start,
        resume=lambda run: ["motif", "train", "--resume", str(run), "--no-progress"],
        weights=_motif_weights,
        kill_at_step=10,  # mid-epoch 1
        final_step=16,
        ddp_final_step=8,
        diverge=["train.lr=1e30"],
    ),
    Workflow(
        name="gan",
        start=_gan_start,
        resume=lambda run: ["gan", "--resume", str(run), "--no-progress"],
        weights=_gan_weights,
        kill_at_step=9,  # after generator step 6, mid-epoch 1
        final_step=15,
        ddp_final_step=15,
        diverge=["optim.lr_g=1e30"],
    ),
    Workflow(
        name="order-transfer",
        start=_transfer_start,
        resume=lambda run: ["order", "transfer", "--resume", str(run), "--no-progress"],
        weights=_transfer_weights,
        kill_at_step=6,  # mid-way through the second head (scratch); the first is recorded
        final_step=9,
        ddp_final_step=9,
        diverge=["transfer.lr_head=1e30"],
        last=lambda run: run / "runs" / "transfer" / "scratch-seed0" / "checkpoints" / "last.pt",
    ),
]
IDS = [w.name for w in WORKFLOWS]

# Runs the CLI with the checkpoint writer wrapped: once it has written a ``last.pt`` of global
# step >= KILL_AT_STEP, the child creates KILL_CUE (the parent's cue to SIGKILL it) and waits.
KILLABLE = textwrap.dedent(
    """
    import os, sys, time
    import atomssl.train._checkpoint as ck
    _save = ck.atomic_torch_save

    def save(obj, path):
        _save(obj, path)
        step = obj.get("global_step", -1) if isinstance(obj, dict) else -1
        if os.path.basename(str(path)) == "last.pt" and step >= int(os.environ["KILL_AT_STEP"]):
            open(os.environ["KILL_CUE"], "w").close()
            while True:
                time.sleep(1)

    ck.atomic_torch_save = save
    from atomssl.cli.main import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _env(**extra) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **{k: str(v) for k, v in extra.items()}}


@pytest.mark.slow
@pytest.mark.parametrize("wf", WORKFLOWS, ids=IDS)
def test_sigkill_mid_run_then_resume_ends_with_the_uninterrupted_weights(
    wf, tmp_path, one_thread, caplog
):
    run, cue = tmp_path / "killed", tmp_path / "cue"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, *wf.start(run, [])],
        env=_env(KILL_AT_STEP=wf.kill_at_step, KILL_CUE=cue),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    sigkill_on_cue(proc, cue, timeout=300)
    last = wf.last(run)
    killed_at = torch.load(last, weights_only=True)
    assert killed_at["global_step"] == wf.kill_at_step
    assert not (run / "summary.json").exists() and not (run / "history.csv").exists()

    caplog.set_level(logging.INFO)
    assert main(wf.resume(run)) == 0
    assert f"resuming from {last}" in caplog.text
    ended_at = torch.load(last, weights_only=True)
    assert ended_at["global_step"] == wf.final_step
    assert not list(run.rglob(".*.tmp")), "partial files left behind"

    ref = tmp_path / "straight"
    assert main(wf.start(ref, [])) == 0
    got, want = wf.weights(run), wf.weights(ref)
    assert got.keys() == want.keys() and len(got) > 2
    different = [k for k in want if not torch.equal(got[k], want[k])]
    assert not different, f"resumed run differs from the uninterrupted one in {different}"
    # the resumed run did train on from the kill (equality alone would hold for a frozen run)
    before, after = _backbone_and_heads(killed_at), _backbone_and_heads(ended_at)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def _backbone_and_heads(ck: dict) -> dict[str, torch.Tensor]:
    heads = {f"{k}.{n}": v for k, t in ck.get("tasks", {}).items() for n, v in t.items()}
    return {**ck["backbone"], **heads}


@pytest.mark.slow
@pytest.mark.parametrize("wf", WORKFLOWS, ids=IDS)
def test_two_ddp_processes_on_cpu_run_to_the_end(wf, tmp_path):
    run = tmp_path / "ddp"
    ddp = ["trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
    res = subprocess.run(ATOMSSL + wf.start(run, ddp), env=_env(), cwd=tmp_path,
                         capture_output=True, text=True, timeout=500)  # fmt: skip
    assert res.returncode == 0, res.stderr[-4000:]
    assert "distributed_backend=gloo" in res.stderr
    assert "All distributed processes registered" in res.stderr
    last = torch.load(wf.last(run), weights_only=True)
    assert last["global_step"] == wf.ddp_final_step  # each process took its share of an epoch
    weights = wf.weights(run)
    assert weights and all(
        torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # one run folder for both ranks


@pytest.mark.parametrize("wf", WORKFLOWS, ids=IDS)
def test_a_non_finite_loss_stops_the_run_with_one_line(wf, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(wf.start(run, wf.diverge)) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "non-finite training loss" in lines[0], err[-2000:]
    assert "Traceback" not in err
    for path in run.glob("**/checkpoints/*.pt"):  # what was written keeps finite weights
        ck = torch.load(path, weights_only=True)
        assert all(
            torch.isfinite(v).all() for v in ck["backbone"].values() if v.is_floating_point()
        )
