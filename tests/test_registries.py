"""Registries import their modules by name: a broken module fails loudly, one error class per domain."""

import importlib
import importlib.util
import sys

import pytest


@pytest.mark.parametrize(
    "package, module", [("atomssl.representation", "gaa"), ("atomssl.task", "cloud")]
)
def test_broken_registry_module_is_not_silently_skipped(monkeypatch, package, module):
    pkg = importlib.import_module(package)
    monkeypatch.setitem(sys.modules, f"{package}.{module}", None)  # import of it now fails
    monkeypatch.delattr(pkg, module)
    with pytest.raises(ImportError):
        importlib.reload(pkg)
    monkeypatch.undo()
    importlib.reload(pkg)


def test_every_cli_verb_has_its_module():
    from atomssl.cli.main import VERB_MODULES

    missing = [v for v in VERB_MODULES if importlib.util.find_spec(f"atomssl.cli.{v}") is None]
    assert not missing


def test_one_simulation_error():
    import atomssl.motif
    import atomssl.simulate

    assert atomssl.motif.SimulationError is atomssl.simulate.SimulationError
