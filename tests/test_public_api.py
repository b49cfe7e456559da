"""Every public name of atomssl resolves and every public class and function has a docstring.

The public names are the ``__all__`` of the top-level package and of every subpackage, plus the
public classes and functions of the modules without ``__all__`` (``atomssl.errors``,
``atomssl.testing``). ``atomssl.cli`` is left out: its interface is the command line, documented
by ``--help`` and docs/cli.md.

Constants (plain values such as ``MATBENCH_DIELECTRIC_COUNT`` or the registries) are skipped: a
value's ``__doc__`` is its type's, so there is nothing of their own to check; they are
documented by ``#:`` comments and the guides instead. A class must have a docstring of its
own (not one inherited from e.g. ``torch.nn.Module``, nor the signature a dataclass or named
tuple makes up when it has none).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import atomssl

NOT_CHECKED = {"atomssl.cli"}
SUBPACKAGES = sorted(
    f"atomssl.{m.name}"
    for m in pkgutil.iter_modules(atomssl.__path__)
    if m.ispkg and f"atomssl.{m.name}" not in NOT_CHECKED
)
MODULES_WITHOUT_ALL = ("atomssl.errors", "atomssl.testing")


def _own_doc(obj) -> str:
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    doc = (doc or "").strip()
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):
        return ""  # made up by @dataclass / NamedTuple from the signature
    return doc


def _public_names(module_name: str) -> dict[str, object]:
    module = importlib.import_module(module_name)
    if module_name in MODULES_WITHOUT_ALL:
        return {
            name: obj
            for name, obj in vars(module).items()
            if not name.startswith("_")
            and (inspect.isclass(obj) or inspect.isfunction(obj))
            and obj.__module__ == module_name
        }
    assert hasattr(module, "__all__"), f"{module_name} has no __all__"
    names = list(module.__all__)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"{module_name}.__all__ lists {duplicates} more than once"
    out = {}
    for name in names:
        assert hasattr(module, name), f"{module_name}.__all__ names {name!r}, which is missing"
        out[name] = getattr(module, name)
    return out


def test_every_subpackage_is_checked():
    # a new subpackage joins the check automatically; this guards the discovery itself
    assert {"atomssl.data", "atomssl.graph", "atomssl.train", "atomssl.generate"} <= set(
        SUBPACKAGES
    )


@pytest.mark.parametrize("module_name", ["atomssl", *SUBPACKAGES, *MODULES_WITHOUT_ALL])
def test_public_classes_and_functions_have_docstrings(module_name):
    missing = []
    for name, obj in _public_names(module_name).items():
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue  # a constant: see the module docstring
        if not _own_doc(obj):
            kind = "class" if inspect.isclass(obj) else "function"
            missing.append(f"{module_name}.{name} ({kind}, defined in {obj.__module__})")
    assert not missing, f"{len(missing)} public name(s) without a docstring:\n" + "\n".join(missing)


def test_the_check_sees_inherited_and_made_up_docstrings():
    from dataclasses import dataclass

    from torch import nn

    class Bare(nn.Module):
        pass

    @dataclass
    class Record:
        x: int = 0

    def bare():
        pass

    assert _own_doc(Bare) == "" and inspect.getdoc(Bare)  # nn.Module's docstring is inherited
    assert _own_doc(Record) == "" and Record.__doc__  # dataclass made "Record(x: int = 0)" up
    assert _own_doc(bare) == ""
    assert _own_doc(atomssl.load_backbone)
