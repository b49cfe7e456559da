"""``atomssl demo``: the end-to-end showcase on bundled real data (matbench_dielectric).

Recipe and budget: the packaged config ``demo``; its schema and the dataset stage:
:mod:`atomssl.analysis._demo`. Here: the transfer stage, which joins :mod:`atomssl.evaluate`
(learning curve, pretrained vs scratch, runs on ``demo.workers`` processes) and
:mod:`atomssl.analysis` (embedding map), and the timed run of both stages.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

#: flag -> key of the demo config it sets
SHORTCUTS = (("cutoff", "demo.cutoff"), ("sizes", "demo.sizes"), ("seeds", "demo.seeds"),
             ("epochs", "trainer.max_epochs"), ("test_limit", "demo.test_limit"),
             ("workers", "demo.workers"))  # fmt: skip


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the showcase on bundled data (matbench_dielectric)",
        description=(
            "Load matbench_dielectric (4764 Materials Project crystals, refractive index n) with "
            "its official 5-fold splits, verify and summarise it, build every neighbour graph and "
            "time it (summary.json, summary.txt, histograms.png); then fine-tune MEGNet on n with "
            "and without the shipped pretrained backbone at a few label budgets (transfer/: "
            "learning curve table and plot) and map the pretrained embeddings (embedding_map.png). "
            "Recipe "
            "and budget: the packaged config demo (atomssl config show demo), about 2.5 minutes on "
            "two CPU cores; the total time is printed at the end."
        ),
    )
    p.add_argument("--config", "-c", help="YAML file or packaged config (default: demo)")
    p.add_argument("--out", "-o", help="run folder (default: runs/demo-<date>-<time>)")
    p.add_argument(
        "--limit", type=int, default=None, metavar="N", help="use only the first N structures"
    )
    p.add_argument("--cutoff", type=float, help="graph radius in Angstrom (demo.cutoff, 5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--checkpoint",
        help="pretrained backbone for the transfer stage (default: the shipped "
        "atomssl/weights/default.pt)",
    )
    p.add_argument("--sizes", help="label budgets of the transfer stage (demo.sizes, 100,250,500)")
    p.add_argument("--seeds", help="seeds of the transfer stage (demo.seeds, 0)")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs per run (trainer.max_epochs, 20)")
    p.add_argument("--test-limit", type=int, help="fold-0 test structures scored (demo.test_limit)")
    p.add_argument("--workers", type=int, help="fine-tuning runs at a time (demo.workers, 2)")
    p.add_argument(
        "--skip-transfer", action="store_true", help="only the dataset stage (load, verify, graph)"
    )
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. demo.seeds=[0,1]"
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ._paths import run_folder

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    run_folder(args.out)  # before any work: created only inside an existing folder
    from ..analysis._demo import load_demo_config

    flags = [f"{key}=[{value}]" if flag in ("sizes", "seeds") else f"{key}={value}"
             for flag, key in SHORTCUTS if (value := getattr(args, flag)) is not None]  # fmt: skip
    config = load_demo_config(args.config, [*args.overrides, *flags])
    run_showcase(config, out=args.out, limit=args.limit, checkpoint=args.checkpoint,
                 skip_transfer=args.skip_transfer, progress=not args.no_progress)  # fmt: skip
    return 0


# -------------------------------------------------------------------------- transfer stage
def run_transfer(
    run_dir: Path,
    checkpoint: str | Path | None = None,
    sizes: str | None = None,
    seeds: str | None = None,
    epochs: int | None = None,
    test_limit: int | None = None,
    progress: bool = True,
    config: dict | None = None,
) -> dict[str, Any]:
    """Stage 2 into ``run_dir``: learning curve pretrained vs scratch, then the embedding map.
    ``config``: a demo config (default :func:`load_demo_config`); the arguments override it."""
    from ..analysis import embedding_map_figure
    from ..analysis._demo import load_demo_config
    from ..errors import CheckpointError
    from ..evaluate import learning_curves
    from ..train import default_checkpoint
    from ..utils import write_json

    cfg = copy.deepcopy(config) if config is not None else load_demo_config()
    demo = cfg.pop("demo")
    if epochs is not None:
        cfg["trainer"]["max_epochs"] = int(epochs)
    sizes = _csv(sizes if sizes is not None else demo["sizes"])
    seeds = _csv(seeds if seeds is not None else demo["seeds"])
    test_limit = test_limit if test_limit is not None else demo["test_limit"]
    ckpt = Path(checkpoint) if checkpoint else default_checkpoint()
    if ckpt is None or not Path(ckpt).is_file():
        raise CheckpointError(
            f"no pretrained backbone found ({checkpoint or 'shipped atomssl/weights/default.pt'}); "
            "pass --checkpoint or run with --skip-transfer"
        )
    print(
        f"\ntransfer: fine-tuning on refractive index n, pretrained ({ckpt}) vs scratch, "
        f"sizes {sizes}, seeds {seeds}, {int(demo['workers'])} at a time"
    )
    t0 = time.perf_counter()
    curves = learning_curves(
        cfg,
        ckpt,
        run_dir / "transfer",
        sizes=sizes,
        seeds=seeds,
        test_limit=test_limit,
        progress=progress,
        workers=int(demo["workers"]),
    )
    t_curves = time.perf_counter() - t0
    print("embedding map of the pretrained structure embeddings (coloured by density) ...")
    emap = embedding_map_figure(
        ckpt,
        run_dir / "embedding_map.png",
        limit=demo["map_limit"],
        control=True,
        progress=progress,
    )
    result = {
        "checkpoint": str(ckpt),
        "learning_curves": {k: v for k, v in curves.items() if k != "rows"},
        "embedding_map": {k: v for k, v in emap.items() if k != "xy"},
        "seconds": {
            "learning_curves": t_curves,
            "embedding_map": time.perf_counter() - t0 - t_curves,
        },
    }
    write_json(run_dir / "transfer.json", result)
    if not progress:  # learning_curves printed the table already when progress is on
        print((run_dir / "transfer" / "learning_curves.md").read_text())
    print(
        f"embedding map: {run_dir / 'embedding_map.png'} ({emap['method'].upper()}, density kNN "
        f"agreement {emap['agreement']:.2f} pretrained vs "
        f"{emap.get('agreement_random', float('nan')):.2f} random weights)"
    )
    print(f"learning curve: {run_dir / 'transfer' / 'learning_curves.png'}")
    return result


def run_showcase(
    config: dict,
    out: str | Path | None = None,
    limit: int | None = None,
    checkpoint: str | Path | None = None,
    skip_transfer: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Both stages into ``out`` (default ``runs/demo-<date>-<time>``); prints the wall time.

    Torch runs on one thread meanwhile (restored at the end): on these small graphs a second
    intra-op thread costs far more than it gains (the embedding map took 13x longer with two on a
    busy two-core machine), and the fine-tuning workers take the other cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _showcase(config, out, limit, checkpoint, skip_transfer, progress)
    finally:
        torch.set_num_threads(threads)


def _showcase(config, out, limit, checkpoint, skip_transfer, progress) -> dict[str, Any]:
    from ..analysis._demo import run_dataset_stage
    from ..utils import dump_config, make_run_dir, write_json

    t0, c0 = time.perf_counter(), time.process_time()
    run_dir = make_run_dir(out, exist_ok=True) if out else make_run_dir("runs", "demo")
    cutoff = float(config["demo"]["cutoff"])
    dump_config(
        {"dataset": "matbench_dielectric", "limit": limit, "cutoff": cutoff, **config},
        run_dir / "config.yaml",
    )
    summary = run_dataset_stage(run_dir, cutoff, limit, progress)
    seconds = {"dataset": time.perf_counter() - t0}
    if not skip_transfer:
        res = run_transfer(run_dir, checkpoint, config=config, progress=progress)
        seconds.update(res["seconds"])
    seconds["total"] = time.perf_counter() - t0
    cpu = time.process_time() - c0 + _children_cpu()
    write_json(run_dir / "timings.json", {**seconds, "cpu": cpu})
    parts = ", ".join(
        f"{k.replace('_', ' ')} {_minutes(v)}" for k, v in seconds.items() if k != "total"
    )
    print(f"run folder: {run_dir}")
    print(f"demo done in {_minutes(seconds['total'])} wall ({parts}; {_minutes(cpu)} CPU)")
    return {**summary, "seconds": seconds}


def _minutes(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (the fine-tuning workers)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _csv(value) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
