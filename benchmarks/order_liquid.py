"""Experiment (a) of the order issue: liquid-frame classification, lj_fcc vs ipl6, per-particle ROC AUC.

Two LAMMPS crystallisation trajectories that will form different crystals (Lennard-Jones -> fcc and
soft spheres n = 6 -> bcc) are told apart from their *liquid* frames (before the ten Wolde onset), per
particle, by the same classifiers (logistic regression, MLP, gradient boosting) on SSL embeddings, on
Steinhardt features and on radial controls (:func:`atomssl.order.liquid_classification`). Every step is
the package's own command, run in this process:

    atomssl data simulate simulate_lj_fcc --out WORK/sim/lj_fcc_seed1.extxyz      (~15 min each)
    atomssl data simulate simulate_ipl6 --out WORK/sim/ipl6_seed1.extxyz
    atomssl order pretrain --config order_pretrain --out WORK/pretrain              (small, ~20 s)
    atomssl order pretrain --config order_pretrain_large --out WORK/pretrain_large  (large, ~25 min)
    atomssl order liquid WORK/sim/lj_fcc_seed1.extxyz WORK/sim/ipl6_seed1.extxyz --names lj_fcc,ipl6 \\
        --checkpoint WORK/pretrain{,_large}/backbone.ckpt --out WORK/liquid_<checkpoint>_seed<seed> [--seed S]

for (small, seed 0), (large, seed 0), (large, seed 1); finished steps are reused from ``--work``. The
AUCs of every run go to the raw record ``order_liquid_auc.csv`` (one row per checkpoint, seed, feature
set and classifier), the ROC curves of the first large run to ``order_liquid_roc.png``, and
``order_liquid_auc.md`` (first line: the command) is written from the record.

    OMP_NUM_THREADS=1 python benchmarks/order_liquid.py          # about an hour on one CPU core
    python benchmarks/order_liquid.py --report-only [--out DIR]  # the markdown from the committed record
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

from _outputs import RESULTS, ROOT, command_line, report_folder  # benchmarks/ is on sys.path

RECORD = "order_liquid_auc.csv"
FIELDS = ["checkpoint", "seed", "pair", "features", "classifier", "n_features", "train_particles",
          "test_particles", "roc_auc"]  # fmt: skip
RUNS = (("small", 0), ("large", 0), ("large", 1))
CONFIGS = {"small": "order_pretrain", "large": "order_pretrain_large"}
TRAJECTORIES = {"lj_fcc": "simulate_lj_fcc", "ipl6": "simulate_ipl6"}


def atomssl(*args: str) -> None:
    from atomssl.cli.main import main

    print("atomssl " + " ".join(args), flush=True)
    if main(list(args)) != 0:
        raise SystemExit(f"atomssl {' '.join(args)} failed")


def run(work: Path, runs, out: Path) -> None:
    sim = work / "sim"
    sim.mkdir(parents=True, exist_ok=True)
    traj = {}
    for name, config in TRAJECTORIES.items():
        traj[name] = sim / f"{name}_seed1.extxyz"
        if not traj[name].is_file():
            atomssl("data", "simulate", config, "--out", str(traj[name]))
    rows = []
    for ck, seed in runs:
        folder = work / ("pretrain" if ck == "small" else f"pretrain_{ck}")
        if not (folder / "backbone.ckpt").is_file():
            atomssl("order", "pretrain", "--config", CONFIGS[ck], "--out", str(folder), "-q")
        res = work / f"liquid_{ck}_seed{seed}"
        if not (res / "liquid_auc.csv").is_file():
            atomssl("order", "liquid", *map(str, traj.values()), "--names", ",".join(traj),
                    "--checkpoint", str(folder / "backbone.ckpt"), "--out", str(res),
                    "--seed", str(seed), "-q")  # fmt: skip
        with open(res / "liquid_auc.csv") as fh:
            rows += [{"checkpoint": ck, "seed": seed, **r} for r in csv.DictReader(fh)]
    with open(out / RECORD, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    first_large = next((r for r in runs if r[0] == "large"), runs[0])
    shutil.copyfile(work / f"liquid_{first_large[0]}_seed{first_large[1]}" / "liquid_roc.png",
                    out / "order_liquid_roc.png")  # fmt: skip


def markdown(command: str, records: Path) -> str:
    L = [f"Command: `{command}`", "",
         "# Experiment (a): liquid-frame classification, lj_fcc vs ipl6 (per-particle ROC AUC)", "",
         "Up to 10 liquid frames per trajectory (before the ten Wolde onset, margin 3 frames), 300 sampled "
         "particles per frame, even frames train, odd frames test. Same classifiers on every feature set. "
         "Trajectories: `atomssl data simulate simulate_lj_fcc` / `simulate_ipl6`. Checkpoints: small = "
         "`atomssl order pretrain --config order_pretrain` (gaa width 16 x 1 block, 240 steps), large = "
         "`--config order_pretrain_large` (width 32 x 2 blocks, 5000 steps x 128). Feature sets: "
         "`ssl_embedding` (per-particle output), `ssl_blocks` (plus each block's invariants), "
         "`ssl_averaged` (embedding averaged over the particle and its 12 neighbours; every particle of "
         "the frame is embedded for it), `radial_distances` (12 sorted normalised neighbour distances: "
         "angle-blind), `radial_averaged` (those averaged like `ssl_averaged`), Steinhardt q4, q6, w6 "
         "plain / neighbour-averaged / all.", "",
         "Commands: see `benchmarks/order_liquid.py` (every step is an `atomssl` command).", ""]  # fmt: skip
    path = records / RECORD
    if not path.is_file():
        L += [f"No raw record yet: awaits a run of `OMP_NUM_THREADS=1 python benchmarks/order_liquid.py` "
              f"(it writes `{RECORD}` and `order_liquid_roc.png`). The earlier hand-typed tables (no "
              "record file) are in git history, commit 4b0bad6, `benchmarks/results/order_liquid_auc.md`; "
              "`order_liquid_roc.png` in this folder is from those runs."]  # fmt: skip
        return "\n".join(L) + "\n"
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    cols = list(dict.fromkeys((r["checkpoint"], r["seed"]) for r in rows))
    keys = list(dict.fromkeys((r["features"], r["classifier"]) for r in rows))
    auc = {
        (r["checkpoint"], r["seed"], r["features"], r["classifier"]): float(r["roc_auc"])
        for r in rows
    }
    nf = {}
    for r in rows:
        nf.setdefault(r["features"], {})[r["checkpoint"]] = r["n_features"]
    cks = list(dict.fromkeys(c for c, _ in cols))
    L += [f"| features | classifier | n_features ({' / '.join(cks)}) | "
          + " | ".join(f"{c}, seed {s}" for c, s in cols) + " |", "|---" * (len(cols) + 3) + "|"]  # fmt: skip
    for f, c in keys:  # the record's order: classifiers, then feature sets
        cells = [
            f"{auc[(ck, s, f, c)]:.3f}" if (ck, s, f, c) in auc else "not run" for ck, s in cols
        ]
        L.append(
            f"| {f} | {c} | {' / '.join(nf[f].get(ck, '-') for ck in cks)} | {' | '.join(cells)} |"
        )
    L += ["", "Per run, best of the three classifiers:", "",
          "| run | best SSL set | best Steinhardt set | best radial set |", "|---|---|---|---|"]  # fmt: skip
    for ck, s in cols:

        def best(prefix, ck=ck, s=s):
            got = {k: v for k, v in auc.items() if k[:2] == (ck, s) and k[2].startswith(prefix)}
            if not got:
                return "-"
            k = max(got, key=got.get)
            return f"{got[k]:.3f} ({k[2]}, {k[3]})"

        L.append(f"| {ck}, seed {s} | {best('ssl')} | {best('steinhardt')} | {best('radial')} |")
    ssl = [v for k, v in auc.items() if k[2] == "ssl_averaged"]
    rad = [v for k, v in auc.items() if k[2] == "radial_averaged"]
    if ssl and rad:
        L += ["", f"Averaged features: ssl_averaged {min(ssl):.3f}-{max(ssl):.3f}, radial_averaged "
              f"{min(rad):.3f}-{max(rad):.3f} over every run and classifier (the angle-blind control; "
              "where it matches ssl_averaged, the pair separates by radial information, not angular order)."]  # fmt: skip
    L += ["", f"ROC curves (first large run): `order_liquid_roc.png`. Raw rows: `{RECORD}`."]
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=str(ROOT / "runs" / "order_liquid"))
    p.add_argument(
        "--out", default=None, help="folder of the record and report (default benchmarks/results)"
    )
    p.add_argument("--report-only", action="store_true",
                   help="only write the markdown (into --out) from benchmarks/results/order_liquid_auc.csv")  # fmt: skip
    args = p.parse_args(argv)
    command = command_line(argv)
    out = report_folder(args.out)
    if not args.report_only:
        import torch

        torch.set_num_threads(1)
        run(Path(args.work), RUNS, out)
    records = RESULTS if args.report_only else out
    (out / "order_liquid_auc.md").write_text(markdown(command, records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
