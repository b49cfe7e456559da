"""The README's Python tour runs as written, from a fresh folder (as a user would run it).

Every ```python block of README.md is executed in order in one namespace, with the working
directory set to an empty temporary folder that holds only the ``POSCAR`` the tour reads (the
reader's own file in the README). So the tour may not rely on the repository's layout (e.g. a
``src/atomssl/...`` path) and must keep to small settings (it takes ~15 s of CPU).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def _blocks() -> list[str]:
    return BLOCK.findall(README.read_text())


def test_the_readme_has_a_python_tour():
    blocks = _blocks()
    assert blocks, "README.md has no ```python block"
    assert "import atomssl" in blocks[0]


def test_block_extraction():
    text = "x\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = a + 1\n```\n"
    assert BLOCK.findall(text) == ["a = 1\n", "b = a + 1\n"]


def test_readme_python_tour_runs(tmp_path, monkeypatch):
    from ase.build import bulk
    from ase.io import write

    write(tmp_path / "POSCAR", bulk("Si", "diamond", a=5.43), format="vasp")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_tour"}
    for i, block in enumerate(_blocks()):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as exc:  # name the block: the traceback points into README text
            pytest.fail(f"README.md python block {i + 1} failed: {type(exc).__name__}: {exc}")
    # what the tour promises: structures read, a batch embedded, a probe fitted on embeddings
    if "structures" in namespace:
        assert len(namespace["structures"]) == 1 and namespace["structures"][0].n_atoms == 2
    if "emb" in namespace and "crystals" in namespace:
        emb = np.asarray(namespace["emb"])
        assert emb.shape[0] == len(namespace["crystals"]) and np.isfinite(emb).all()
    if "probe" in namespace and "emb" in namespace:
        assert np.isfinite(namespace["probe"].predict(np.asarray(namespace["emb"]))).all()
    # the tour only reads: it leaves no files behind in the folder it ran in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["POSCAR"]
