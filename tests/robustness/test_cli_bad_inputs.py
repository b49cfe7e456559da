"""Every verb on every bad input: ONE line on stderr naming the offending path, a non-zero exit,
no traceback, nothing written (issue 23, item 7).

Bad inputs: a missing file, an empty folder, a text file renamed ``.pt`` given as checkpoint,
a text file renamed ``.cif``, an empty file, binary garbage, an ``--out`` under a missing folder
and a device torch does not have. Each verb gets each bad input it can take (``CASES``).

The cases run in-process (``atomssl.cli.main.main``, what the console script calls: an
interpreter start per case would cost seconds); the subprocess tests in ``test_cli_errors.py``
cover the real console command. What a real run would print besides the error line is checked
here too: no warning raised and no log record (both reach a user's terminal), and the folder the
case runs in holds exactly the same files afterwards.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import ase.io
import pytest
from ase.build import bulk

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "atomssl" / "configs"

#: structure inputs -> the file (or folder) the error must name
STRUCTURES = {
    "missing": "missing.cif",
    "empty-folder": "emptydir",
    "text-as-cif": "text.cif",
    "empty-file": "empty.cif",
    "binary-garbage": "garbage.cif",
}
BAD_CHECKPOINT = "text.pt"  # a text file renamed .pt
MISSING_DIR = "nodir"  # --out nodir/...: a folder that does not exist
BAD_DEVICE = "cuda:99"  # no machine has it (and a machine without CUDA has no cuda at all)


def _cases() -> list:
    """(verb, kind of bad input, argv, what the error line must name)."""
    cases = []

    def add(verb, kind, argv, needle, marks=()):
        cases.append(pytest.param(argv, needle, id=f"{verb}-{kind}", marks=marks))

    def structures(verb, make, known=lambda kind: ()):
        for kind, path in STRUCTURES.items():
            add(verb, kind, make(path), path, known(kind))

    # data info / import / graph
    structures("data-info", lambda p: ["data", "info", p])
    structures("data-import", lambda p: ["data", "import", p, "--out", "store.db"])
    add(
        "data-import",
        "out-missing-folder",
        ["data", "import", "good.cif", "--out", f"{MISSING_DIR}/s.db"],
        MISSING_DIR,
    )
    add(
        "data-import",
        "all-bad-skipped",
        ["data", "import", "text.cif", "garbage.cif", "--skip-bad", "--out", "store.db"],
        "text.cif",
    )
    structures("data-graph", lambda p: ["data", "graph", p, "--cutoff", "4", "--out", "g.npz"])
    add(
        "data-graph",
        "out-missing-folder",
        ["data", "graph", "good.cif", "--cutoff", "4", "--out", f"{MISSING_DIR}/g.npz"],
        MISSING_DIR,
    )
    add(
        "data-simulate",
        "out-missing-folder",
        [
            "data",
            "simulate",
            str(CONFIGS / "simulate_lj_fcc.yaml"),
            "--out",
            f"{MISSING_DIR}/t.extxyz",
        ],
        MISSING_DIR,
    )
    # embed
    structures("embed", lambda p: ["embed", p, "--checkpoint", "model.pt", "--out", "e.npz"])
    add(
        "embed",
        "text-as-pt",
        ["embed", "good.cif", "--checkpoint", BAD_CHECKPOINT, "--out", "e.npz"],
        BAD_CHECKPOINT,
    )
    add(
        "embed",
        "out-missing-folder",
        ["embed", "good.cif", "--checkpoint", "model.pt", "--out", f"{MISSING_DIR}/e.npz"],
        MISSING_DIR,
    )
    add(
        "embed",
        "bad-device",
        ["embed", "good.cif", "--checkpoint", "model.pt", "--device", BAD_DEVICE, "--out", "e.npz"],
        BAD_DEVICE,
    )
    add(
        "embed",
        "all-bad-skipped",
        ["embed", "text.cif", "--skip-bad", "--checkpoint", "model.pt", "--out", "e.npz"],
        "text.cif",
    )
    # finetune / pretrain: structures through data.sources, the checkpoint through backbone.checkpoint
    ft = ["finetune", "--config", str(CONFIGS / "finetune_dielectric.yaml"), "--no-progress"]
    structures("finetune", lambda p: [*ft, f"data.sources=[{p}]", "--out", "ft"])
    add(
        "finetune",
        "text-as-pt",
        [*ft, f"backbone.checkpoint={BAD_CHECKPOINT}", "--out", "ft"],
        BAD_CHECKPOINT,
    )
    add(
        "finetune",
        "text-as-pt-shortcut",
        [*ft, "--checkpoint", BAD_CHECKPOINT, "--out", "ft"],
        BAD_CHECKPOINT,
    )
    add("finetune", "out-missing-folder", [*ft, "--out", f"{MISSING_DIR}/ft"], MISSING_DIR)
    pt = ["pretrain", "--config", str(CONFIGS / "pretrain_tiny.yaml"), "--no-progress"]
    structures("pretrain", lambda p: [*pt, f"data.sources=[{p}]", "--out", "pt"])
    add(
        "pretrain",
        "text-as-pt",
        [*pt, f"backbone.checkpoint={BAD_CHECKPOINT}", "--out", "pt"],
        BAD_CHECKPOINT,
    )
    add("pretrain", "out-missing-folder", [*pt, "--out", f"{MISSING_DIR}/pt"], MISSING_DIR)
    # order: a trajectory, its checkpoint, its output folder, transfer's device
    structures("order", lambda p: ["order", p, "--checkpoint", "model.pt", "--out", "od", "-q"])
    add(
        "order",
        "text-as-pt",
        ["order", "good.cif", "--checkpoint", BAD_CHECKPOINT, "--out", "od"],
        BAD_CHECKPOINT,
    )
    add(
        "order",
        "out-missing-folder",
        ["order", "good.cif", "--checkpoint", "model.pt", "--out", f"{MISSING_DIR}/od"],
        MISSING_DIR,
    )
    add(
        "order-liquid",
        "text-as-cif",
        ["order", "liquid", "good.cif", "text.cif", "--checkpoint", "model.pt", "--out", "od"],
        "text.cif",
    )
    add(
        "order-transfer",
        "text-as-pt",
        ["order", "transfer", "--checkpoint", BAD_CHECKPOINT, "--out", "od"],
        BAD_CHECKPOINT,
    )
    add(
        "order-transfer",
        "bad-device",
        ["order", "transfer", "--checkpoint", "model.pt", "--device", BAD_DEVICE, "--out", "od"],
        BAD_DEVICE,
    )
    add(
        "order-pretrain",
        "out-missing-folder",
        ["order", "pretrain", "--out", f"{MISSING_DIR}/op"],
        MISSING_DIR,
    )
    add("order-pretrain", "out-names-a-file", ["order", "pretrain", "--out", "b.ckpt"], "b.ckpt")
    # reconstruct / gan
    structures(
        "reconstruct", lambda p: ["reconstruct", p, "--checkpoint", "model.pt", "--out", "rc"]
    )
    add(
        "reconstruct",
        "text-as-pt",
        ["reconstruct", "good.cif", "--checkpoint", BAD_CHECKPOINT, "--out", "rc"],
        BAD_CHECKPOINT,
    )
    add(
        "reconstruct",
        "out-missing-folder",
        ["reconstruct", "good.cif", "--checkpoint", "model.pt", "--out", f"{MISSING_DIR}/rc"],
        MISSING_DIR,
    )
    gan = ["gan", "--config", str(CONFIGS / "gan.yaml"), "--no-progress"]
    add(
        "gan",
        "text-as-pt",
        [*gan, f"generator.checkpoint={BAD_CHECKPOINT}", "--out", "gn"],
        BAD_CHECKPOINT,
    )
    add("gan", "out-missing-folder", [*gan, "--out", f"{MISSING_DIR}/gn"], MISSING_DIR)
    # evaluate
    add("evaluate-matbench", "text-as-pt",
        ["evaluate", "matbench_dielectric", "--config", str(CONFIGS / "evaluate_dielectric.yaml"), "--checkpoint", BAD_CHECKPOINT,
         "--out", "ev"], BAD_CHECKPOINT)  # fmt: skip
    add("evaluate-curves", "text-as-pt",
        ["evaluate", "curves", "--config", str(CONFIGS / "evaluate_curves.yaml"), "--checkpoint", BAD_CHECKPOINT, "--out", "ev"],
        BAD_CHECKPOINT)  # fmt: skip
    add("evaluate-curves", "out-missing-folder",
        ["evaluate", "curves", "--config", str(CONFIGS / "evaluate_curves.yaml"), "--checkpoint", "model.pt", "--out",
         f"{MISSING_DIR}/ev"], MISSING_DIR)  # fmt: skip
    structures(
        "evaluate-map",
        lambda p: [
            "evaluate",
            "embedding-map",
            "--checkpoint",
            "model.pt",
            "--source",
            p,
            "--out",
            "map.png",
        ],
    )
    add(
        "evaluate-map",
        "text-as-pt",
        ["evaluate", "embedding-map", "--checkpoint", BAD_CHECKPOINT, "--out", "map.png"],
        BAD_CHECKPOINT,
    )
    add(
        "evaluate-map",
        "out-missing-folder",
        [
            "evaluate",
            "embedding-map",
            "--checkpoint",
            "model.pt",
            "--out",
            f"{MISSING_DIR}/map.png",
        ],
        MISSING_DIR,
    )
    # motif: checkpoints of every action taking one, motif and cell files, output folders
    for action in ("sample", "interpolate", "inpaint", "evaluate"):
        add(
            f"motif-{action}",
            "text-as-pt",
            ["motif", action, "--checkpoint", BAD_CHECKPOINT, "--out", "mo"],
            BAD_CHECKPOINT,
        )
    structures(
        "motif-inpaint",
        lambda p: ["motif", "inpaint", "--checkpoint", "vae.pt", "--input", p, "--out", "mo"],
    )
    structures("motif-train", lambda p: ["motif", "train", "--cells", p, "--out", "mo"])
    add(
        "motif-train",
        "out-missing-folder",
        ["motif", "train", "--out", f"{MISSING_DIR}/mo"],
        MISSING_DIR,
    )
    add("demo", "out-missing-folder", ["demo", "--out", f"{MISSING_DIR}/d"], MISSING_DIR)
    return cases


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder with one good structure, good checkpoints and every bad input."""
    import torch

    from atomssl.motif._vae import GramVAE, VAEConfig, save_vae
    from atomssl.representation import build_backbone
    from atomssl.train import save_checkpoint

    d = tmp_path_factory.mktemp("bad-inputs")
    ase.io.write(d / "good.cif", bulk("NaCl", "rocksalt", a=5.64, cubic=True))
    torch.manual_seed(0)
    tiny = {"name": "gaa", "k": 12, "width": 8, "n_blocks": 1, "dropout": 0.0}
    save_checkpoint(d / "model.pt", build_backbone(tiny))
    save_vae(GramVAE(VAEConfig()), d / "vae.pt")
    text = "This is a text file, not what its name says.\nSecond line.\n"
    (d / "text.pt").write_text(text)
    (d / "text.cif").write_text(text)
    (d / "empty.cif").write_bytes(b"")
    (d / "garbage.cif").write_bytes(bytes(range(256)) * 4)
    (d / "emptydir").mkdir()
    return d


