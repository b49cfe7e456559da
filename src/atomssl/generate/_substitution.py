"""Substitution map: which element replaced which in reconstructions whose composition changed.

Only reconstructions that are valid (structure and composition) and whose composition differs
from the original are counted (as in the reference work's Fig. 5); each masked atom whose
species changed adds one count to (original element, replacing element). Elements are ordered
by periodic-table position: ``"period"`` (row by row, i.e. by atomic number) or ``"group"``
(column by column, lanthanides/actinides after group 3, so that elements of a group sit together).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..utils import save_figure

ORDERS = ("period", "group")


def periodic_position(z: int) -> tuple[int, int]:
    """``(period, group)`` of element ``z`` (lanthanides/actinides: group 3)."""
    from pymatgen.core.periodic_table import Element

    el = Element.from_Z(int(z))
    group = 3 if (el.is_lanthanoid or el.is_actinoid) else int(el.group)
    return int(el.row), group


def element_order(elements, order: str = "period") -> list[int]:
    """Atomic numbers sorted by periodic-table position (``order``: period or group)."""
    if order not in ORDERS:
        raise ConfigError(f"order must be one of {ORDERS}, got {order!r}")
    zs = sorted({int(z) for z in elements})
    if order == "period":
        return zs
    return sorted(zs, key=lambda z: (periodic_position(z)[1], periodic_position(z)[0], z))


def substitution_counts(
    reconstructions: Sequence, oxidation_states: str = "smact14", valid_only: bool = True
) -> Counter:
    """``Counter{(original Z, new Z): n}`` over masked atoms whose species changed."""
    from ._validity import composition_validity, structure_validity

    counts: Counter = Counter()
    for r in reconstructions:
        orig, new = r.original.numbers, r.repaired.numbers
        if np.array_equal(np.sort(orig), np.sort(new)):
            continue
        if valid_only and not (
            structure_validity(r.repaired) and composition_validity(r.repaired, oxidation_states)
        ):
            continue
        for a, b in zip(orig[r.mask], new[r.mask]):
            if a != b:
                counts[(int(a), int(b))] += 1
    return counts


def substitution_matrix(counts: Counter, order: str = "period") -> tuple[np.ndarray, list[int]]:
    """``(matrix[i, j] = count of element i replaced by element j, element list)``."""
    elements = element_order({z for pair in counts for z in pair}, order)
    index = {z: i for i, z in enumerate(elements)}
    m = np.zeros((len(elements), len(elements)), dtype=np.int64)
    for (a, b), n in counts.items():
        m[index[a], index[b]] += n
    return m, elements


def plot_substitution_map(
    counts: Counter, path: str | Path, order: str = "period", title: str = ""
) -> Path:
    """Heatmap PNG of the substitution counts (rows: replaced element, columns: replacing element)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ase.data import chemical_symbols

    m, elements = substitution_matrix(counts, order)
    size = max(4.0, 0.22 * len(elements) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    if len(elements):
        im = ax.imshow(np.ma.masked_equal(m, 0), cmap="viridis", interpolation="nearest")
        labels = [chemical_symbols[z] for z in elements]
        ax.set_xticks(range(len(elements)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(elements)), labels, fontsize=6)
        fig.colorbar(im, ax=ax, shrink=0.7, label="substitutions")
    else:
        ax.text(0.5, 0.5, "no valid changed compositions", ha="center", va="center")
    ax.set_xlabel("replacing element")
    ax.set_ylabel("original element")
    ax.set_title(title or f"element substitutions (ordered by {order})")
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
