"""``trainer.num_nodes=2`` on one machine: two launches of the same ``atomssl pretrain`` command as
node 0 and node 1 (``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``, ``NODE_RANK``, ``WORLD_SIZE=2``,
``LOCAL_RANK=0``; DDP on CPU with gloo, one process a node). They finish with identical weights,
and each epoch's samples are split exactly between the nodes."""

import socket
import subprocess
import sys
import time

import pytest
import torch
import yaml
from test_streaming import (
    assert_exact_epochs,
    read_records,
    recorder_script,
    subprocess_env,
    training_ids,
)
from toy_backbone import tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_one_machine_end_with_identical_weights(tmp_path):
    script = recorder_script(tmp_path)
    cfg = tiny_config(trainer__max_epochs=2, data__sources=[{"name": "synthetic", "n": 40}], data__batch_size=4,
                      data__val_fraction=0.25, data__in_memory=False)  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run, rec, weights = tmp_path / "run", tmp_path / "rec", tmp_path / "weights"
    rec.mkdir()
    weights.mkdir()
    command = [sys.executable, str(script), "pretrain", "--config", str(tmp_path / "cfg.yaml"), "--out", str(run),
               "--num-nodes", "2", "--devices", "1", "--strategy", "ddp", "--accelerator", "cpu", "--no-progress"]  # fmt: skip
    port = _free_port()
    nodes = []
    for node in (0, 1):
        env = subprocess_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=node, WORLD_SIZE=2, LOCAL_RANK=0,
                             REC_DIR=rec, ATOMSSL_FINAL_WEIGHTS_DIR=weights)  # fmt: skip
        nodes.append(
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and any(p.poll() is None for p in nodes):
            if any(p.poll() not in (None, 0) for p in nodes):
                break  # one node failed: the other would wait for it forever
            time.sleep(0.2)
    finally:
        for p in nodes:
            if p.poll() is None:
                p.kill()
        errors = [p.communicate()[1].decode() for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n\n".join(e[-3000:] for e in errors)
    assert (
        "distributed_backend=gloo" in errors[0]
        and "All distributed processes registered" in errors[0]
    )

    a = torch.load(weights / "rank0.pt", weights_only=True)
    b = torch.load(weights / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)  # written by node 0 only
    assert (
        last["global_step"] == 8
    )  # 30 training structures: 15 a node, 4 batches of <= 4, 2 epochs
    assert all(torch.equal(last["backbone"][k], a[f"backbone.{k}"]) for k in last["backbone"])
    assert (run / "summary.json").is_file() and not (tmp_path / "pretrain-not-rank-0").exists()
    assert_exact_epochs(read_records(rec), training_ids(40, 0.25), epochs=2)  # 30: divisible by 2