def _listing(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


@pytest.mark.parametrize("argv, needle", _cases())
def test_bad_input_is_one_clean_line(workspace, argv, needle, capsys, caplog, monkeypatch):
    from atomssl.cli.main import main

    monkeypatch.chdir(workspace)
    before = _listing(workspace)
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
    out = capsys.readouterr()
    assert code not in (0, None), (argv, out.out, out.err)
    assert "Traceback" not in out.err + out.out
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert needle in lines[0] and "error" in lines[0], lines[0]
    shown = [
        w
        for w in caught
        if not issubclass(
            w.category, (DeprecationWarning, PendingDeprecationWarning, ImportWarning)
        )
    ]
    assert not shown, [f"{w.category.__name__}: {w.message}" for w in shown]
    assert not [r for r in caplog.records if r.levelno >= logging.INFO], [
        r.getMessage() for r in caplog.records
    ]
    assert _listing(workspace) == before, "a failed command must write nothing"
    assert not os.path.exists(workspace / MISSING_DIR)


def test_an_import_that_writes_nothing_leaves_the_store_it_would_replace_as_it_was(
    workspace, tmp_path, capsys
):
    """``data import --skip-bad`` of nothing but bad files exits 1 and does not replace an existing
    store by an empty one (nor leave anything beside it)."""
    from atomssl.cli.main import main

    store = tmp_path / "s.db"
    assert main(["data", "import", str(workspace / "good.cif"), "--out", str(store)]) == 0
    store.chmod(0o640)
    before = store.read_bytes()
    capsys.readouterr()
    for extra in ([], ["--append"]):
        bad = [str(workspace / "text.cif"), str(workspace / "garbage.cif")]
        assert main(["data", "import", *bad, "--skip-bad", *extra, "--out", str(store)]) == 1
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert (
            len(err) == 1
            and "every entry was bad (2 skipped" in err[0]
            and "is unchanged" in err[0]
        ), err
        assert store.read_bytes() == before and (store.stat().st_mode & 0o777) == 0o640
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.db"]


def test_output_rules(tmp_path):
    """Output files only into an existing folder; a named run folder only inside an existing one;
    nothing is created by the checks themselves."""
    from atomssl.cli._paths import check_device, output_file, run_folder
    from atomssl.errors import ConfigError

    (tmp_path / "file").write_text("x")
    assert output_file(tmp_path / "e.npz") == tmp_path / "e.npz"
    assert output_file("e.npz") == Path("e.npz")  # the current folder
    for bad, reason in [(tmp_path / "no" / "e.npz", f"folder {tmp_path / 'no'} does not exist"),
                        (tmp_path / "file" / "e.npz", f"folder {tmp_path / 'file'} is not a folder"),
                        (tmp_path, "is a folder")]:  # fmt: skip
        with pytest.raises(ConfigError, match=reason):
            output_file(bad)
    assert run_folder(None) is None
    assert run_folder(tmp_path) == tmp_path and run_folder(tmp_path / "new") == tmp_path / "new"
    for bad, reason in [
        (tmp_path / "no" / "run", f"folder {tmp_path / 'no'} does not exist"),
        (tmp_path / "file", "is a file"),
    ]:
        with pytest.raises(ConfigError, match=reason):
            run_folder(bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    assert check_device("cpu") == "cpu"
    for bad in ("cuda:99", "nonsense", "mps:7"):
        with pytest.raises(ConfigError, match=f"--device '{bad}'.*available: cpu"):
            check_device(bad)
