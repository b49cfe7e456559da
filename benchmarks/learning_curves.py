"""Learning curves on matbench_dielectric: CDSSL-pretrained MEGNet vs the same MEGNet from scratch.

Thin wrapper around ``atomssl evaluate curves`` (``atomssl.train.learning_curves``) that copies
the table, plot and per-run CSV to ``benchmarks/results/learning_curves.{md,png,csv}``.
Resumable: runs already in ``--work``/runs.csv are not repeated; ``--report`` only re-summarises.

The pretrained checkpoint comes from::

    atomssl pretrain --config configs/pretrain_megnet.yaml --out runs/t5-pretrain-megnet \\
        'tasks=[{name: edge_denoise, weight: 1.0, sigma: 0.1, sigma_mode: relative, n_gaussians: 100}]' \\
        trainer.max_epochs=6 optim.warmup_steps=50

Usage::

    python benchmarks/learning_curves.py --checkpoint runs/t5-pretrain-megnet/checkpoints/best.pt \\
        [--sizes 50,100,250,500,1000,2000,all] [--seeds 0,1,2] [--test-limit 300] [--work runs/t5-curves]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(ROOT / "runs/t5-pretrain-megnet/checkpoints/best.pt"))
    p.add_argument("--config", default=str(ROOT / "configs/evaluate_curves.yaml"))
    p.add_argument("--work", default=str(ROOT / "runs/t5-curves"), help="working folder (resumable)")
    p.add_argument("--sizes", default="50,100,250,500,1000,2000,all")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--test-limit", type=int, default=300)
    p.add_argument("--report", action="store_true", help="only summarise the runs already done")
    args = p.parse_args(argv)

    from atomssl.train._curves import _read_rows, learning_curves, summarize_curves
    from atomssl.utils import load_config

    work = Path(args.work)
    if args.report:
        summary = summarize_curves(work, _read_rows(work / "runs.csv"))
    else:
        summary = learning_curves(load_config(args.config), args.checkpoint, work, sizes=args.sizes, seeds=args.seeds,
                                  test_limit=args.test_limit, progress=False)  # fmt: skip
        print((work / "learning_curves.md").read_text())
    RESULTS.mkdir(parents=True, exist_ok=True)
    for src, dst in (("learning_curves.md", "learning_curves.md"), ("learning_curves.png", "learning_curves.png"),
                     ("runs.csv", "learning_curves_runs.csv")):  # fmt: skip
        shutil.copyfile(work / src, RESULTS / dst)
    print(f"pretrained wins {summary['wins']} of {summary['settings']} settings; results in {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
