"""One configuration system: configs shipped in the package, found by name, checked by a schema per
workflow; ``atomssl config list|show``; the built wheel holds the configs and runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from atomssl.cli.main import main
from atomssl.errors import ConfigError
from atomssl.utils import load_config
from atomssl.utils._config import packaged_configs, packaged_configs_dir, resolve_config
from atomssl.utils._schema import WORKFLOWS, Schema, schema, validate, workflow_of

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = sorted(packaged_configs())


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------------ resolver
def test_configs_are_packaged_not_top_level():
    assert not (ROOT / "configs").exists()
    assert packaged_configs_dir() == ROOT / "src" / "atomssl" / "configs"
    assert {"pretrain_tiny", "finetune_dielectric", "gan", "motif", "simulate_lj_fcc"} <= set(
        PACKAGED
    )
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "configs/*.yaml" in package_data["package-data"]["atomssl"]


@pytest.mark.parametrize("spec", ["pretrain_tiny", "pretrain_tiny.yaml", "pretrain_tiny.yml"])
def test_a_packaged_config_resolves_by_name(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing of that name here
    assert resolve_config(spec) == packaged_configs_dir() / "pretrain_tiny.yaml"
    cfg = load_config(spec)
    assert cfg["run"]["name"] == "pretrain-tiny" and cfg["trainer"]["max_epochs"] == 2


def test_an_existing_file_wins_over_a_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("pretrain_tiny.yaml").write_text("seed: 7\n")
    assert resolve_config("pretrain_tiny.yaml") == Path("pretrain_tiny.yaml")
    assert load_config("pretrain_tiny.yaml") == {"seed": 7}
    other = tmp_path / "sub" / "mine.yaml"
    other.parent.mkdir()
    other.write_text("seed: 3\n")
    assert load_config(other) == {"seed": 3}


def test_an_unknown_name_lists_the_packaged_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as exc:
        resolve_config("pretrain_tiyn")
    msg = str(exc.value)
    assert msg.startswith("pretrain_tiyn: no such config file or packaged config; packaged: ")
    assert all(name in msg for name in PACKAGED) and "\n" not in msg


def test_a_missing_path_says_not_found_and_names_the_packaged_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^configs/pretrain_tiny\.yaml: config file not found; "
                       r"the packaged config of that name is --config pretrain_tiny$"):  # fmt: skip
        load_config("configs/pretrain_tiny.yaml")
    with pytest.raises(ConfigError, match=r"^elsewhere/mine\.yaml: config file not found$"):
        load_config("elsewhere/mine.yaml")
    with pytest.raises(ConfigError, match="a folder, not a config file"):
        load_config(tmp_path)


# ------------------------------------------------------------------------------------- schemas
@pytest.mark.parametrize("name", PACKAGED)
def test_every_packaged_config_validates_against_its_workflow(name):
    workflow = workflow_of(name)
    assert workflow in WORKFLOWS, f"{name}: no workflow (add its prefix to PACKAGED_PREFIXES)"
    raw = load_config(name, schema=workflow)
    assert set(raw) == set(load_config(name))  # (numbers like 1.0e13 read as strings: coerced)
    merged = load_config(name, defaults=schema(workflow).defaults, schema=workflow)
    assert set(raw) <= set(merged)


@pytest.mark.parametrize("workflow", list(WORKFLOWS))
def test_every_workflow_defaults_satisfy_their_own_schema(workflow):
    sch = schema(workflow)
    assert isinstance(sch, Schema) and sch.workflow == workflow
    assert sch.validate(sch.defaults) == sch.defaults


def _message(workflow: str, cfg: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        validate(workflow, cfg)
    return str(exc.value)


def test_unknown_key_names_the_dotted_key_and_the_closest_known_one():
    with pytest.raises(ConfigError) as exc:
        load_config("pretrain_tiny", overrides=["trainer.max_epoch=3"], schema="pretrain")
    msg = str(exc.value)
    assert msg.startswith("pretrain: unknown key trainer.max_epoch (did you mean max_epochs?); ")
    assert "allowed in trainer: " in msg and "any lightning Trainer argument" in msg
    assert _message("pretrain", {"optim": {"lrr": 1.0}}) == (
        "pretrain: unknown key optim.lrr (did you mean lr?); "
        "allowed in optim: lr, min_lr_ratio, scheduler, warmup_steps, weight_decay"
    )
    assert _message("gan", {"zzz": 1}).startswith(
        "gan: unknown key zzz; allowed: corruption, data, "
    )


def test_wrong_type_names_the_key_and_the_type():
    with pytest.raises(ConfigError) as exc:
        load_config("pretrain_tiny", overrides=["trainer.max_epochs=ten"], schema="pretrain")
    assert str(exc.value) == "pretrain: trainer.max_epochs='ten' is not an integer or null"
    assert _message("finetune", {"data": {"batch_size": True}}) == (
        "finetune: data.batch_size=True is not an integer"
    )
    assert _message("pretrain", {"optim": {"lr": "fast"}}) == (
        "pretrain: optim.lr='fast' is not a number"
    )
    assert _message("motif", {"train": 3}) == "motif: train=3 is not a mapping"
    assert _message("pretrain", {"data": {"limit": "abc"}}) == (
        "pretrain: data.limit='abc' is not an integer or null"
    )
    assert _message("simulate", {"n_cells": 2.5}) == "simulate: n_cells=2.5 is not an integer"


def test_value_outside_the_choices_names_the_allowed_values():
    with pytest.raises(ConfigError) as exc:
        load_config("finetune_dielectric", overrides=["mode=frozn"], schema="finetune")
    assert str(exc.value) == "finetune: mode='frozn' is not one of full, frozen, linear_probe"
    assert _message("evaluate", {"task": {"readout": "sum"}}) == (
        "evaluate: task.readout='sum' is not one of auto, set2set, graph, mean"
    )
    assert _message("gan", {"loss": {"kind": "wgan"}}) == (
        "gan: loss.kind='wgan' is not one of nonsaturating, wgan-gp"
    )
    assert _message("simulate", {"potential": {"kind": "morse"}}) == (
        "simulate: potential.kind='morse' is not one of lj, ipl, opp"
    )


def test_numbers_yaml_reads_as_strings_become_numbers():
    cfg = load_config("pretrain_tiny", overrides=["optim.lr=1e-3"], schema="pretrain")
    assert cfg["optim"]["lr"] == 1e-3 and isinstance(cfg["optim"]["lr"], float)
    assert load_config(None, {"run": {"name": "1e-3"}}, schema="pretrain")["run"]["name"] == "1e-3"


def test_open_sections_and_lightning_options_are_checked_loosely():
    cfg = validate(
        "pretrain",
        {"backbone": {"name": "toy", "width": 8}, "trainer": {"limit_train_batches": 2}},
    )
    assert cfg["backbone"]["width"] == 8 and cfg["trainer"]["limit_train_batches"] == 2
    assert validate("finetune", {"task": {"name": "spectrum", "wasserstein": 1.0}})
    assert validate("gan", {"generator": {"backbone": "megnet"}})
    # the known keys of an open section are still typed
    assert _message("pretrain", {"backbone": {"checkpoint": 3}}) == (
        "pretrain: backbone.checkpoint=3 is not a string or null"
    )
    assert _message("finetune", {"trainer": {"paitence": 3}}).startswith(
        "finetune: unknown key trainer.paitence (did you mean patience?); "
    )


def test_not_a_mapping_and_unknown_workflow_are_config_errors():
    with pytest.raises(ConfigError, match=r"^pretrain: a config must be a mapping, got a list$"):
        schema("pretrain").validate([1])
    with pytest.raises(
        ConfigError, match=r"^unknown workflow 'train'; one of pretrain, finetune, "
    ):
        validate("train", {})


def test_evaluate_takes_the_finetune_keys_over_its_own_defaults():
    sch = schema("evaluate")
    assert sch.defaults["task"]["transform"] == "log" and sch.defaults["mode"] == "full"
    with pytest.raises(ConfigError, match=r"^evaluate: unknown key moed \(did you mean mode\?\)"):
        validate("evaluate", {"moed": "full"})


# each verb that takes a config: its arguments (a packaged config by name) with an unknown key
VERBS = {
    "pretrain": (["pretrain", "--config", "pretrain_tiny", "trainer.max_epoch=1"], "max_epochs"),
    "finetune": (["finetune", "--config", "finetune_dielectric", "trainer.max_epoch=1"],
                 "max_epochs"),
    "evaluate": (["evaluate", "matbench_dielectric", "--config", "evaluate_dielectric",
                  "trainer.max_epoch=1"], "max_epochs"),
    "gan": (["gan", "--config", "gan", "train.step=5"], "steps"),
    "motif": (["motif", "train", "--config", "motif", "train.epoch=5"], "epochs"),
    "order": (["order", "pretrain", "step=5", "--config", "order_pretrain.yaml"], "steps"),
    "simulate": (["data", "simulate", "simulate_lj_fcc", "n_cell=3"], "n_cells"),
}  # fmt: skip


@pytest.mark.parametrize("workflow", list(VERBS))
def test_every_verb_resolves_names_and_checks_its_schema(workflow, tmp_path, capsys):
    argv, meant = VERBS[workflow]
    assert main(argv + ["--out", str(tmp_path / "out")]) == 1
    err = _one_line_error(capsys)
    key = next(a for a in argv if "=" in a).split("=")[0]
    assert f"{workflow}: unknown key {key} (did you mean {meant}?)" in err
    assert list(tmp_path.iterdir()) == []  # nothing written


# --------------------------------------------------------------------------------- list / show
def test_config_list_names_every_packaged_config_with_its_verb(capsys):
    assert main(["config", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines if line and not line.startswith("Use:")}
    assert sorted(rows) == PACKAGED
    assert (
        "atomssl pretrain" in rows["pretrain_tiny"] and "Seconds on a CPU" in rows["pretrain_tiny"]
    )
    assert "atomssl data simulate" in rows["simulate_lj_fcc"]
    assert "atomssl order pretrain" in rows["order_pretrain"]
    assert "atomssl pretrain" in rows["reconstruct_pretrain"]


def test_config_show_prints_the_config_merged_over_the_defaults(capsys):
    from atomssl.train._pretrain import DEFAULTS

    assert main(["config", "show", "pretrain_tiny"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# pretrain_tiny: Seconds on a CPU")
    shown = yaml.safe_load(out)
    assert shown["trainer"]["max_epochs"] == 2  # the file
    assert shown["optim"]["min_lr_ratio"] == DEFAULTS["optim"]["min_lr_ratio"]  # the defaults
    assert shown["tasks"] == load_config("pretrain_tiny")["tasks"]  # lists replaced, not merged
    assert main(["config", "show", "pretrain_tiny.yaml", "--raw"]) == 0
    assert capsys.readouterr().out == (packaged_configs_dir() / "pretrain_tiny.yaml").read_text()


def test_config_show_of_a_file_needs_its_workflow(tmp_path, capsys):
    mine = tmp_path / "mine.yaml"
    mine.write_text("optim: {lr: 1e-4}\n")
    assert main(["config", "show", str(mine)]) == 1
    assert "cannot tell its workflow from its name; give --workflow (pretrain, " in _one_line_error(
        capsys
    )
    assert main(["config", "show", str(mine), "--workflow", "finetune"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["optim"]["lr"] == 1e-4 and shown["mode"] == "full"
    mine.write_text("optim: {lrr: 1e-4}\n")
    assert main(["config", "show", str(mine), "--workflow", "finetune"]) == 1
    assert "finetune: unknown key optim.lrr (did you mean lr?)" in _one_line_error(capsys)


def test_config_show_of_an_unknown_name_is_one_line(capsys):
    assert main(["config", "show", "nope"]) == 1
    err = _one_line_error(capsys)
    assert err.startswith(
        "atomssl config show: error: nope: no such config file or packaged config"
    )
    assert "pretrain_tiny" in err


# ------------------------------------------------------------------------------- built wheel
@pytest.mark.slow
def test_the_installed_wheel_ships_and_runs_the_packaged_configs(tmp_path):
    """Build the wheel (no downloads), install it alone into a fresh venv that sees the
    dependencies of this one but not the source tree, and run packaged configs from an empty
    folder."""
    import shutil

    src = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "src", src / "src", ignore=ignore)  # builds leave the tree as it is
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                          "-w", str(dist), str(src)], check=True, timeout=600)  # fmt: skip
    (wheel,) = dist.glob("atomssl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"atomssl/configs/{n}.yaml" for n in PACKAGED} <= names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(pip + ["--python", str(python), "install", "--no-deps", "--no-index", "-q",
                          str(wheel)], check=True, timeout=600)  # fmt: skip
    # the dependencies: this venv's site-packages as a plain path (its .pth files, among them the
    # editable install's pointer to src/, are not processed); added after the wheel is installed
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    found = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True)
    site = Path(found.stdout.strip())
    (site / "main_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}

    def run(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run(list(args), cwd=work, env=env, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        return out

    where = run(str(python), "-c", "import atomssl; print(atomssl.__file__)").stdout.strip()
    assert Path(where).is_relative_to(site), where
    path = run(str(python), "-c", "import sys; print('\\n'.join(sys.path))").stdout.splitlines()
    assert str(ROOT / "src") not in path and sysconfig.get_paths()["purelib"] in path
    atomssl = str(venv / "bin" / "atomssl")
    listed = run(atomssl, "config", "list").stdout
    assert all(name in listed for name in PACKAGED)
    shown = yaml.safe_load(run(atomssl, "config", "show", "pretrain_tiny").stdout)
    assert shown["backbone"]["name"] == "megnet" and shown["optim"]["scheduler"] == "cosine"
    run(atomssl, "pretrain", "--config", "pretrain_tiny", "--epochs", "1", "--out", "run",
        "--no-progress", "data.sources=[{name: synthetic, n: 16}]")  # fmt: skip
    assert (work / "run" / "checkpoints" / "best.pt").is_file()
    assert (
        yaml.safe_load((work / "run" / "config.yaml").read_text())["run"]["name"] == "pretrain-tiny"
    )
    assert sorted(p.name for p in work.iterdir()) == ["run"]
