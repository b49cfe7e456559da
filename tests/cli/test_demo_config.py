"""``atomssl demo`` reads its recipe and budget from the packaged config ``demo``; its flags and
``KEY=VALUE`` overrides go on top, checked by the demo schema."""

from __future__ import annotations

import pytest
import yaml

from atomssl.analysis._demo import load_demo_config
from atomssl.cli.main import main
from atomssl.utils._config import packaged_configs


def test_the_demo_runs_the_packaged_config():
    shipped = yaml.safe_load(packaged_configs()["demo"].read_text())
    cfg = load_demo_config()
    assert cfg["demo"] == shipped["demo"] and cfg["trainer"] == shipped["trainer"]
    assert cfg["task"]["readout"] == "set2set" and cfg["demo"]["workers"] == 2


@pytest.fixture
def captured(monkeypatch):
    seen = {}

    def fake(config, **kwargs):
        seen.update(config=config, **kwargs)
        return {}

    monkeypatch.setattr("atomssl.cli.demo.run_showcase", fake)
    return seen


def test_flags_and_overrides_set_the_demo_config(captured, tmp_path):
    argv = ["demo", "demo.map_limit=50", "--sizes", "20,40", "--seeds", "0,1", "--epochs", "3",
            "--workers", "1", "--out", str(tmp_path / "d"), "--no-progress", "optim.lr=0.01"]  # fmt: skip
    assert main(argv) == 0
    cfg = captured["config"]
    assert cfg["demo"]["sizes"] == [20, 40] and cfg["demo"]["seeds"] == [0, 1]
    assert cfg["demo"]["workers"] == 1 and cfg["demo"]["map_limit"] == 50
    assert cfg["trainer"]["max_epochs"] == 3 and cfg["optim"]["lr"] == 0.01
    assert captured["progress"] is False and captured["out"] == str(tmp_path / "d")


def test_a_bad_demo_key_is_one_clean_line(captured, capsys):
    assert main(["demo", "demo.size=[5]"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("atomssl demo: error: demo: unknown key demo.size (did you mean sizes?)")
    assert main(["demo", "--workers", "0"]) == 1
    assert "--workers must be >= 1" in capsys.readouterr().err
    assert not captured
