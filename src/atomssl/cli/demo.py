"""``atomssl demo``: the end-to-end showcase on bundled real data (matbench_dielectric).

v0: load and verify the dataset and its official folds, summarise it, build every training
graph (5 A cutoff) and time that, write a run folder with ``summary.json``, ``summary.txt``,
``config.yaml`` and ``histograms.png``.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CUTOFF = 5.0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the showcase on bundled data (matbench_dielectric)",
        description=(
            "Load matbench_dielectric (4764 Materials Project crystals, refractive index n) with its "
            "official 5-fold splits, verify and summarise it, build every neighbour graph and time it. "
            "Writes a run folder with summary.json, summary.txt, config.yaml and histograms.png."
        ),
    )
    p.add_argument("--out", "-o", help="run folder (default: runs/demo-<date>-<time>)")
    p.add_argument(
        "--limit", type=int, default=None, metavar="N", help="use only the first N structures"
    )
    p.add_argument(
        "--cutoff",
        type=float,
        default=DEFAULT_CUTOFF,
        help="graph radius cutoff in Angstrom (default 5)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--checkpoint",
        help="pretrained backbone for the transfer stage (default: the shipped atomssl/weights/default.pt)",
    )
    p.add_argument(
        "--sizes",
        default="100,250,500",
        help="label budgets of the transfer stage (default 100,250,500)",
    )
    p.add_argument("--seeds", default="0", help="seeds of the transfer stage (default 0)")
    p.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs per run (default 20)")
    p.add_argument(
        "--test-limit", type=int, default=300, help="fold-0 test structures scored (default 300)"
    )
    p.add_argument(
        "--skip-transfer", action="store_true", help="only the dataset stage (load, verify, graph)"
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        from ..errors import ConfigError

        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    from ._paths import run_folder

    run_folder(args.out)  # before any work: created only inside an existing folder
    summary = run_demo(
        out=args.out, limit=args.limit, cutoff=args.cutoff, progress=not args.no_progress
    )
    if not args.skip_transfer:
        run_transfer(
            Path(summary["run_dir"]),
            checkpoint=args.checkpoint,
            sizes=args.sizes,
            seeds=args.seeds,
            epochs=args.epochs,
            test_limit=args.test_limit,
            progress=not args.no_progress,
        )
    return 0


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
    per_structure = Counter()
    for s in structures:
        per_structure.update(set(s.numbers.tolist()))
    n_loaded = len(structures)
    fold_sizes = []
    for k, (train, test) in enumerate(folds):
        fold_sizes.append(
            {
                "fold": k,
                "train": int((train < n_loaded).sum()),
                "test": int((test < n_loaded).sum()),
            }
        )
    return {
        "dataset": "matbench_dielectric",
        "count": n_loaded,
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
    from tqdm.auto import tqdm

    from ..graph import to_graph

    return [
        to_graph(
            s, cutoff=cutoff, labels=["n"], validate=False
        )  # validated when the dataset was built
        for s in tqdm(
            structures,
            desc=f"graphs @ {cutoff:g} A",
            unit="struct",
            disable=not progress,
            mininterval=0.5,
        )
    ]


def format_summary(summary: dict[str, Any]) -> str:
    a, n, m, g = (
        summary["atoms_per_structure"],
        summary["label_n"],
        summary["mad_check"],
        summary["graphs"],
    )
    el = summary["elements"]
    rows = [
        (
            "dataset",
            f"{summary['dataset']} ({summary['count']} of {summary['count_full']} structures)",
        ),
        (
            "elements",
            f"{el['distinct']} distinct; most common: "
            + ", ".join(f"{s} {c}" for s, c in el["most_common"][:6]),
        ),
        (
            "atoms/structure",
            f"min {a['min']:.0f}  median {a['median']:.0f}  mean {a['mean']:.1f}  max {a['max']:.0f}  (total {a['total']})",
        ),
        (
            "label n",
            f"mean {n['mean']:.4f}  std {n['std']:.4f}  min {n['min']:.3f}  max {n['max']:.3f}  MAD {n['mad']:.7f}",
        ),
        (
            "MAD check",
            f"{m['full_dataset']:.7f} vs expected {m['expected']} over all {summary['count_full']}: {'OK' if m['ok'] else 'MISMATCH'}",
        ),
        ("folds (train/test)", "  ".join(f"{f['train']}/{f['test']}" for f in summary["folds"])),
        (
            "graphs",
            f"{g['count']} at {g['cutoff']:g} A, {g['edges']} edges ({g['edges_per_atom']:.1f}/atom)",
        ),
        (
            "time",
            f"load {g['load_s']:.2f} s + graphs {g['graph_s']:.2f} s = {g['total_s']:.2f} s ({g['graphs_per_s']:.0f} graphs/s; "
            f"CPU {g['cpu_s']:.2f} s; imports {g['import_s']:.1f} s)",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def plot_histograms(structures, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: Agg canvas, no global backend state

    n = [s.labels["n"] for s in structures]
    atoms = [s.n_atoms for s in structures]
    fig = Figure(figsize=(10, 4), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    # n has a long tail (up to ~60): logarithmic bins keep the bulk near 2 readable
    ax1.hist(n, bins=np.geomspace(min(n), max(n) * 1.0001, 60), color="tab:blue")
    ax1.set_xscale("log")
    ax1.set_xlabel("refractive index n (log scale)")
    ax1.set_ylabel("structures")
    ax1.set_title("label n")
    ax2.hist(
        atoms, bins=np.arange(0.5, max(atoms) + 1.5, max(1, max(atoms) // 60)), color="tab:orange"
    )
    ax2.set_xlabel("atoms per structure")
    ax2.set_ylabel("structures")
    ax2.set_title("structure size")
    fig.suptitle(f"matbench_dielectric ({len(structures)} structures)")
    fig.tight_layout()
    from ..utils import save_figure

    save_figure(fig, path, dpi=100)


def run_demo(
    out: str | Path | None = None,
    limit: int | None = None,
    cutoff: float = DEFAULT_CUTOFF,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the demo; returns the summary written to ``<run>/summary.json``."""
    from ..data import load_matbench_dielectric, matbench_folds, mean_absolute_deviation
    from ..utils import atomic_write, dump_config, make_run_dir, write_json

    run_dir = make_run_dir(out, exist_ok=True) if out else make_run_dir("runs", "demo")
    dump_config(
        {"dataset": "matbench_dielectric", "limit": limit, "cutoff": cutoff},
        run_dir / "config.yaml",
    )

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


