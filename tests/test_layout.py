"""Package layout: imports only point down the pipeline, no package cycles, no oversized files.

The pipeline order (lower rank first) is the one the README's data-flow diagram shows::

    errors, _version -> utils -> data -> graph -> representation -> task -> train
        -> evaluate, analysis, simulate -> order, motif, generate -> cli, testing

A module may import from its own package and from packages of a lower rank only. Packages of
the same rank (e.g. ``order`` and ``motif``) must not import each other at all. ``utils`` sits
just above ``errors`` (its config loader raises typed errors). ``testing`` (the reusable
symmetry checker) is a leaf for test code: nothing in the library imports it. The top-level
``atomssl/__init__.py`` is the facade above everything: read the version from ``_version``.

Every ``import`` / ``from ... import`` statement counts, wherever it is (module level, inside
functions, under ``TYPE_CHECKING``), relative or absolute, as do
``importlib.import_module("atomssl....")`` calls with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "atomssl"
MAX_LINES = 400

ROOT = "atomssl"  # the top-level package's own __init__.py
RANK = {
    "_version": 0,
    "errors": 0,
    "utils": 1,
    "data": 2,
    "graph": 3,
    "representation": 4,
    "task": 5,
    "train": 6,
    "evaluate": 7,
    "analysis": 7,
    "simulate": 7,
    "order": 8,
    "motif": 8,
    "generate": 8,
    "cli": 9,
    "testing": 9,
    ROOT: 10,
}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module under src/atomssl."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _package(dotted: str) -> str:
    """The top-level subpackage (or module) of ``atomssl`` that ``dotted`` belongs to."""
    parts = dotted.split(".")
    if parts[0] != ROOT:
        raise ValueError(dotted)
    if len(parts) == 1:
        return ROOT
    return parts[1]


def _is_module(dotted: str) -> bool:
    return dotted in MODULES or (SRC / Path(*dotted.split("."))).is_dir()


def _imported(module: str, path: Path, node: ast.AST) -> list[str]:
    """Dotted names of the atomssl modules (or the package) that one import node refers to."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == ROOT]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            # a package's __init__ is the package itself: `from . import x` stays inside it
            here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            base_parts = here[: len(here) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if base.split(".")[0] != ROOT:
            return []
        # `from atomssl import data` imports the subpackage, not the facade
        return [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base for a in node.names]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and node.args[0].value.split(".")[0] == ROOT
    ):
        return [node.args[0].value]
    return []


def _edges() -> list[tuple[str, str, str, int]]:
    """``(from_package, to_package, file, line)`` for every import across packages."""
    out = []
    for module, path in MODULES.items():
        source = _package(module)
        tree = ast.parse(path.read_text(), filename=str(path))
        rel = str(path.relative_to(SRC.parent))
        for node in ast.walk(tree):
            for target in _imported(module, path, node):
                dest = _package(target)
                if dest != source:
                    out.append((source, dest, rel, node.lineno))
    return out


EDGES = _edges()


def test_every_package_has_a_rank():
    packages = {_package(m) for m in MODULES}
    unknown = sorted(packages - set(RANK))
    assert not unknown, f"place these packages in RANK (tests/test_layout.py): {unknown}"


def test_the_checker_sees_imports_of_every_kind():
    """Relative, absolute, function-level and `from atomssl import pkg` imports are all found."""
    kinds = {
        ("graph", "data", "relative"): False,
        ("cli", "data", "function-level"): False,
    }
    for source, dest, rel, line in EDGES:
        node_text = (SRC.parent / rel).read_text().splitlines()[line - 1]
        if (source, dest) == ("graph", "data") and "from .." in node_text:
            kinds[("graph", "data", "relative")] = True
        if (source, dest) == ("cli", "data") and node_text.startswith((" ", "\t")):
            kinds[("cli", "data", "function-level")] = True
    assert all(kinds.values()), kinds
    # spot-check the resolution of the trickier forms
    fake = PACKAGE / "graph" / "_clouds.py"
    cases = {
        "from .. import data": ["atomssl.data"],
        "from ..data import Structure": ["atomssl.data"],
        "from ..data._structure import Structure": ["atomssl.data._structure"],
        "from . import _batch": ["atomssl.graph._batch"],
        "from atomssl import Structure": ["atomssl"],
        "import atomssl.train._engine": ["atomssl.train._engine"],
        "import numpy": [],
        "importlib.import_module('atomssl.cli.data')": ["atomssl.cli.data"],
    }
    for text, expected in cases.items():
        node = ast.parse(text).body[0]
        node = node.value if isinstance(node, ast.Expr) else node
        assert _imported("atomssl.graph._clouds", fake, node) == expected, text


def test_imports_point_down_the_pipeline():
    bad = [
        f"{rel}:{line}: {source} (rank {RANK[source]}) imports {dest} (rank {RANK[dest]})"
        for source, dest, rel, line in EDGES
        if source in RANK and dest in RANK and RANK[dest] >= RANK[source]
    ]
    assert not bad, f"{len(bad)} import(s) up or across the pipeline:\n" + "\n".join(bad)


def test_no_two_packages_import_each_other():
    pairs: dict[tuple[str, str], list[str]] = {}
    for source, dest, rel, line in EDGES:
        pairs.setdefault((source, dest), []).append(f"{rel}:{line}")
    bad = []
    for (a, b), where in sorted(pairs.items()):
        if a < b and (b, a) in pairs:
            bad.append(f"{a} <-> {b}: {a}->{b} at {where}; {b}->{a} at {pairs[(b, a)]}")
    assert not bad, f"{len(bad)} package cycle(s):\n" + "\n".join(bad)


def test_no_source_file_is_too_long():
    bad = []
    for path in MODULES.values():
        n = len(path.read_text().splitlines())
        if n > MAX_LINES:
            bad.append(f"{path.relative_to(SRC.parent)}: {n} lines")
    assert not bad, f"{len(bad)} file(s) over {MAX_LINES} lines:\n" + "\n".join(bad)
