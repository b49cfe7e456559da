"""Learning curves on matbench_dielectric: CDSSL-pretrained MEGNet vs the same MEGNet from scratch.

Thin wrapper around ``atomssl evaluate curves`` (``atomssl.train.learning_curves``) that copies
the table, plot and per-run CSV to ``benchmarks/results/learning_curves.{md,png,csv}``.
Resumable: runs already in ``--work``/runs.csv are not repeated; ``--report`` only re-summarises.

The default checkpoint is the shipped backbone (``src/atomssl/weights/default.pt``, made by
``configs/pretrain_default.yaml``), so the curves reproduce without pretraining first.

Usage::

    python benchmarks/learning_curves.py [--checkpoint CKPT] [--sizes 50,100,250,500,1000,2000,all] \
        [--seeds 0,1,2] [--test-limit 300] [--work runs/curves]
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTES = """# Learning curves: CDSSL-pretrained MEGNet vs scratch on matbench_dielectric (refractive index n)

Pool: fold 0 training rows; test: a fixed random subset of {test_limit} fold-0 test rows (same for every run).
Per (labels N, seed): N rows drawn, 20% of them for early stopping; pretrained and scratch share rows,
architecture (MEGNet reference size from the checkpoint), optimiser (AdamW 2e-3, cosine, L1 on log n),
max epochs and patience (configs/{config}). Test MAE on n. Sizes: {sizes}; seeds {seeds}.

Pretrained backbone: the shipped `atomssl/weights/default.pt`, 60 epochs of CDSSL edge denoising +
masked species (equal weights) on the matbench_dielectric structures (labels unused) + 288 AFLOW
prototypes, ~30 min on one CPU core (validation: edge 1.153 vs 2.528 baseline, mask 0.960 vs 3.407):

    OMP_NUM_THREADS=1 atomssl pretrain --config configs/pretrain_default.yaml --out runs/pretrain-default
    OMP_NUM_THREADS=1 python benchmarks/learning_curves.py --checkpoint src/atomssl/weights/default.pt \\
        --sizes {sizes} --seeds {seeds} --test-limit {test_limit} --work runs/curves
    # equivalently: atomssl evaluate curves --config configs/evaluate_curves.yaml \\
    #     --checkpoint src/atomssl/weights/default.pt --out runs/curves --sizes ... --seeds ... --test-limit ...

"""
HISTORY = """
## Backbones tried on the same protocol (same scratch rows; gain = 1 - pretrained MAE / scratch MAE)

| pretrained backbone | 50 | 100 | 250 | 500 | 1000 | 2000 | all | wins |
|---|---|---|---|---|---|---|---|---|
| 6 epochs edge_denoise only (session 2) | -4.1% | -2.3% | +6.1% | +6.2% | -0.7% | +2.5% | | 11/18 |
| 4 epochs edge_denoise + mask (p_species 0.25; shipped until session 4) | +5.1% | -8.9% | +0.5% | | | | | 4/9 |
| same, backbone learning rate x 0.1 | +4.6% | -11.0% | -9.0% | | | | | 2/9 |
| 30 epochs edge_denoise + 0.5 x mask (`configs/pretrain_megnet.yaml`, session 3) | +13.0% | +9.2% | +9.8% | +7.0% | +10.1% | +12.8% | | 16/18 |
| 60 epochs edge_denoise + 0.5 x mask (session 4) | +7.2% | +12.1% | +17.2% | | | | | 8/9 |
{shipped_row}

Choice between the two 60-epoch backbones: by the fine-tuning *validation* MAE (the 20% early-stopping
rows, never the test rows), mean over the nine <= 250-label runs: 0.425 (mask weight 1.0) vs 0.447
(mask weight 0.5); only the chosen one was run at 500-2000 and all.

Run-to-run spread: the pretrained rows of the shipped backbone were run twice (sessions 4 and 5, same
command, one thread). The 50 and 100 rows reproduced to every printed digit; 250-2000 moved by up to 0.010
MAE per run (session 4: +17.8% at 250, and 1000 labels seed 2 lost by 0.0003; 16 of the 17 settings it
finished). The table above is session 5's complete run.

Longer pretraining with a stronger masked-species task is what moved the curve; a lower backbone learning
rate during fine-tuning did not.

Provenance of the scratch rows: they do not depend on the checkpoint's weights and are deterministic
(re-running the 50/100/250 scratch rows in session 3 reproduced session 2's values to every printed
digit), so the 50-2000 scratch rows are reused from sessions 2-3 (their `seconds` come from a more
loaded machine); the `all` rows (both variants) were run in session 5.
"""
RESULTS = ROOT / "benchmarks" / "results"
HISTORY_SIZES = ("50", "100", "250", "500", "1000", "2000", "all")
SHIPPED_LABEL = "60 epochs edge_denoise + 1.0 x mask (shipped, the table above)"


def _shipped_row(summary: dict) -> str:
    """The shipped backbone's row of the HISTORY table, from this run's summary (so it cannot go stale)."""
    cells = []
    for size in HISTORY_SIZES:
        gain = summary["per_size"].get(size, {}).get("gain")
        cells.append(f"**{100 * gain:+.1f}%**" if gain is not None and math.isfinite(gain) else "")
    return (
        f"| **{SHIPPED_LABEL}** | "
        + " | ".join(cells)
        + f" | **{summary['wins']}/{summary['settings']}** |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(ROOT / "src/atomssl/weights/default.pt"))
    p.add_argument("--config", default=str(ROOT / "configs/evaluate_curves.yaml"))
    p.add_argument("--work", default=str(ROOT / "runs/curves"), help="working folder (resumable)")
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
    for src, dst in (
        ("learning_curves.png", "learning_curves.png"),
        ("runs.csv", "learning_curves_runs.csv"),
    ):
        shutil.copyfile(work / src, RESULTS / dst)
    header = NOTES.format(
        sizes=args.sizes,
        seeds=args.seeds,
        test_limit=args.test_limit,
        config=Path(args.config).name,
    )
    history = HISTORY.replace("{shipped_row}", _shipped_row(summary))
    (RESULTS / "learning_curves.md").write_text(
        header + (work / "learning_curves.md").read_text() + history
    )
    print(
        f"pretrained wins {summary['wins']} of {summary['settings']} settings; results in {RESULTS}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
