"""Experiment (b) of the order issue with every mode trained to convergence, on a GPU if one is there.

The reference clouds need pymatgen (AFLOW prototypes); a GPU machine may lack it. So the work is split:

1. ``prepare`` (any machine with atomssl installed): draw a uniform random subset of the split's reference
   environments and store it as ``.npz`` (clouds, prototype, sigma, names). Drawing the labelled and
   test environments from a uniform subset is the same as drawing them from the whole pool.
2. ``run`` (needs only torch, torch-geometric, e3nn, ase and this repository's ``src``): load a checkpoint,
   run :func:`atomssl.order.transfer` on the subset with ``labelled`` environments per draw (640 = 0.1 %
   of the 'wide' pool), one label draw per seed, and optionally the many-labels model.
3. ``summarise``: merge the ``transfer_*.csv`` of several run folders into one markdown table.

Commands behind benchmarks/results/order_transfer.md (section "trained to convergence"):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/order_transfer.py prepare --out runs/device/wide_refs.npz
    python benchmarks/order_transfer.py run --refs runs/device/wide_refs.npz --checkpoint CKPT \\
        --seeds 0 --device cuda --out runs/device/small_s0 [--many-labels 40000]
    python benchmarks/order_transfer.py summarise runs/device/*_s* > table.md
    python benchmarks/order_transfer.py plot benchmarks/results/order_transfer_converged_curve.csv \\
        --out benchmarks/results/order_transfer_converged.png
All at once on one GPU: ``bash benchmarks/order_transfer_gpu.sh runs/device OUTDIR``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:  # also runs from a bare checkout (no pip install) on a GPU machine
    sys.path.insert(0, str(SRC))

MODES = ("frozen_pretrained", "scratch", "finetune_all", "scratch_many_labels")


def prepare(args) -> None:
    from atomssl.order._experiments import split_reference_clouds

    refs = split_reference_clouds(args.split)
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(refs.clouds), min(args.subset, len(refs.clouds)), replace=False)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        clouds=refs.clouds[pick].astype(np.float32),
        prototype=refs.prototype[pick],
        sigma=refs.sigma[pick],
        names=np.array(refs.names),
        pool=len(refs.clouds),
    )
    tmp.replace(out)
    print(f"{out}: {len(pick)} of {len(refs.clouds)} environments, {len(refs.names)} prototypes")


def run(args) -> None:
    import torch

    from atomssl.order import ReferenceClouds, transfer
    from atomssl.train import load_backbone

    torch.set_num_threads(args.threads)
    z = np.load(args.refs)
    refs = ReferenceClouds(z["clouds"], z["prototype"], z["sigma"], tuple(z["names"].tolist()))
    n = len(refs.clouds)
    t = time.perf_counter()
    backbone = load_backbone(args.checkpoint)
    rows = transfer(
        backbone,
        args.out,
        fraction=args.labelled / n,
        seeds=tuple(args.seeds),
        split=args.split,
        refs=refs,
        device=args.device,
        head_steps=args.head_steps,
        full_steps=args.full_steps,
        many_labels=(args.many_labels / n) if args.many_labels else None,
        many_steps=args.many_steps,
        curve_at=tuple(args.curve),
        progress=lambda m: print(f"[{args.out}] {m}", flush=True),
    )
    print(
        f"[{args.out}] done in {time.perf_counter() - t:.0f} s; pool {int(z['pool'])}, subset {n}, "
        f"{rows[0]['labelled']} labelled"
    )


def summarise(args) -> None:
    rows = []
    for d in args.dirs:
        for f in sorted(Path(d).glob("transfer*.csv")):
            if f.stem.endswith("_curve"):
                continue
            ck = Path(d).name.rsplit("_s", 1)[0]  # run folders are <checkpoint>_s<seed>
            with open(f) as fh:
                rows += [
                    dict(r, checkpoint=ck)
                    for r in csv.DictReader(fh)
                    if r["seed"] not in ("mean", "std")
                ]
    print("| checkpoint | mode | labelled | steps | per seed | mean | std |")
    print("|---|---|---|---|---|---|---|")
    for ck in sorted({r["checkpoint"] for r in rows}):
        by_mode = {
            m: sorted(
                (r for r in rows if r["checkpoint"] == ck and r["mode"] == m),
                key=lambda r: int(r["seed"]),
            )
            for m in MODES
        }
        for mode, sel in by_mode.items():
            if not sel:
                continue
            acc = np.array([float(r["accuracy"]) for r in sel])
            print(
                f"| {ck} | {mode} | {sel[0]['labelled']} | {sel[0]['steps']} | "
                f"{' / '.join(f'{a:.3f}' for a in acc)} | **{acc.mean():.3f}** | {acc.std():.3f} |"
            )
        fz = {r["seed"]: float(r["accuracy"]) for r in by_mode["frozen_pretrained"]}
        sc = {r["seed"]: float(r["accuracy"]) for r in by_mode["scratch"]}
        gain = [100 * (fz[s] - sc[s]) for s in sorted(fz) if s in sc]
        if gain:
            print(
                f"| {ck} | frozen - scratch (points) | | | {' / '.join(f'{g:+.1f}' for g in gain)} | **{np.mean(gain):+.1f}** | {np.std(gain):.1f} |"
            )


def plot(args) -> None:
    """Test accuracy against training steps (mean over label draws) per checkpoint and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(args.curve) as fh:
        rows = list(csv.DictReader(fh))
    cks = sorted({r["checkpoint"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(1, len(cks), figsize=(5 * len(cks), 3.8), sharey=True, squeeze=False)
    for ax, ck in zip(axes[0], cks):
        for mode in MODES:
            sel = [r for r in rows if r["checkpoint"] == ck and r["mode"] == mode]
            if not sel:
                continue
            steps = sorted({int(r["step"]) for r in sel})
            mean = [
                np.mean([float(r["accuracy"]) for r in sel if int(r["step"]) == s]) for s in steps
            ]
            label = (
                "scratch, 40,000 labels" if mode == "scratch_many_labels" else f"{mode}, 640 labels"
            )
            ax.plot(steps, mean, "o--" if mode == "scratch_many_labels" else "o-", label=label)
        ax.set(title=f"{ck} checkpoint", xlabel="training steps", xscale="log")
        ticks = sorted({int(r["step"]) for r in rows})
        ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (147 classes)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=130)
    print(args.out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--split", default="wide")
    p.add_argument("--subset", type=int, default=80_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p = sub.add_parser("run")
    p.add_argument("--refs", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--split", default="wide")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0])
    p.add_argument(
        "--labelled",
        type=int,
        default=640,
        help="labelled environments per draw (0.1 %% of the wide pool)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--head-steps", type=int, default=3000)
    p.add_argument("--full-steps", type=int, default=1000)
    p.add_argument(
        "--many-labels",
        type=int,
        default=0,
        help="labelled environments of the many-labels model (0: skip)",
    )
    p.add_argument("--many-steps", type=int, default=3000)
    p.add_argument("--curve", type=lambda s: [int(x) for x in s.split(",") if x], default=[])
    p.add_argument("--threads", type=int, default=1)
    p = sub.add_parser("summarise")
    p.add_argument("dirs", nargs="+")
    p = sub.add_parser("plot")
    p.add_argument("curve", help="CSV with checkpoint, mode, seed, step, accuracy")
    p.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    {"prepare": prepare, "run": run, "summarise": summarise, "plot": plot}[args.cmd](args)


if __name__ == "__main__":
    main()
