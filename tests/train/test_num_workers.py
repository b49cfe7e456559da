"""``data.num_workers: auto``: graph-building workers only where the data streams, one per spare
core of each training process."""

from __future__ import annotations

import os

import pytest

from atomssl.errors import ConfigError
from atomssl.train._data import AUTO_WORKERS_MAX, resolve_num_workers


@pytest.fixture
def cores(monkeypatch):
    def set_cores(n: int) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)))

    return set_cores


@pytest.mark.parametrize("n_cores, want", [(1, 0), (2, 1), (3, 2), (8, AUTO_WORKERS_MAX), (64, 4)])
def test_auto_gives_one_worker_per_spare_core_when_streaming(cores, n_cores, want):
    cores(n_cores)
    assert resolve_num_workers("auto", True, 1) == want
    assert resolve_num_workers("AUTO", True) == want


@pytest.mark.parametrize("processes", [2, 4, 16])
def test_auto_gives_a_run_of_several_processes_no_worker(cores, processes):
    # workers forked from a process running torch.distributed can deadlock (two gloo nodes on
    # one machine hung that way): auto leaves them out; an integer still asks for them
    cores(64)
    assert resolve_num_workers("auto", True, processes) == 0
    assert resolve_num_workers(2, True, processes) == 2


def test_auto_builds_in_memory_graphs_in_the_training_process(cores):
    cores(16)
    assert resolve_num_workers("auto", False, 1) == 0


def test_an_integer_is_taken_as_it_is(cores):
    cores(2)
    assert resolve_num_workers(3, True, 2) == 3
    assert resolve_num_workers(0, True) == 0
    assert resolve_num_workers(2, False) == 2


@pytest.mark.parametrize("bad", [-1, "two", "", 1.5, True, None])
def test_anything_else_is_refused_in_one_line(bad):
    with pytest.raises(ConfigError, match="data.num_workers must be an integer >= 0 or auto"):
        resolve_num_workers(bad, True)


def test_the_cli_refuses_a_bad_value_before_training(tmp_path, capsys):
    from atomssl.cli.main import main

    rc = main(["pretrain", "--config", "pretrain_tiny", "--out", str(tmp_path / "run"),
               "--no-progress", "data.num_workers=many"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc != 0 and "data.num_workers" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_streamed_run_on_two_cores_builds_graphs_in_one_worker(tmp_path, cores, caplog):
    import logging

    from atomssl.train import pretrain

    cores(2)
    caplog.set_level(logging.INFO)
    cfg = {
        "seed": 0,
        "data": {"sources": ["aflow_prototypes"], "limit": 24, "in_memory": False,
                 "batch_size": 8, "val_fraction": 0.0},
        "backbone": {"name": "megnet", "n_blocks": 1, "dense": [8, 8], "conv": [8, 8, 8],
                     "n_gaussians": 12, "cutoff": 3.5},
        "tasks": ["edge_denoise"],
        "trainer": {"max_epochs": 1, "accelerator": "cpu"},
        "run": {"root": str(tmp_path), "name": "run"},
    }  # fmt: skip
    pretrain(cfg, progress=False)
    assert "graphs built in 1 worker process(es)" in caplog.text
