"""Checkpoints: round trip, weights_only loading, refusal of pickled objects, cross-task loading."""

import pytest
import torch
import toy_backbone  # noqa: F401  (registers "toy"; tests/train is on sys.path under pytest)
from toy_backbone import tiny_config

import atomssl
from atomssl.errors import CheckpointError
from atomssl.graph import collate, to_graph
from atomssl.representation import build_backbone
from atomssl.task import build_task
from atomssl.train import (
    PretrainModule,
    load_backbone,
    load_checkpoint,
    pretrain,
    save_checkpoint,
    synthetic_crystals,
)


def _batch():
    return collate([to_graph(s, cutoff=4.0) for s in synthetic_crystals(3, seed=5)])


def test_round_trip_is_exact_and_weights_only(tmp_path):
    torch.manual_seed(0)
    bb = build_backbone({"name": "toy", "width": 12, "vector_dim": 3})
    task = build_task("mask", bb)
    path = save_checkpoint(
        tmp_path / "ck.pt", bb, config={"seed": 1}, tasks={"mask": task}, metrics={"val/loss": 1.5}
    )
    raw = torch.load(path, weights_only=True)  # plain tensors and data only
    assert raw["format"] == "atomssl-checkpoint" and raw["version"] == 1
    assert raw["backbone_config"] == {
        "name": "toy",
        "cutoff": 4.0,
        "width": 12,
        "n_rbf": 16,
        "vector_dim": 3,
        "layers": 2,
    }
    assert set(raw["tasks"]["mask"]) >= {"head.counts"}
    loaded = atomssl.load_backbone(path)
    assert not loaded.training
    batch = _batch()
    bb.eval()
    with torch.no_grad():
        a, b = bb(batch), loaded(batch)
    for name in ("node", "graph", "vector", "edge"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not list(tmp_path.glob(".*.tmp"))


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_objects_are_refused_and_never_run(tmp_path):
    bb = build_backbone({"name": "toy", "width": 8})
    marker = tmp_path / "pwned"
    evil = {
        "format": "atomssl-checkpoint",
        "version": 1,
        "backbone_config": {"name": "toy"},
        "backbone": bb.state_dict(),
        "x": _Payload(str(marker)),
    }
    path = tmp_path / "evil.pt"
    torch.save(evil, path)
    with pytest.raises(CheckpointError, match="refused: the file holds pickled Python objects"):
        load_backbone(path)
    assert not marker.exists()
    # sanity: the crafted file really would execute code under a plain pickle load
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_bad_files_raise_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    bb = build_backbone({"name": "toy", "width": 8})
    good = save_checkpoint(tmp_path / "good.pt", bb)
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"state_dict": bb.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an atomssl checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save(
        {"format": "atomssl-checkpoint", "version": 99, "backbone": {}, "backbone_config": {}},
        tmp_path / "v99.pt",
    )
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "v99.pt")
    ck = torch.load(good, weights_only=True)
    ck["backbone_config"]["width"] = 10
    torch.save(ck, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_backbone(tmp_path / "mismatch.pt")


def test_backbone_pretrained_by_one_task_loads_into_another(tmp_path):
    cfg = tiny_config(tasks=[{"name": "mask"}], trainer__max_epochs=1)
    pretrain(cfg, run_dir=tmp_path / "run", progress=False)
    ck_path = tmp_path / "run" / "checkpoints" / "last.pt"
    ck = torch.load(ck_path, weights_only=True)
    assert set(ck["tasks"]) == {"mask"}
    # a different task (edge denoising) starting from the mask-pretrained backbone
    cfg2 = tiny_config(tasks=[{"name": "edge_denoise"}])
    cfg2["backbone"] = {"name": "toy", "checkpoint": str(ck_path)}
    module = PretrainModule(cfg2)
    for k, v in module.backbone.state_dict().items():
        assert torch.equal(v, ck["backbone"][k]), k
    assert module.backbone.config["width"] == 16  # architecture comes from the checkpoint
    res = module.tasks["edge_denoise"].step(_batch(), module.backbone)
    res["loss"].backward()
    assert torch.isfinite(res["loss"])
    # and the stand-alone loader gives the same weights
    bb = load_backbone(ck_path)
    assert all(torch.equal(v, ck["backbone"][k]) for k, v in bb.state_dict().items())


def test_lightning_resume_state_is_weights_only(tmp_path):
    pretrain(tiny_config(trainer__max_epochs=1), run_dir=tmp_path, progress=False)
    for name in ("best.pt", "last.pt"):
        ck = torch.load(tmp_path / "checkpoints" / name, weights_only=True)
        assert {"optimizer_states", "loops", "state_dict"} <= set(ck["trainer"])
        assert ck["epoch"] == 0 and ck["global_step"] > 0


def _not_checkpoints(folder, good):
    """Files that are not torch checkpoints (name -> what the reason must say)."""
    import numpy as np

    data = good.read_bytes()
    files = {
        "text.pt": (b"hello, I am a text file renamed .pt\n", "a text file"),
        "empty.pt": (b"", "empty file"),
        "binary.pt": (bytes(range(256)) * 8, "binary data"),
        "cut.pt": (data[: len(data) // 2], "truncated or corrupt zip archive"),
        "legacy-garbage.pt": (
            data[:0] + b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19" + b"garbage" * 20,
            "unreadable",
        ),
    }
    out = {}
    for name, (content, reason) in files.items():
        (folder / name).write_bytes(content)
        out[folder / name] = reason
    np.savez(folder / "arrays.npz", x=np.ones(3))
    (folder / "arrays.npz").rename(folder / "arrays.pt")
    out[folder / "arrays.pt"] = "without data.pkl"
    (folder / "dir.pt").mkdir()
    out[folder / "dir.pt"] = "a folder"
    return out


def test_every_checkpoint_loader_refuses_what_is_not_a_torch_checkpoint_in_one_line(tmp_path):
    """Issue 23: a text file renamed .pt (and its kin) gave a KeyError traceback. Every loader goes
    through one safe loader: ``PATH: not a torch checkpoint (REASON)``, one line, nothing unpickled."""
    from atomssl.generate import Generator
    from atomssl.generate._discriminator import Discriminator
    from atomssl.motif import load_vae
    from atomssl.motif._workflow import _checkpoint_config
    from atomssl.train import AtomicCheckpointIO
    from atomssl.utils._torchfile import safe_torch_load

    good = save_checkpoint(tmp_path / "good.pt", build_backbone({"name": "toy", "width": 8}))
    loaders = {
        "safe_torch_load": safe_torch_load,
        "load_checkpoint": load_checkpoint,
        "load_backbone": load_backbone,
        "Generator.from_checkpoint": Generator.from_checkpoint,
        "Discriminator.from_checkpoint": Discriminator.from_checkpoint,
        "load_vae": load_vae,
        "motif config": lambda p: _checkpoint_config(p, None),
        "lightning resume": AtomicCheckpointIO().load_checkpoint,
    }
    for path, reason in _not_checkpoints(tmp_path, good).items():
        for name, load in loaders.items():
            with pytest.raises(CheckpointError) as info:
                load(path)
            msg = str(info.value)
            assert msg.startswith(f"{path}: not a torch checkpoint ("), (name, msg)
            assert reason in msg and "\n" not in msg, (name, msg)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        safe_torch_load(tmp_path / "missing.pt")
    # a torch file of the wrong kind says what it is
    torch.save({"kind": "atomssl.motif.GramVAE", "version": 1}, tmp_path / "vae-like.pt")
    with pytest.raises(
        CheckpointError, match="not an atomssl checkpoint .*'atomssl.motif.GramVAE' checkpoint"
    ):
        load_checkpoint(tmp_path / "vae-like.pt")
    with pytest.raises(
        CheckpointError, match="not a motif VAE checkpoint .an atomssl backbone checkpoint"
    ):
        load_vae(good)
    # torch's legacy (non-zip) format still loads
    torch.save({"x": torch.ones(2)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert torch.equal(safe_torch_load(tmp_path / "legacy.pt")["x"], torch.ones(2))
