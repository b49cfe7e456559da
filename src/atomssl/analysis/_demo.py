"""The showcase behind ``atomssl demo`` (what ``make demo`` runs): its config and its dataset stage.

The recipe and budget are the packaged config ``demo`` (``atomssl config show demo``): a
fine-tuning config plus a ``demo`` section, checked by :data:`SCHEMA`. The dataset stage loads and
verifies matbench_dielectric and its official folds, summarises it, builds every training graph
and times that (``summary.json``, ``summary.txt``, ``histograms.png``). The transfer stage
(learning curve and embedding map: :mod:`atomssl.evaluate` and :mod:`atomssl.analysis` together)
is run by :mod:`atomssl.cli.demo`.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..train._finetune import SCHEMA as FINETUNE_SCHEMA

#: the demo's own options (the ``demo`` section of its config)
DEMO_SECTION: dict[str, Any] = {
    "cutoff": 5.0,  # graph radius of the dataset stage (A)
    "sizes": [100, 250, 500],  # label budgets of the learning curve
    "seeds": [0],
    "test_limit": 300,  # fold-0 test structures scored
    "map_limit": 1000,  # structures on the embedding map
    "workers": 2,  # fine-tuning runs at a time (one process and one torch thread each)
}
#: the fine-tuning defaults of ``atomssl evaluate`` (a log target for the long-tailed index n)
DEFAULTS: dict[str, Any] = {
    "data": {"val_fraction": 0.2},
    "task": {"name": "regression", "loss": "l1", "transform": "log"},
    "run": {"root": "runs", "name": "demo"},
    "demo": DEMO_SECTION,
}
#: a fine-tuning config with a ``demo`` section (atomssl.utils._schema)
SCHEMA = replace(
    FINETUNE_SCHEMA.over("demo", DEFAULTS),
    types={
        **FINETUNE_SCHEMA.types,
        "demo.sizes": (list, str),
        "demo.seeds": (list, str, int),
        "demo.test_limit": (int, None),
        "demo.map_limit": (int, None),
    },
)


def load_demo_config(spec: str | Path | None = None, overrides=()) -> dict[str, Any]:
    """The packaged ``demo`` config (or the file ``spec``) over :data:`DEFAULTS`, overridden."""
    from ..utils import load_config

    return load_config(spec or "demo", defaults=DEFAULTS, overrides=overrides, schema="demo")


def _csv(value) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


# --------------------------------------------------------------------------- dataset stage
def _stats(values) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {
        "min": float(v.min()),
        "median": float(np.median(v)),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "max": float(v.max()),
    }


def summarise(structures, folds, full_mad: float) -> dict[str, Any]:
    """Counts, elements, sizes, label statistics and fold sizes of the loaded structures."""
    from ase.data import chemical_symbols

    from ..data import MATBENCH_DIELECTRIC_COUNT, MATBENCH_DIELECTRIC_MAD, mean_absolute_deviation

    n_atoms = np.array([s.n_atoms for s in structures])
    labels = np.array([s.labels["n"] for s in structures], dtype=np.float64)
    per_structure: Counter[int] = Counter()
    for s in structures:
        per_structure.update(set(s.numbers.tolist()))
    n = len(structures)
    fold_sizes = [
        {"fold": k, "train": int((train < n).sum()), "test": int((test < n).sum())}
        for k, (train, test) in enumerate(folds)
    ]
    return {
        "dataset": "matbench_dielectric",
        "count": n,
        "count_full": MATBENCH_DIELECTRIC_COUNT,
        "elements": {
            "distinct": len(per_structure),
            "most_common": [(chemical_symbols[z], c) for z, c in per_structure.most_common(10)],
        },
        "atoms_per_structure": {**_stats(n_atoms), "total": int(n_atoms.sum())},
        "label_n": {**_stats(labels), "mad": mean_absolute_deviation(labels)},
        "mad_check": {
            "expected": MATBENCH_DIELECTRIC_MAD,
            "full_dataset": full_mad,
            "ok": bool(abs(full_mad - MATBENCH_DIELECTRIC_MAD) < 1e-6),
        },
        "folds": fold_sizes,
    }


def build_graphs(structures, cutoff: float, progress: bool = True):
    """Training-ready graphs (label ``n``) of every structure, with a progress bar."""
    from ..graph import to_graph
    from ..utils import progress_bar

    bar = progress_bar(
        structures, desc=f"graphs @ {cutoff:g} A", unit="struct", leave=False, enabled=progress
    )
    # validate=False: validated when the dataset was built
    return [to_graph(s, cutoff=cutoff, labels=["n"], validate=False) for s in bar]


def format_summary(summary: dict[str, Any]) -> str:
    a, n, m, g = (summary[k] for k in ("atoms_per_structure", "label_n", "mad_check", "graphs"))
    el = summary["elements"]
    common = ", ".join(f"{s} {c}" for s, c in el["most_common"][:6])
    rows = [
        (
            "dataset",
            f"{summary['dataset']} ({summary['count']} of {summary['count_full']} structures)",
        ),
        ("elements", f"{el['distinct']} distinct; most common: {common}"),
        (
            "atoms/structure",
            f"min {a['min']:.0f}  median {a['median']:.0f}  mean {a['mean']:.1f}  "
            f"max {a['max']:.0f}  (total {a['total']})",
        ),
        (
            "label n",
            f"mean {n['mean']:.4f}  std {n['std']:.4f}  min {n['min']:.3f}  "
            f"max {n['max']:.3f}  MAD {n['mad']:.7f}",
        ),
        (
            "MAD check",
            f"{m['full_dataset']:.7f} vs expected {m['expected']} over all "
            f"{summary['count_full']}: {'OK' if m['ok'] else 'MISMATCH'}",
        ),
        ("folds (train/test)", "  ".join(f"{f['train']}/{f['test']}" for f in summary["folds"])),
        (
            "graphs",
            f"{g['count']} at {g['cutoff']:g} A, {g['edges']} edges "
            f"({g['edges_per_atom']:.1f}/atom)",
        ),
        (
            "time",
            f"load {g['load_s']:.2f} s + graphs {g['graph_s']:.2f} s = {g['total_s']:.2f} s "
            f"({g['graphs_per_s']:.0f} graphs/s; CPU {g['cpu_s']:.2f} s; "
            f"imports {g['import_s']:.1f} s)",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def plot_histograms(structures, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: Agg canvas, no global backend state

    from ..utils import save_figure

    n = [s.labels["n"] for s in structures]
    atoms = [s.n_atoms for s in structures]
    fig = Figure(figsize=(10, 4), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    # n has a long tail (up to ~60): logarithmic bins keep the bulk near 2 readable
    ax1.hist(n, bins=np.geomspace(min(n), max(n) * 1.0001, 60), color="tab:blue")
    ax1.set_xscale("log")
    ax1.set(xlabel="refractive index n (log scale)", ylabel="structures", title="label n")
    bins = np.arange(0.5, max(atoms) + 1.5, max(1, max(atoms) // 60))
    ax2.hist(atoms, bins=bins, color="tab:orange")
    ax2.set(xlabel="atoms per structure", ylabel="structures", title="structure size")
    fig.suptitle(f"matbench_dielectric ({len(structures)} structures)")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def run_dataset_stage(
    run_dir: Path, cutoff: float, limit: int | None = None, progress: bool = True
) -> dict[str, Any]:
    """Stage 1 into ``run_dir``; returns the summary written to ``summary.json``."""
    from ..data import load_matbench_dielectric, matbench_folds, mean_absolute_deviation
    from ..utils import atomic_write, write_json

    t_import = time.perf_counter()
    from .. import graph  # noqa: F401  (torch + torch_geometric: imported once, timed apart)

    t_import = time.perf_counter() - t_import
    t0, c0 = time.perf_counter(), time.process_time()
    structures = load_matbench_dielectric(limit=limit)
    t_load = time.perf_counter() - t0
    # The loader verified the MAD over all rows; recompute it for the record (cached, cheap).
    full = structures if limit is None else load_matbench_dielectric()
    full_mad = mean_absolute_deviation([s.labels["n"] for s in full])
    folds = matbench_folds("matbench_dielectric")
    t1 = time.perf_counter()
    graphs = build_graphs(structures, cutoff, progress)
    t_graph = time.perf_counter() - t1
    cpu = time.process_time() - c0  # includes the fold loading; robust to other load on the machine

    summary = summarise(structures, folds, full_mad)
    edges = int(sum(g.edge_index.shape[1] for g in graphs))
    summary["graphs"] = {
        "cutoff": cutoff,
        "count": len(graphs),
        "edges": edges,
        "edges_per_atom": edges / max(1, summary["atoms_per_structure"]["total"]),
        "import_s": t_import,
        "load_s": t_load,
        "graph_s": t_graph,
        "total_s": t_load + t_graph,
        "graphs_per_s": len(graphs) / max(t_graph, 1e-9),
        "cpu_s": cpu,
    }
    summary["run_dir"] = str(run_dir)
    table = format_summary(summary)
    print(table)
    write_json(run_dir / "summary.json", summary)
    with atomic_write(run_dir / "summary.txt", "w") as fh:
        fh.write(table + "\n")
    plot_histograms(structures, run_dir / "histograms.png")
    print(f"run folder: {run_dir}")
    return summary
