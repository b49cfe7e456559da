"""Experiment (b) of the order issue with every mode trained to convergence, on a GPU if one is there.

The reference clouds need pymatgen (AFLOW prototypes); a GPU machine may lack it. So the work is split:

1. ``prepare`` (any machine with atomssl installed): draw a uniform random subset of the split's reference
   environments and store it as ``.npz`` (clouds, prototype, sigma, names). Drawing the labelled and
   test environments from a uniform subset is the same as drawing them from the whole pool.
2. ``run`` (needs only torch, torch-geometric, e3nn, ase and this repository's ``src``): load a checkpoint,
   run :func:`atomssl.order.transfer` on the subset with ``labelled`` environments per draw (640 = 0.1 %
   of the 'wide' pool), one label draw per seed, and optionally the many-labels model.
3. ``summarise``: merge the ``transfer_*.csv`` of several run folders into one markdown table;
   ``collect``: merge them into the raw records ``order_transfer_converged_{runs,curve}.csv``.
4. ``splits``: the 18-class splits (``held_out``, ``training``) with the same budgets, on a CPU ->
   ``order_transfer_splits_runs.csv``.
5. ``report``: ``order_transfer.md`` (first line: the command) from those records in benchmarks/results.

Commands behind benchmarks/results/order_transfer.md (section "trained to convergence"):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/order_transfer.py prepare --out runs/device/wide_refs.npz
    python benchmarks/order_transfer.py run --refs runs/device/wide_refs.npz --checkpoint CKPT \\
        --seeds 0 --device cuda --out runs/device/small_s0 [--many-labels 40000]
    python benchmarks/order_transfer.py collect runs/device/*_s? --out benchmarks/results
    python benchmarks/order_transfer.py plot benchmarks/results/order_transfer_converged_curve.csv \\
        --out benchmarks/results/order_transfer_converged.png
    python benchmarks/order_transfer.py report
All at once on one GPU: ``bash benchmarks/order_transfer_gpu.sh runs/device OUTDIR`` (then ``collect`` its
``OUTDIR/res/*_s?`` here). The 18-class splits:
    OMP_NUM_THREADS=1 python benchmarks/order_transfer.py splits --checkpoint small=CKPT --checkpoint large=CKPT
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
from _outputs import RESULTS, command_line, report_folder  # benchmarks/ is on sys.path

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


RUNS_CSV = "order_transfer_converged_runs.csv"
CURVE_CSV = "order_transfer_converged_curve.csv"
SPLITS_CSV = "order_transfer_splits_runs.csv"
RUN_FIELDS = ["checkpoint", "seed", "mode", "labelled", "accuracy", "train_loss"]
CURVE_FIELDS = ["checkpoint", "split", "mode", "seed", "step", "accuracy"]
SPLIT_FIELDS = [
    "checkpoint",
    "split",
    "seed",
    "mode",
    "labelled",
    "steps",
    "accuracy",
    "train_loss",
]


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _r3(v) -> str:
    return f"{float(v):.3f}".rstrip("0").rstrip(".") if v not in ("", None) else ""


def collect(args) -> None:
    """The raw records of the converged wide-split runs from run folders ``<checkpoint>_s<seed>``."""
    runs, curve = [], []
    for d in args.dirs:
        ck = Path(d).name.rsplit("_s", 1)[0]
        for f in sorted(Path(d).glob("transfer*.csv")):
            with open(f) as fh:
                rows = [r for r in csv.DictReader(fh) if r["seed"] not in ("mean", "std")]
            if f.stem.endswith("_curve"):
                curve += [dict(r, checkpoint=ck, accuracy=_r3(r["accuracy"])) for r in rows]
            else:
                runs += [dict(r, checkpoint=ck, accuracy=_r3(r["accuracy"]), train_loss=_r3(r["train_loss"]))
                         for r in rows]  # fmt: skip
    out = report_folder(args.out)
    _write_csv(out / RUNS_CSV, RUN_FIELDS, runs)
    if curve:
        _write_csv(out / CURVE_CSV, CURVE_FIELDS, curve)
    print(f"{out / RUNS_CSV}: {len(runs)} runs; {len(curve)} curve points")


def splits(args) -> None:
    """The 18-class splits on a CPU, every checkpoint of ``--checkpoint NAME=PATH``."""
    import torch

    from atomssl.order import transfer
    from atomssl.train import load_backbone

    torch.set_num_threads(args.threads)
    rows = []
    for spec in args.checkpoint:
        name, path = spec.split("=", 1)
        backbone = load_backbone(path)
        for split in ("held_out", "training"):
            got = transfer(backbone, Path(args.work) / name, seeds=tuple(args.seeds), split=split,
                           progress=lambda m, n=name: print(f"[{n}] {m}", flush=True))  # fmt: skip
            rows += [dict(r, checkpoint=name, accuracy=_r3(r["accuracy"]), train_loss=_r3(r["train_loss"]))
                     for r in got if isinstance(r["seed"], int)]  # fmt: skip
    out = report_folder(args.out)
    _write_csv(out / SPLITS_CSV, SPLIT_FIELDS, rows)
    print(f"{out / SPLITS_CSV}: {len(rows)} runs")


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _gain(rows: list[dict], ck: str, **where) -> list[float]:
    sel = [r for r in rows if r["checkpoint"] == ck and all(r[k] == v for k, v in where.items())]
    fz = {r["seed"]: float(r["accuracy"]) for r in sel if r["mode"] == "frozen_pretrained"}
    sc = {r["seed"]: float(r["accuracy"]) for r in sel if r["mode"] == "scratch"}
    return [100 * (fz[k] - sc[k]) for k in sorted(fz, key=int) if k in sc]


def report(args) -> None:
    command = command_line(args.argv)
    runs, splits_rows = _read(RESULTS / RUNS_CSV), _read(RESULTS / SPLITS_CSV)
    L = [f"Command: `{command}`", "",
         "# Experiment (b): transfer at 0.1 % labels, frozen pretrained core vs the same model from scratch", "",
         "Heads: a 64-unit MLP. Budgets (every mode trained to a training loss near zero; "
         "`atomssl.order.transfer` defaults): the head on the frozen core 3000 full-batch steps at lr 3e-3; "
         "scratch and fine-tuning all weights 1000 steps at lr 2e-3; \"many labels\": the same architecture "
         "from scratch on many more labelled environments (minibatch 1024): how well a single environment "
         "can be classified at all. Goal: frozen >= scratch + 30 points.", "",
         "## `--split wide`: 147 classes {49 held-out one-component AFLOW prototypes, sigma}", "",
         "All one-component AFLOW prototypes of pymatgen's table that are not pretraining crystals. Labelled "
         "(0.1 % of the pool) and test (3000) environments are drawn from a uniform random 80,000 of the "
         "'wide' environments (`prepare`); five label draws (seeds 0-4) per checkpoint, on one GPU. "
         "Checkpoints: small = `atomssl order pretrain --config order_pretrain`, large = `--config "
         "order_pretrain_large`.", "",
         "    OMP_NUM_THREADS=1 python benchmarks/order_transfer.py prepare --out runs/device/wide_refs.npz",
         "    # copy the two checkpoints to runs/device/{small,large}.ckpt, wheels of ase, vesin and",
         "    # geometric-algebra-attention to runs/device/whl/; on the GPU machine:",
         "    BUDGET=360 bash benchmarks/order_transfer_gpu.sh runs/device /tmp/ot",
         "    # back here, with its res/ folder:",
         "    python benchmarks/order_transfer.py collect /tmp/ot/res/*_s? --out benchmarks/results",
         "    python benchmarks/order_transfer.py plot benchmarks/results/order_transfer_converged_curve.csv \\",
         "        --out benchmarks/results/order_transfer_converged.png", ""]  # fmt: skip
    if not runs:
        L += [f"No raw record yet: awaits a run (`{RUNS_CSV}`)."]
    else:
        L += [
            "| checkpoint | mode | labelled | per draw | mean | std |",
            "|---|---|---|---|---|---|",
        ]
        cks = sorted({r["checkpoint"] for r in runs}, key=lambda c: (c != "small", c))
        for ck in cks:
            for mode in MODES:
                sel = sorted((r for r in runs if r["checkpoint"] == ck and r["mode"] == mode),
                             key=lambda r: int(r["seed"]))  # fmt: skip
                if not sel:
                    continue
                acc = np.array([float(r["accuracy"]) for r in sel])
                lab = f"{int(sel[0]['labelled']):,}"
                if mode == "scratch_many_labels":
                    L.append(
                        f"| {ck} | scratch, many labels | {lab} | {' / '.join(f'{a:.3f}' for a in acc)} | | |"
                    )
                    continue
                seeds = f"{sel[0]['seed']}-{sel[-1]['seed']}"
                bold = mode != "finetune_all"
                mean = f"**{acc.mean():.3f}**" if bold else f"{acc.mean():.3f}"
                L.append(f"| {ck} | {mode} | {lab} | {' / '.join(f'{a:.3f}' for a in acc)} (seeds {seeds}) | "
                         f"{mean} | {acc.std():.3f} |")  # fmt: skip
        gains = {ck: _gain(runs, ck) for ck in cks}
        L += ["", "frozen - scratch: " + "; ".join(
            f"{ck} **{np.mean(g):+.1f}** points ({' / '.join(f'{x:+.1f}' for x in g)})"
            for ck, g in gains.items() if g) + "."]  # fmt: skip
        best = max(gains, key=lambda c: np.mean(gains[c]) if gains[c] else -np.inf)
        sc = np.mean(
            [
                float(r["accuracy"])
                for r in runs
                if r["checkpoint"] == best and r["mode"] == "scratch"
            ]
        )
        many = [
            float(r["accuracy"])
            for r in runs
            if r["checkpoint"] == best and r["mode"] == "scratch_many_labels"
        ]
        met = np.mean(gains[best]) >= 30
        line = (f"Goal (+30) {'met' if met else 'missed'}: the best checkpoint ({best}) gains "
                f"{np.mean(gains[best]):+.1f} points; +30 needs {sc + 0.30:.3f} at 640 labels")  # fmt: skip
        if many:
            line += f", against {many[0]:.3f} for the same model from scratch with many labels"
        L += ["", line + ".", "",
              "Accuracy along training: `order_transfer_converged.png` (mean over the label draws in "
              f"`{CURVE_CSV}`). Raw rows: `{RUNS_CSV}`."]  # fmt: skip
    L += ["", "## The 18-class splits {prototype, sigma}, same budgets", "",
          "held_out: prototypes never seen in pretraining (cF8-C, cI58-Mn, cP20-Mn, tI4-Sn, hP1-Sn, hR1-Hg); "
          "training: the six pretraining prototypes (in distribution); three label draws (seeds 0-2), "
          "3000 test environments.", "",
          "    OMP_NUM_THREADS=1 python benchmarks/order_transfer.py splits \\",
          "        --checkpoint small=runs/order/pretrain/backbone.ckpt --checkpoint large=runs/order/pretrain_large/backbone.ckpt",
          ""]  # fmt: skip
    if not splits_rows:
        L += [f"No raw record yet: awaits a run of the command above (it writes `{SPLITS_CSV}`). The "
              "earlier hand-typed tables of these splits (no record file; also the superseded runs with "
              "undertrained scratch models) are in git history, commit ece8412, "
              "`benchmarks/results/order_transfer.md`."]  # fmt: skip
    else:
        L += ["| checkpoint | split | frozen_pretrained | scratch | finetune_all | frozen - scratch |",
              "|---|---|---|---|---|---|"]  # fmt: skip
        cks = sorted({r["checkpoint"] for r in splits_rows}, key=lambda c: (c != "small", c))
        for ck in cks:
            for split in ("held_out", "training"):
                cell = {}
                for mode in ("frozen_pretrained", "scratch", "finetune_all"):
                    acc = [float(r["accuracy"]) for r in splits_rows if r["checkpoint"] == ck
                           and r["split"] == split and r["mode"] == mode]  # fmt: skip
                    cell[mode] = (
                        f"{' / '.join(f'{a:.3f}' for a in acc)} = **{np.mean(acc):.3f}**"
                        if acc
                        else "-"
                    )
                g = _gain(splits_rows, ck, split=split)
                L.append(f"| {ck} | {split} | {cell['frozen_pretrained']} | {cell['scratch']} | "
                         f"{cell['finetune_all']} | {f'**{np.mean(g):+.1f}**' if g else '-'} |")  # fmt: skip
    out = report_folder(args.out)
    (out / "order_transfer.md").write_text("\n".join(L) + "\n")


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
    p = sub.add_parser("collect", help=f"{RUNS_CSV} and {CURVE_CSV} from run folders")
    p.add_argument("dirs", nargs="+", help="run folders <checkpoint>_s<seed>")
    p.add_argument("--out", default=None, help="folder (default benchmarks/results)")
    p = sub.add_parser("splits", help=f"the 18-class splits on a CPU -> {SPLITS_CSV}")
    p.add_argument("--checkpoint", action="append", required=True, help="NAME=PATH (repeat)")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    p.add_argument("--work", default="runs/order/transfer_splits")
    p.add_argument("--out", default=None, help="folder (default benchmarks/results)")
    p.add_argument("--threads", type=int, default=1)
    p = sub.add_parser("report", help="order_transfer.md from the records in benchmarks/results")
    p.add_argument("--out", default=None, help="folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    args.argv = argv
    {"prepare": prepare, "run": run, "summarise": summarise, "plot": plot, "collect": collect,
     "splits": splits, "report": report}[args.cmd](args)  # fmt: skip


if __name__ == "__main__":
    main()
