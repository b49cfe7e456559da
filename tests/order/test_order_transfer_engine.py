"""``atomssl order transfer`` on the training engine: heads trained by Lightning, deterministic per
seed, a one-line stop on a non-finite loss, a run folder that a resumed experiment completes."""

import json

import numpy as np
import pytest
import torch

from atomssl.errors import TrainingError
from atomssl.order import _transfer, _transfer_heads, reference_clouds, transfer
from atomssl.representation import build_backbone
from atomssl.testing import tiny_gaa_config

TINY = tiny_gaa_config()
# a small budget: every mode, a curve, minibatches for the many-labels model
BUDGET = dict(fraction=0.1, seeds=(0, 1), n_test=40, head_steps=12, full_steps=2,
              many_labels=0.2, many_steps=2, batch_size=16, curve_at=(2,))  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return build_backbone(TINY).eval()


@pytest.fixture(scope="module")
def refs():
    return reference_clouds(("cF4-Cu", "cI2-W"), n_min=48, seed=1)


def _table(rows):
    """The rows but their timings (NaN as a string: NaN != NaN)."""
    nan = lambda v: "nan" if isinstance(v, float) and np.isnan(v) else v  # noqa: E731
    return [{k: nan(v) for k, v in r.items() if k != "seconds"} for r in rows]


def _head(n_classes=6):
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, n_classes)
    )


@pytest.mark.parametrize("train_backbone, batch_size", [(False, None), (True, 8)])
def test_a_head_trains_the_same_for_a_seed(backbone, refs, train_backbone, batch_size):
    import copy

    clouds, y = refs.clouds[:40], refs.structure_noise[:40]
    got = []
    for seed in (0, 0, 1):
        bb, head = copy.deepcopy(backbone), _head()
        loss, curve = _transfer_heads._train_head(
            bb, head, clouds, y, train_backbone=train_backbone, steps=4, lr=1e-2, seed=seed,
            batch_size=batch_size, curve_at=(2, 4),
            evaluate=lambda dev, bb=bb, head=head: _transfer_heads._accuracy(
                bb, head, clouds, y, device=dev),
        )  # fmt: skip
        assert np.isfinite(loss) and [s for s, _ in curve] == [2, 4]
        assert not bb.training and all(p.requires_grad == train_backbone for p in bb.parameters())
        got.append((loss, curve, _flat(head), _flat(bb)))
    assert got[0][:2] == got[1][:2]
    assert torch.equal(got[0][2], got[1][2]) and torch.equal(got[0][3], got[1][3])
    if train_backbone:  # minibatches drawn by the seed (the weights start the same)
        assert not torch.equal(got[0][3], got[2][3])
    else:  # the frozen core stays as it was; the head trains
        assert torch.equal(got[0][3], _flat(backbone))
        assert not torch.equal(got[0][2], _flat(_head()))


def _flat(module) -> torch.Tensor:
    return torch.cat([p.detach().ravel() for p in module.parameters()])


def test_transfer_is_deterministic_per_seed_and_writes_a_run_folder(tmp_path, backbone, refs):
    budget = dict(BUDGET, seeds=(1,))
    a = transfer(backbone, tmp_path / "a", refs=refs, **budget)
    b = transfer(backbone, tmp_path / "b", refs=refs, **budget)
    assert _table(a) == _table(b)
    assert (tmp_path / "a" / "transfer_curve.csv").read_text() == (
        tmp_path / "b" / "transfer_curve.csv"
    ).read_text()
    run = tmp_path / "a" / "runs" / "transfer" / "frozen_pretrained-seed1"
    rec = json.loads((run / "result.json").read_text())
    assert rec["row"]["accuracy"] == next(
        r["accuracy"] for r in a if r["mode"] == "frozen_pretrained" and r["seed"] == 1
    )
    assert (run / "logs" / "version_0" / "metrics.csv").is_file()
    assert "transfer" in (tmp_path / "a" / "config.yaml").read_text()
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert set(summary["splits"]["training"]["accuracy"]) == {r["mode"] for r in a}


