"""Streaming training: exact per-rank shares, equal step counts, lazy stores, mid-epoch resume.

The subprocess tests run the real ``atomssl pretrain`` command through a small wrapper script
(:data:`RECORDER`) that adds one callback: every process appends ``[epoch, global_step,
sample_ids]`` of each training batch to ``$REC_DIR/rank<R>.jsonl``.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import toy_backbone  # noqa: F401  (registers "toy"; tests/train is on sys.path under pytest)
import yaml
from torch.utils.data import DistributedSampler
from toy_backbone import tiny_config

from atomssl.errors import ConfigError
from atomssl.train._data import GraphDataset, load_structures, make_loader, synthetic_crystals
from atomssl.train._sampler import (
    ResumableLoader,
    ShardedBatchSampler,
    batch_sizes,
    steps_per_epoch,
)

HERE = Path(__file__).resolve().parent

RECORDER = """
import json, os, sys
from lightning.pytorch.callbacks import Callback
import atomssl.train._pretrain as P


class Record(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        path = os.path.join(os.environ["REC_DIR"], f"rank{trainer.global_rank}.jsonl")
        with open(path, "a") as fh:
            fh.write(json.dumps([trainer.current_epoch, trainer.global_step, batch.sample_id.tolist()]) + "\\n")


_make = P._make_trainer
P._make_trainer = lambda config, run_dir, callbacks, progress: _make(config, run_dir, [*callbacks, Record()], progress)
from atomssl.cli.main import main

sys.exit(main(sys.argv[1:]))
"""


def recorder_script(folder: Path) -> Path:
    path = folder / "record_pretrain.py"
    path.write_text(RECORDER)
    return path


def subprocess_env(**extra) -> dict:
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    )
    for key in (
        "LOCAL_RANK",
        "NODE_RANK",
        "RANK",
        "GROUP_RANK",
        "WORLD_SIZE",
        "ATOMSSL_RUN_DIR",
        "SLURM_PROCID",
        "SLURM_NTASKS",
    ):
        env.pop(key, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def read_records(folder: Path) -> dict[int, list[tuple[int, int, list[int]]]]:
    """``{rank: [(epoch, step, ids), ...]}`` (a line cut by a kill is ignored)."""
    out: dict[int, list] = {}
    for path in sorted(folder.glob("rank*.jsonl")):
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(tuple(json.loads(line)))
            except ValueError:
                pass
        out[int(path.stem[4:])] = rows
    return out


def training_ids(n: int, val_fraction: float, seed: int = 0) -> list[int]:
    """Sample ids (indices among all ``n`` structures) of a run's training split."""
    from atomssl.train._data import split_indices

    return split_indices(n, val_fraction, seed)[0].tolist()


def assert_exact_epochs(records: dict[int, list], train: list[int], epochs: int) -> None:
    """Per epoch: ranks saw disjoint samples, together each of ``train`` exactly once, and made
    the same number of steps."""
    for e in range(epochs):
        per_rank = {
            r: [i for ep, _, ids in rows if ep == e for i in ids] for r, rows in records.items()
        }
        steps = {r: sum(1 for ep, _, _ in rows if ep == e) for r, rows in records.items()}
        assert len(set(steps.values())) == 1, f"epoch {e}: steps per rank {steps}"
        every = [i for ids in per_rank.values() for i in ids]
        assert sorted(every) == sorted(train), (
            f"epoch {e}: not exactly one pass ({len(every)} samples, {len(set(every))} distinct)"
        )


def make_store(path: Path, n: int = 40, seed: int = 0) -> Path:
    from atomssl.data import StructureStore

    with StructureStore(path, "w") as store:
        store.write(synthetic_crystals(n, seed=seed))
    return path


# ------------------------------------------------------------------------------ sampler
@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
def test_shares_are_exact_and_every_rank_makes_the_same_steps(replicas):
    for n in range(replicas, 70):
        for b in (1, 2, 3, 4, 8):
            seen, steps = [], set()
            for rank in range(replicas):
                sampler = ShardedBatchSampler(n, b, replicas, rank, shuffle=True, seed=3)
                sampler.set_epoch(5)
                batches = list(sampler)
                steps.add(len(batches))
                assert len(batches) == len(sampler) == steps_per_epoch(n, b, replicas)
                assert all(batches) and (b == 1 or all(len(x) <= b for x in batches)), (n, b, rank)
                seen += [i for x in batches for i in x]
            assert len(steps) == 1, (n, b, steps)
            assert sorted(seen) == list(range(n)), (n, b)


def test_edge_case_shares_that_would_fill_different_batch_counts():
    # 2 ranks, 17 samples, batches of 8: shares 8 and 9; the 9 need 2 batches, so the 8 make 2 too
    assert steps_per_epoch(17, 8, 2) == 2
    assert batch_sizes(8, 2, 8) == [7, 1] and batch_sizes(9, 2, 8) == [8, 1]
    # batch 1, shares 2 and 3: two steps each (one batch of the larger share holds 2)
    assert steps_per_epoch(5, 1, 2) == 2 and batch_sizes(3, 2, 1) == [2, 1]
    with pytest.raises(ConfigError, match="each process needs at least one"):
        steps_per_epoch(1, 4, 2)


def test_order_depends_only_on_seed_and_epoch_and_one_process_keeps_its_old_order():
    def order(seed, epoch, n=37):
        s = ShardedBatchSampler(n, 8, 1, 0, shuffle=True, seed=seed)
        s.set_epoch(epoch)
        return [i for b in s for i in b]

    assert order(1, 2) == order(1, 2) and order(1, 2) != order(1, 3) and order(1, 2) != order(2, 2)
    ref = DistributedSampler(range(37), num_replicas=1, rank=0, shuffle=True, seed=1)
    ref.set_epoch(2)
    assert order(1, 2) == list(ref)  # the order DistributedSampler gave one process before
    s = ShardedBatchSampler(10, 4, 1, 0, shuffle=False)
    assert list(s) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_resumes_after_the_batches_it_handed_out(workers):
    data = list(range(23))

    def loader():
        return ResumableLoader(
            data, ShardedBatchSampler(23, 4, 1, 0, True, 9), num_workers=workers, collate_fn=list
        )

    full = loader()
    full.batch_sampler.set_epoch(1)
    want = list(full)
    first = loader()
    first.batch_sampler.set_epoch(1)
    it = iter(first)
    got = [next(it) for _ in range(2)]  # workers have prefetched more index batches than this
    state = first.state_dict()
    assert state["epoch"] == 1 and state["batches"] == 2
    second = loader()
    second.load_state_dict(state)
    second.batch_sampler.set_epoch(1)  # Lightning sets the (same) epoch after restoring
    rest = list(second)
    assert got + rest == want
    assert second.state_dict()["batches"] == len(want)
    second.batch_sampler.set_epoch(2)  # the next epoch starts from its first batch
    assert len(list(second)) == len(want)
    # a checkpoint from another layout (other batch size) restarts the epoch instead
    other = ResumableLoader(data, ShardedBatchSampler(23, 5, 1, 0, True, 9), collate_fn=list)
    other.load_state_dict(state)
    other.batch_sampler.set_epoch(1)
    assert sum(len(b) for b in other) == 23


# ------------------------------------------------------------------------- lazy data
def test_lazy_store_limit_stays_lazy_and_graphs_carry_sample_ids(tmp_path):
    store = make_store(tmp_path / "s.db", n=12)
    lazy = load_structures(
        {"sources": [{"name": str(store), "limit": 10}], "in_memory": False, "limit": 8}
    )
    assert not isinstance(lazy, list) and len(lazy) == 8
    eager = load_structures({"sources": [str(store)], "limit": 8})
    assert isinstance(eager, list) and [s.id for s in eager] == [lazy[i].id for i in range(8)]
    ds = GraphDataset(lazy, {"cutoff": 4.0})
    here = next(iter(make_loader(ds, 3, shuffle=False)))
    batch = next(
        iter(make_loader(ds, 3, shuffle=False, num_workers=1))
    )  # built in a worker, handed over as bytes
    assert batch.sample_id.tolist() == [0, 1, 2] and batch.num_graphs == 3
    assert type(batch) is type(here) and batch.keys() == here.keys()
    assert all(
        torch.equal(batch[k], here[k]) and batch[k].dtype == here[k].dtype
        for k in here.keys()
        if torch.is_tensor(here[k])
    )


def test_a_corpus_folder_is_always_streamed(tmp_path):
    from atomssl.data import ShardedCorpus, import_shards
    from atomssl.train._data import PretrainDataModule

    import_shards([make_store(tmp_path / "s.db", n=20)], tmp_path / "corpus", shard_size=8)
    dm = PretrainDataModule(
        {"sources": [str(tmp_path / "corpus")], "batch_size": 4, "val_fraction": 0.2},
        {"cutoff": 4.0},
    )
    dm.setup("fit")  # data.in_memory is true by default: a corpus streams all the same
    assert dm.streamed and isinstance(dm.structures, ShardedCorpus) and len(dm.structures) == 20
    batches = list(dm.train_dataloader())
    assert (
        len(batches) == 4
        and sorted(i for b in batches for i in b.sample_id.tolist())
        == dm.train_set.indices.tolist()
    )
    limited = load_structures({"sources": [{"name": str(tmp_path / "corpus"), "limit": 5}]})
    assert not isinstance(limited, list) and len(limited) == 5


def test_streamed_run_matches_in_memory_run(tmp_path):
    """Same store, seed and config: read lazily with graphs built in a worker process, or built
    up front in memory: the same batches, so the same weights."""
    from atomssl.train import pretrain

    store = make_store(tmp_path / "s.db")
    base = dict(trainer__max_epochs=2, data__sources=[str(store)], data__batch_size=6)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mem = pretrain(tiny_config(**base), run_dir=tmp_path / "mem", progress=False)
        lazy = pretrain(
            tiny_config(**base, data__in_memory=False, data__num_workers=1),
            run_dir=tmp_path / "lazy",
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    assert mem["tasks"] == lazy["tasks"]
    a = torch.load(tmp_path / "mem" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "lazy" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(a["backbone"][k], b["backbone"][k]) for k in a["backbone"])


def test_streamed_finetune_reads_a_store_lazily(tmp_path):
    """Fine-tuning from a labelled store with ``data.in_memory: false``: a linear probe (no
    shuffling) predicts exactly what the in-memory run does; full fine-tuning runs with a worker."""
    from atomssl.data import StructureStore
    from atomssl.evaluate import finetune

    structures = synthetic_crystals(30, seed=4)
    for s in structures:
        s.labels = {"vpa": abs(float(np.linalg.det(s.cell))) / s.n_atoms}
    with StructureStore(tmp_path / "l.db", "w") as store:
        store.write(structures)
    tiny = {
        "name": "megnet",
        "n_blocks": 1,
        "dense": [8, 8],
        "conv": [8, 8, 8],
        "n_gaussians": 12,
        "cutoff": 3.5,
    }

    def cfg(mode, **data):
        return {"mode": mode, "backbone": tiny, "task": {"name": "regression", "hidden": [8]},
                "data": {"sources": [str(tmp_path / "l.db")], "label": "vpa", "batch_size": 8, **data},
                "trainer": {"max_epochs": 1, "accelerator": "cpu"}}  # fmt: skip

    torch.manual_seed(0)
    mem = finetune(cfg("linear_probe"), run_dir=tmp_path / "mem", progress=False)
    torch.manual_seed(0)
    lazy = finetune(cfg("linear_probe", in_memory=False), run_dir=tmp_path / "lazy", progress=False)
    assert lazy["scores"] == mem["scores"]
    assert (tmp_path / "mem" / "predictions.csv").read_text() == (
        tmp_path / "lazy" / "predictions.csv"
    ).read_text()
    full = finetune(
        cfg("full", in_memory=False, num_workers=1), run_dir=tmp_path / "full", progress=False
    )
    assert full["sizes"] == mem["sizes"] and np.isfinite(full["scores"]["test"]["mae"])


# ---------------------------------------------------------------------- subprocesses
@pytest.mark.slow
def test_two_process_ddp_sees_each_sample_once_per_epoch(tmp_path):
    """2 processes (gloo), 31 training structures (not divisible by 2), batches of 4: shares of
    15 and 16 in 4 steps each."""
    script = recorder_script(tmp_path)
    cfg = tiny_config(trainer__max_epochs=2, data__sources=[{"name": "synthetic", "n": 41}], data__batch_size=4,
                      data__val_fraction=0.25, data__in_memory=False, data__num_workers=1)  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    rec = tmp_path / "rec"
    rec.mkdir()
    res = subprocess.run(
        [
            sys.executable,
            str(script),
            "pretrain",
            "--config",
            str(tmp_path / "cfg.yaml"),
            "--out",
            str(tmp_path / "run"),
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--accelerator",
            "cpu",
            "--no-progress",
        ],  # fmt: skip
        env=subprocess_env(REC_DIR=rec),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    records = read_records(rec)
    assert sorted(records) == [0, 1]
    assert_exact_epochs(records, training_ids(41, 0.25), epochs=2)
    assert [len(ids) for _, _, ids in records[0][:4]] == [4, 4, 4, 3] and [
        len(ids) for _, _, ids in records[1][:4]
    ] == [4, 4, 4, 4]
    assert (
        torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["global_step"]
        == 8
    )


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_repeats_and_skips_nothing(tmp_path):
    """Streaming from a store with a worker process, a step checkpoint every 3 steps (8 steps an
    epoch): killed after a checkpoint inside epoch 1, resumed with ``--resume``. The samples
    trained on before the checkpoint and after the resume make exactly one pass per epoch, and the
    final weights equal those of an uninterrupted run, bit for bit."""
    script = recorder_script(tmp_path)
    store = make_store(tmp_path / "s.db", n=40)
    cfg = tiny_config(trainer__max_epochs=3, trainer__checkpoint_every_n_steps=3, data__sources=[str(store)],
                      data__batch_size=4, data__in_memory=False, data__num_workers=1)  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    steps_per = 8  # 30 training structures, batches of 4

    def launch(out: Path, rec: Path, *extra: str, **env) -> subprocess.Popen:
        rec.mkdir(exist_ok=True)
        args = (
            ["--resume", str(out)]
            if "resume" in extra
            else ["--config", str(tmp_path / "cfg.yaml"), "--out", str(out)]
        )
        return subprocess.Popen([sys.executable, str(script), "pretrain", *args, "--no-progress"],
                                env=subprocess_env(REC_DIR=rec, **env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip

    ref = launch(tmp_path / "ref", tmp_path / "rec_ref")
    run, last = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.pt"
    proc = launch(run, tmp_path / "rec_a", TOY_SLEEP="0.04")
    killed_step = None
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            try:
                step = torch.load(last, weights_only=True)["global_step"] if last.is_file() else 0
            except Exception:  # being replaced right now: the rename is atomic, retry
                step = 0
            if step > steps_per and step % steps_per:
                proc.send_signal(signal.SIGKILL)
                killed_step = step
                break
            time.sleep(0.02)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed_step is not None, proc.stderr.read().decode()[-3000:]
    assert proc.returncode == -signal.SIGKILL
    ck = torch.load(last, weights_only=True)
    assert (
        ck["global_step"] % steps_per and ck["epoch"] == 1
    )  # a mid-epoch checkpoint survived the kill
    saved_at = ck["global_step"]

    resumed = launch(run, tmp_path / "rec_b", "resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()[-3000:]
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err.decode()[-3000:]

    before = [
        r for r in read_records(tmp_path / "rec_a")[0] if r[1] <= saved_at
    ]  # later batches were lost with the kill
    after = read_records(tmp_path / "rec_b")[0]
    assert after[0][1] == saved_at + 1  # the resumed run starts with the next step
    train = training_ids(40, 0.25)
    assert_exact_epochs({0: before + after}, train, epochs=3)
    assert_exact_epochs(read_records(tmp_path / "rec_ref"), train, epochs=3)
    assert [r[2] for r in before + after] == [
        r[2] for r in read_records(tmp_path / "rec_ref")[0]
    ]  # same batches, same order
    a = torch.load(last, weights_only=True)
    b = torch.load(tmp_path / "ref" / "checkpoints" / "last.pt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 3 * steps_per
    for part in ("backbone", "tasks"):
        flat_a, flat_b = _flat(a[part]), _flat(b[part])
        assert flat_a.keys() == flat_b.keys() and all(
            torch.equal(flat_a[k], flat_b[k]) for k in flat_a
        ), part


def _flat(tree, prefix=""):
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}/{k}"))
    return out
