"""The GAN on the training engine: determinism and exact resume from a mid-epoch checkpoint, the
trainer options it replaces. SIGKILL then ``--resume``, 2-process DDP on CPU and a non-finite loss
are checked for every workflow on the engine, the GAN included, in
tests/train/test_engine_workflows.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atomssl.errors import ConfigError
from atomssl.generate import gan

BACKBONE = {"name": "equiformer", "size": "tiny", "num_layers": 1}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


def _config(steps: int = 10, **trainer) -> dict:
    # 8 structures in batches of 2: 4 steps an epoch
    return {
        "seed": 3,
        "data": {"sources": [{"name": "synthetic", "n": 8}], "batch_size": 2},
        "generator": {"backbone": BACKBONE},
        "discriminator": {"classifier_steps": 2},
        "optim": {"d_every": 2, "lr_g": 1.0e-3, "lr_d": 1.0e-3},
        "train": {"steps": steps, "log_every": 3},
        "trainer": {"accelerator": "cpu", **trainer},
    }


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