@pytest.mark.parametrize("how", ["lr", "loss"])
def test_a_non_finite_loss_stops_with_one_line(tmp_path, backbone, refs, monkeypatch, how):
    budget = dict(BUDGET, seeds=(0,), many_labels=None)
    if how == "lr":
        budget["lr_head"] = 1e30
    else:
        monkeypatch.setattr(_transfer_heads, "_loss", lambda logits, y: logits.sum() * np.nan)
    with pytest.raises(TrainingError) as exc:
        transfer(backbone, tmp_path, refs=refs, **budget)
    assert "non-finite training loss" in str(exc.value) and "\n" not in str(exc.value)
    assert not list(tmp_path.glob("runs/transfer/*/result.json"))  # nothing recorded


def test_an_interrupted_transfer_resumed_ends_with_the_uninterrupted_table(
    tmp_path, backbone, refs, monkeypatch
):
    whole = transfer(backbone, tmp_path / "whole", refs=refs, **BUDGET)
    real, calls = _transfer._one_run, []

    def one_run(*args, **kwargs):
        if len(calls) == 2:
            raise RuntimeError("killed")  # after the first two runs
        calls.append(args[8:10])  # (mode, seed)
        return real(*args, **kwargs)

    monkeypatch.setattr(_transfer, "_one_run", one_run)
    with pytest.raises(RuntimeError, match="killed"):
        transfer(backbone, tmp_path / "cut", refs=refs, **BUDGET)
    assert len(list((tmp_path / "cut").glob("runs/transfer/*/result.json"))) == 2
    monkeypatch.setattr(_transfer, "_one_run", real)
    trained = []
    monkeypatch.setattr(
        _transfer, "_one_run", lambda *a, **k: trained.append(a[8:10]) or real(*a, **k)
    )
    resumed = transfer(backbone, tmp_path / "cut", refs=refs, resume=True, **BUDGET)
    assert len(trained) == len(whole) // 2 - 2 and not set(trained) & set(calls)
    assert _table(resumed) == _table(whole)
    for name in ("transfer.csv", "transfer_curve.csv"):
        assert _csv(tmp_path / "cut" / name) == _csv(tmp_path / "whole" / name)


def _csv(path):
    import csv

    with open(path) as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