# --------------------------------------------------------------------------- transfer stage
TRANSFER_CONFIG: dict[str, Any] = {
    # fine-tuning recipe of configs/evaluate_curves.yaml, with a budget that fits the demo
    "seed": 0,
    "mode": "full",
    "data": {"val_fraction": 0.2, "batch_size": 16},
    "task": {
        "name": "regression",
        "loss": "l1",
        "transform": "log",
        "readout": "set2set",
        "hidden": [64, 32],
    },
    "optim": {"lr": 2.0e-3, "scheduler": "cosine", "warmup_steps": 20},
    "trainer": {"max_epochs": 25, "patience": 8, "accelerator": "auto"},
}


def run_transfer(
    run_dir: Path,
    checkpoint: str | Path | None = None,
    sizes: str = "100,250,500",
    seeds: str = "0",
    epochs: int = 20,
    test_limit: int | None = 300,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune on matbench_dielectric with and without the pretrained backbone (same rows,
    architecture and budget), then draw the learning curve and the embedding map."""
    import copy

    from ..analysis import embedding_map_figure
    from ..errors import CheckpointError
    from ..train import default_checkpoint
    from ..train._curves import learning_curves
    from ..utils import write_json

    ckpt = Path(checkpoint) if checkpoint else default_checkpoint()
    if ckpt is None or not Path(ckpt).is_file():
        raise CheckpointError(
            f"no pretrained backbone found ({checkpoint or 'shipped atomssl/weights/default.pt'}); "
            "pass --checkpoint or run with --skip-transfer"
        )
    cfg = copy.deepcopy(TRANSFER_CONFIG)
    cfg["trainer"]["max_epochs"] = int(epochs)
    print(
        f"\ntransfer: fine-tuning on refractive index n, pretrained ({ckpt}) vs scratch, sizes {sizes}"
    )
    curves = learning_curves(
        cfg,
        ckpt,
        run_dir / "transfer",
        sizes=sizes,
        seeds=seeds,
        test_limit=test_limit,
        progress=progress,
    )
    print("embedding map of the pretrained structure embeddings (coloured by density) ...")
    emap = embedding_map_figure(ckpt, run_dir / "embedding_map.png", limit=1000, control=True)
    result = {
        "checkpoint": str(ckpt),
        "learning_curves": {k: v for k, v in curves.items() if k != "rows"},
        "embedding_map": {k: v for k, v in emap.items() if k != "xy"},
    }
    write_json(run_dir / "transfer.json", result)
    if not progress:  # learning_curves printed the table already when progress is on
        print((run_dir / "transfer" / "learning_curves.md").read_text())
    print(
        f"embedding map: {run_dir / 'embedding_map.png'} ({emap['method'].upper()}, "
        f"density kNN agreement {emap['agreement']:.2f} pretrained vs {emap.get('agreement_random', float('nan')):.2f} random weights)"
    )
    print(f"learning curve: {run_dir / 'transfer' / 'learning_curves.png'}")
    print(f"run folder: {run_dir}")
    return result
