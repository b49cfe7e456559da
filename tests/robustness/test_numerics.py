"""Numerical guards: a non-finite loss stops training cleanly; embedding a large snapshot stays
within a memory budget.

Determinism (same seed and config -> identical metrics) and ``weights_only`` checkpoint loading
(a crafted pickle is refused and never run) are tested by the trainer's own tests
(``tests/train/test_pretrain.py::test_run_folder_determinism_and_exact_resume``,
``tests/train/test_checkpoint.py::test_pickled_objects_are_refused_and_never_run``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "train"))  # the trainer tests' toy backbone
sys.path.insert(0, str(HERE.parents[1] / "benchmarks"))

from toy_backbone import ToyBackbone, tiny_config  # noqa: E402

from atomssl.errors import TrainingError  # noqa: E402
from atomssl.representation import register_backbone  # noqa: E402
from atomssl.train import load_checkpoint, pretrain  # noqa: E402


@register_backbone("toy_nan")
class NaNAfter(ToyBackbone):
    """The toy backbone, whose outputs turn NaN from the ``after``-th training forward on."""

    def __init__(self, after: int = 6, **kwargs):
        super().__init__(**kwargs)
        self.config = {**self.config, "after": after}  # rebuilt with the same class on load
        self.after = after
        self.calls = 0

    def forward(self, batch):
        out = super().forward(batch)
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                out.node = out.node * float("nan")
                out.graph = out.graph * float("nan")
                out.edge = out.edge * float("nan")
                out.vector = out.vector * float("nan")
        return out


def _nan_config(after: int) -> dict:
    cfg = tiny_config(trainer__max_epochs=4)
    cfg["imports"] = []
    cfg["backbone"] = {"name": "toy_nan", "width": 16, "vector_dim": 4, "after": after}
    return cfg


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    # 30 training structures / batch 8 = 4 steps per epoch, 2 tasks = 2 forwards per step:
    # NaN from the 11th forward = step 5, in epoch 1
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"non-finite training loss \(nan\) at epoch 1, step 5"):
        pretrain(_nan_config(after=10), run_dir=run, progress=False)
    for name in ("last.pt", "best.pt"):
        ck = load_checkpoint(run / "checkpoints" / name)
        assert ck["epoch"] == 0
        for key, value in ck["backbone"].items():
            assert torch.isfinite(value).all(), (name, key)
    assert not list(run.rglob(".*.tmp")), "partial files left behind"


def test_non_finite_loss_at_the_cli_is_one_clean_line(tmp_path, capsys):
    from atomssl.cli.main import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_nan_config(after=0)))
    code = main(["pretrain", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "atomssl pretrain: error: non-finite training loss (nan) at epoch 0, step 0" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()  # nothing good to keep


@pytest.mark.slow
def test_embed_memory_on_a_large_snapshot(tmp_path):
    """A 20k-atom snapshot through the real ``atomssl embed``: finite embeddings for every atom,
    and peak memory on the trend that keeps 100k atoms within 8 GiB (measured by
    ``benchmarks/embed_memory.py``: see ``benchmarks/results/embed_memory.md``)."""
    from embed_memory import checkpoint, measure

    ck, _ = checkpoint(tmp_path)
    small = measure(2_000, tmp_path, ck, [])
    big = measure(20_000, tmp_path, ck, [])
    assert (
        big["finite"]
        and big["shapes"]["atom"][0] == big["atoms"]
        and big["shapes"]["structure"][0] == 1
    )
    per_atom = (big["peak_gib"] - small["peak_gib"]) / (big["atoms"] - small["atoms"])
    projected = small["peak_gib"] + per_atom * (100_000 - small["atoms"])
    assert big["peak_gib"] < 3.0, big
    assert projected < 8.0, (small, big, projected)
    np.testing.assert_array_less(0, per_atom)