def test_cli_order_transfer_resumes_its_run_folder(tmp_path, backbone, refs, monkeypatch, capsys):
    from atomssl.cli.main import main
    from atomssl.train._checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "tiny.ckpt", backbone)
    monkeypatch.setattr(_transfer, "split_reference_clouds", lambda split, n_min: refs)
    out = tmp_path / "run"
    argv = ["order", "transfer", "-k", str(ckpt), "--split", "training", "--seeds", "1",
            "--head-steps", "5", "--full-steps", "2", "--fraction", "0.1", "-q"]  # fmt: skip
    monkeypatch.setattr(_transfer_heads, "_loss", lambda logits, y: logits.sum() * np.inf)
    assert main([*argv, "--out", str(out), "trainer.accelerator=cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert "non-finite training loss" in err and len(err.splitlines()) == 1
    monkeypatch.undo()
    monkeypatch.setattr(_transfer, "split_reference_clouds", lambda split, n_min: refs)
    assert main(["order", "transfer", "--resume", str(out), "-q"]) == 0
    rows = _csv(out / "transfer.csv")
    assert {r["mode"] for r in rows} == {"frozen_pretrained", "scratch", "finetune_all"}
    assert {r["steps"] for r in rows if r["mode"] == "frozen_pretrained"} == {"5"}
    again = tmp_path / "again"
    assert main([*argv, "--out", str(again)]) == 0
    assert _csv(again / "transfer.csv") == rows
    assert main(["order", "transfer", "--resume", str(out), "-q", "model.width=3"]) == 1
    assert "trainer.KEY=VALUE" in capsys.readouterr().err


def _last_weights(out):
    """Backbone and head of every run's ``last.pt`` under ``out``."""
    got = {}
    for path in sorted(out.glob("runs/transfer/*/checkpoints/last.pt")):
        ck = torch.load(path, weights_only=True)
        for part, state in (("backbone", ck["backbone"]), ("head", ck["tasks"]["head"])):
            got.update({f"{path.parent.parent.name}.{part}.{k}": v for k, v in state.items()})
    return got


def test_a_head_stopped_mid_way_resumes_to_the_uninterrupted_weights_and_curve(
    tmp_path, backbone, refs, monkeypatch, caplog
):
    """Minibatches (the many-labels head) drawn per step: stopped after its step 5 (last.pt of
    step 4), resumed, the head ends with the weights, loss and accuracy curve of an uninterrupted
    run; the heads recorded before are not trained again."""
    import logging

    budget = dict(BUDGET, seeds=(0,), many_steps=7, curve_at=(2, 6))
    trainer = {"accelerator": "cpu", "checkpoint_every_n_steps": 2}
    whole = transfer(backbone, tmp_path / "whole", refs=refs, trainer=trainer, **budget)
    real = _transfer_heads.HeadModule.training_step

    def training_step(self, step, batch_idx):
        if not self.full and self.global_step == 5:
            raise RuntimeError("stopped")
        return real(self, step, batch_idx)

    monkeypatch.setattr(_transfer_heads.HeadModule, "training_step", training_step)
    cut = tmp_path / "cut"
    with pytest.raises(RuntimeError, match="stopped"):
        transfer(backbone, cut, refs=refs, trainer=trainer, **budget)
    last = cut / "runs" / "transfer" / "scratch_many_labels-seed0" / "checkpoints" / "last.pt"
    assert torch.load(last, weights_only=True)["global_step"] == 4
    monkeypatch.undo()
    trained = []
    real_run = _transfer._one_run
    monkeypatch.setattr(
        _transfer, "_one_run", lambda *a, **k: trained.append(a[8]) or real_run(*a, **k)
    )
    caplog.set_level(logging.INFO)
    resumed = transfer(backbone, cut, refs=refs, trainer=trainer, resume=True, **budget)
    assert trained == ["scratch_many_labels"] and f"resuming from {last}" in caplog.text
    assert torch.load(last, weights_only=True)["global_step"] == 7
    assert _table(resumed) == _table(whole)
    assert _csv(cut / "transfer_curve.csv") == _csv(tmp_path / "whole" / "transfer_curve.csv")
    got, want = _last_weights(cut), _last_weights(tmp_path / "whole")
    assert got.keys() == want.keys() and len(got) > 4
    assert not [k for k in want if not torch.equal(got[k], want[k])]


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path, backbone, refs):
    """A run folder resumed with fewer head steps trains the frozen core's head again from the
    start (resumed from the last.pt of 12 steps, it would stop there at once)."""
    budget = dict(BUDGET, seeds=(0,), many_labels=None, curve_at=())
    trainer = {"accelerator": "cpu"}
    transfer(backbone, tmp_path / "a", refs=refs, trainer=trainer, **budget)
    shorter = dict(budget, head_steps=8)
    again = transfer(backbone, tmp_path / "a", refs=refs, trainer=trainer, resume=True, **shorter)
    fresh = transfer(backbone, tmp_path / "b", refs=refs, trainer=trainer, **shorter)
    assert _table(again) == _table(fresh)
    assert _last_weights(tmp_path / "a").keys() == _last_weights(tmp_path / "b").keys()
    a, b = _last_weights(tmp_path / "a"), _last_weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_order_transfer_takes_transfer_settings(tmp_path, backbone, refs, monkeypatch, capsys):
    from atomssl.cli.main import main
    from atomssl.train._checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "tiny.ckpt", backbone)
    monkeypatch.setattr(_transfer, "split_reference_clouds", lambda split, n_min: refs)
    out = tmp_path / "run"
    argv = ["order", "transfer", "-k", str(ckpt), "--split", "training", "--seeds", "1",
            "--head-steps", "3", "--full-steps", "2", "--fraction", "0.1", "-q",
            "--out", str(out), "trainer.accelerator=cpu"]  # fmt: skip
    assert main([*argv, "transfer.head_step=4"]) == 1
    err = capsys.readouterr().err.strip()
    assert "unknown setting(s) transfer.head_step" in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert main([*argv, "transfer.n_test=30", "transfer.lr_head=0.01"]) == 0
    rows = _csv(out / "transfer.csv")
    assert {r["test"] for r in rows} == {"30"}
    import yaml

    settings = yaml.safe_load((out / "config.yaml").read_text())["transfer"]
    assert settings["lr_head"] == 0.01 and settings["device"] is None


