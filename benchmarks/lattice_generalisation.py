"""Lattice-type generalisation on matbench_dielectric (issue 25, item 3; seed 002's inset table).

Fine-tune on the *cubic* crystals of one official fold's training rows only, test on all of that
fold's test rows grouped by crystal system (the table's own ``crystal_sys`` column, which equals
spglib's at symprec 0.01): does pretraining help on lattice types never seen in fine-tuning?

Arms, every one through ``atomssl evaluate`` with ``src/atomssl/configs/evaluate_dielectric.yaml`` (the same
budget rule for all: at most 40 epochs, early stopping with patience 8 on a validation split carved
from the arm's own training rows, 30 min cap):

- ``pretrained, cubic``: the shipped backbone (``--checkpoint``), ``data.train_where=crystal_sys==cubic``;
- ``scratch, cubic``: the same architecture, random weights, same rows;
- ``pretrained, all systems``: the in-distribution reference, trained on every training row.

Cubic arms run ``--seeds`` times (seed = initialisation and validation carve); the reference once.
Outputs ``lattice_generalisation.md`` (first line: the command), ``.json`` and ``.png`` (MAE per
crystal system, mean +- std over seeds) in ``--out`` (default ``benchmarks/results``); run folders
under ``--work`` (resumable: a finished arm is read back, not rerun). ``--quick`` (2 epochs, one
seed, a temporary folder; never ``benchmarks/results``) is the smoke test.

    nice .venv/bin/python benchmarks/lattice_generalisation.py     # ~10 min per cubic arm, ~20 for the reference, 1 core
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _outputs import ROOT, command_line, output_folders  # benchmarks/ is on sys.path

CONFIG = ROOT / "src" / "atomssl" / "configs" / "evaluate_dielectric.yaml"
SYSTEMS = (
    "cubic",
    "tetragonal",
    "orthorhombic",
    "hexagonal",
    "trigonal",
    "monoclinic",
    "triclinic",
)


def run_arm(name: str, config: dict, fold: int, work: Path) -> dict:
    from atomssl.evaluate._matbench import evaluate_matbench

    out = work / name
    t0 = time.perf_counter()
    summary = evaluate_matbench(
        "matbench_dielectric", config, out=out, folds=[fold], progress=False
    )
    result = json.loads((out / f"fold_{fold}" / "fold_result.json").read_text())
    return {"arm": name, "groups": summary["groups"], "mae": summary["mean"]["mae"],
            "n_train": result["parameters"]["n_train"], "n_val": result["parameters"]["n_val"],
            "chosen": result["parameters"]["chosen_on_validation"], "seconds": result["seconds"],
            "wall_seconds_this_call": time.perf_counter() - t0}  # fmt: skip


def arms(checkpoint: str, seeds: list[int], quick: bool) -> list[tuple[str, str, dict]]:
    from atomssl.utils import load_config

    base = load_config(str(CONFIG))
    base["data"]["group_by"] = "crystal_sys"
    if quick:
        base["trainer"].update(max_epochs=2, patience=0)
    out = []
    for seed in seeds:
        for variant, pretrained in (("pretrained", True), ("scratch", False)):
            cfg = json.loads(json.dumps(base))
            cfg["seed"] = seed
            cfg["data"]["train_where"] = "crystal_sys==cubic"
            cfg["backbone"].update(checkpoint=checkpoint, pretrained=pretrained)
            out.append((f"{variant}_cubic", f"{variant}_cubic_seed{seed}", cfg))
    ref = json.loads(json.dumps(base))
    ref["seed"] = seeds[0]
    ref["backbone"].update(checkpoint=checkpoint, pretrained=True)
    out.append(("pretrained_all", f"pretrained_all_seed{seeds[0]}", ref))
    return out


def summarise(runs: list[dict]) -> dict:
    by_arm: dict[str, list[dict]] = {}
    for r in runs:
        by_arm.setdefault(r["kind"], []).append(r)
    table = {}
    for kind, rs in by_arm.items():
        table[kind] = {}
        for g in SYSTEMS:
            vals = [r["groups"][g]["scores"]["mae"] for r in rs if g in r["groups"]]
            if vals:
                table[kind][g] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n_seeds": len(vals),
                                  "n_test": rs[0]["groups"][g]["n"],
                                  "trivial": float(np.mean([r["groups"][g]["baseline"]["mae"] for r in rs]))}  # fmt: skip
    wins = [g for g in SYSTEMS[1:] if g in table.get("pretrained_cubic", {}) and g in table.get("scratch_cubic", {})
            and table["pretrained_cubic"][g]["mean"] < table["scratch_cubic"][g]["mean"]]  # fmt: skip
    return {
        "table": table,
        "non_cubic_wins_of_pretrained": wins,
        "goal": ">= 5 of 6 non-cubic systems",
    }


def write_report(out: Path, command: str, runs: list[dict], summary: dict, meta: dict) -> None:
    t = summary["table"]
    lines = [f"Command: `{command}`", "",
             "# Lattice-type generalisation: fine-tuned on cubic crystals only, tested per crystal system", "",
             f"matbench_dielectric fold {meta['fold']}; test rows grouped by the table's `crystal_sys`. Budget rule (every arm): "
             "`src/atomssl/configs/evaluate_dielectric.yaml` (<= 40 epochs, early stopping patience 8 on a validation split of the "
             "arm's own training rows, 30 min cap). Cubic arms: mean +- std over seeds "
             f"{meta['seeds']}; the all-systems reference: one seed. Trivial: the mean n of the arm's training rows.", "",
             "| crystal system | test rows | pretrained, cubic | scratch, cubic | pretrained, all systems | trivial (cubic mean) |",
             "|---|---|---|---|---|---|"]  # fmt: skip

    def cell(kind, g):
        r = t.get(kind, {}).get(g)
        if r is None:
            return "-"
        return f"{r['mean']:.4f}" + (f" +- {r['std']:.4f}" if r["n_seeds"] > 1 else "")

    for g in SYSTEMS:
        n = next((t[k][g]["n_test"] for k in t if g in t[k]), 0)
        triv = t.get("pretrained_cubic", {}).get(g, {}).get("trivial")
        lines.append(f"| {g} | {n} | {cell('pretrained_cubic', g)} | {cell('scratch_cubic', g)} | "
                     f"{cell('pretrained_all', g)} | {'-' if triv is None else f'{triv:.4f}'} |")  # fmt: skip
    wins = summary["non_cubic_wins_of_pretrained"]
    lines += ["", f"Pretrained beats scratch (both trained on cubic only) in {len(wins)} of 6 non-cubic systems "
              f"({', '.join(wins) or 'none'}); goal {summary['goal']}.", "",
              "| run | training rows | validation rows | chosen | seconds |", "|---|---|---|---|---|"]  # fmt: skip
    for r in runs:
        lines.append(f"| {r['name']} | {r['n_train']} | {r['n_val']} | {r['chosen'].get('epoch')} of "
                     f"{r['chosen'].get('epochs_run')} epochs | {r['seconds']:.0f} |")  # fmt: skip
    lines += ["", f"Plot: `{meta['plot']}`. Machine: {meta['machine']}."]
    (out / "lattice_generalisation.md").write_text("\n".join(lines) + "\n")
    (out / "lattice_generalisation.json").write_text(
        json.dumps({"command": command, **meta, **summary, "runs": runs}, indent=1)
    )


def plot(path: Path, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = summary["table"]
    kinds = [("pretrained_cubic", "pretrained, cubic only"), ("scratch_cubic", "scratch, cubic only"),
             ("pretrained_all", "pretrained, all systems")]  # fmt: skip
    x = np.arange(len(SYSTEMS))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for j, (k, label) in enumerate(kinds):
        m = [t.get(k, {}).get(g, {}).get("mean", np.nan) for g in SYSTEMS]
        s = [t.get(k, {}).get(g, {}).get("std", 0.0) for g in SYSTEMS]
        ax.bar(x + (j - 1) * 0.27, m, 0.27, yerr=s, label=label, capsize=2)
    ax.set_xticks(x, SYSTEMS, rotation=20, fontsize=8)
    ax.set_ylabel("test MAE (refractive index)")
    ax.set_title(
        "matbench_dielectric: trained on cubic crystals, tested per crystal system", fontsize=9
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(ROOT / "src" / "atomssl" / "weights" / "default.pt"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--work", default=str(ROOT / "runs" / "lattice"))
    p.add_argument("--out", default=None)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    command = command_line(argv)
    seeds = [int(s) for s in args.seeds.split(",")][: 1 if args.quick else None]
    out, work = output_folders(args.quick, args.out, args.work, "lattice")
    runs = []
    for kind, name, cfg in arms(args.checkpoint, seeds, args.quick):
        print(f"{name} ...", flush=True)
        r = run_arm(name, cfg, args.fold, work)
        r.update(kind=kind, name=name)
        runs.append(r)
        print(f"{name}: MAE {r['mae']:.4f} ({r['seconds']:.0f} s)", flush=True)
    summary = summarise(runs)
    import platform

    meta = {"fold": args.fold, "seeds": seeds, "plot": "lattice_generalisation.png",
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, CPU"}  # fmt: skip
    plot(out / "lattice_generalisation.png", summary)
    write_report(out, command, runs, summary, meta)
    print((out / "lattice_generalisation.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
