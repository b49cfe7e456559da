"""The bundled a-Si cells (made by ``atomssl motif simulate``; see docs/motifs.md)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import MissingFileError

BUNDLED_CELLS = "a-Si-512-vink.extxyz"


def bundled_path(name: str = BUNDLED_CELLS) -> Path:
    path = Path(str(resources.files("atomssl.motif") / "data" / name))
    if not path.exists():
        raise MissingFileError("bundled a-Si cells missing from the installation", str(path))
    return path


def bundled_cells(name: str = BUNDLED_CELLS):
    """The bundled melt-quenched a-Si cells as :class:`Structure` records."""
    from ..simulate._melt_quench import read_cells

    return read_cells(bundled_path(name))