# Dumps, in every DDP process, the weights and (loss, curve) of each head it trained
_DUMP_RANKS = """
import os
if os.environ.get("ATOMSSL_TEST_DUMP"):
    import torch
    import atomssl.order._transfer as tr

    real, done = tr._train_head, []

    def _train_head(backbone, head, *args, **kwargs):
        out = real(backbone, head, *args, **kwargs)
        state = {"backbone": backbone.state_dict(), "head": head.state_dict(), "out": out}
        rank = os.environ.get("LOCAL_RANK", "0")
        torch.save(state, os.path.join(os.environ["ATOMSSL_TEST_DUMP"], f"{rank}-{len(done)}.pt"))
        done.append(1)
        return out

    tr._train_head = _train_head
"""


@pytest.mark.slow
def test_two_ddp_processes_end_every_head_with_the_same_model(tmp_path, backbone):
    """Under 2-process DDP every process trains every head, each on its half of the labelled
    environments; both end with the same weights (buffers included), loss and accuracy curve,
    which rank 0's last.pt holds."""
    import os
    import subprocess
    import sys

    from atomssl.train._checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "tiny.ckpt", backbone)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_DUMP_RANKS)
    (tmp_path / "dump").mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", ATOMSSL_TEST_DUMP=str(tmp_path / "dump"),
               PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))  # fmt: skip
    out = tmp_path / "run"
    argv = ["order", "transfer", "-k", str(ckpt), "--split", "training", "--seeds", "1",
            "--head-steps", "4", "--full-steps", "3", "--fraction", "0.05", "--many-labels", "0.2",
            "--out", str(out), "-q", "transfer.n_min=64", "transfer.n_test=100",
            "transfer.many_steps=3", "transfer.batch_size=16", "transfer.curve_at=[2]",
            "trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]  # fmt: skip
    res = subprocess.run([sys.executable, "-m", "atomssl.cli.main", *argv], env=env,
                         capture_output=True, text=True, timeout=500)  # fmt: skip
    assert res.returncode == 0, res.stderr[-4000:]
    assert "All distributed processes registered. Starting with 2 processes" in res.stderr
    modes = ["frozen_pretrained", "scratch", "finetune_all", "scratch_many_labels"]
    for i, mode in enumerate(modes):
        zero = torch.load(tmp_path / "dump" / f"0-{i}.pt", weights_only=True)
        one = torch.load(tmp_path / "dump" / f"1-{i}.pt", weights_only=True)
        assert zero["out"] == one["out"] and np.isfinite(zero["out"][0])
        for part in ("backbone", "head"):
            differ = [k for k in zero[part] if not torch.equal(zero[part][k], one[part][k])]
            assert not differ, f"{mode}: the processes' {part}s differ in {differ}"
        last = torch.load(out / "runs" / "transfer" / f"{mode}-seed0" / "checkpoints" / "last.pt",
                          weights_only=True)  # fmt: skip
        assert last["global_step"] == (4 if mode == "frozen_pretrained" else 3)
        assert all(torch.equal(last["backbone"][k], v) for k, v in zero["backbone"].items())
        assert all(torch.equal(last["tasks"]["head"][k], v) for k, v in zero["head"].items())
    rows = _csv(out / "transfer.csv")
    assert [r["mode"] for r in rows if r["seed"] == "0"] == modes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump", "run", "site", "tiny.ckpt"]
