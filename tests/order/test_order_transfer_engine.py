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
