"""matbench_dielectric (refractive index n): the official 5 folds with the shipped backbone.

Stages (``--stages``, default all), every one through the package's own code:

- ``finetune``: :func:`atomssl.evaluate.evaluate_matbench` with the packaged ``evaluate_dielectric`` config
  and ``--checkpoint`` (the shipped ``src/atomssl/weights/default.pt``), i.e. ``atomssl evaluate
  matbench_dielectric --config evaluate_dielectric --checkpoint CKPT``; copies the record
  file, the per-fold CSV and the fold-1 parity plot to ``matbench_dielectric_{results.json,scores.csv,
  parity_fold1.png}``.
- ``probe``: the same with ``mode=linear_probe`` (ridge on frozen structure embeddings), on the
  checkpoint's weights and on random weights of the same architecture -> ``matbench_dielectric_probe.csv``.
- ``map``: ``atomssl evaluate embedding-map`` of the first 2000 structures ->
  ``matbench_dielectric_embedding_map.{png,json}`` (density neighbour agreement, random-weight control).

Then ``matbench_dielectric.md`` (first line: the command) is written from those records, together with
``matbench_dielectric_history.csv``: the per-fold scores of the earlier backbones, recovered from the
record files committed with those runs (``--history-from-git`` rebuilds it with ``git show``).

    OMP_NUM_THREADS=1 python benchmarks/matbench_dielectric.py      # ~50 core-minutes on a CPU
    python benchmarks/matbench_dielectric.py --quick                # fold 0, 1 epoch, 200-structure map; a temp folder
    python benchmarks/matbench_dielectric.py --report-only          # the markdown from benchmarks/results' records
    python benchmarks/matbench_dielectric.py --history-from-git     # matbench_dielectric_history.csv from git
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
from _outputs import RESULTS, ROOT, command_line, output_folders, report_folder

CONFIG = "evaluate_dielectric"  # packaged config (atomssl.utils.resolve_config)
SHIPPED = ROOT / "src" / "atomssl" / "weights" / "default.pt"
TASK = "matbench_dielectric"
GOAL = 0.31
# Published matbench v0.1 leaderboard, matbench_dielectric, mean MAE over the 5 folds (reference values,
# not measured here): https://matbench.materialsproject.org/Leaderboards%20Per-Task/matbench_v0.1_matbench_dielectric/
LEADERBOARD = {"MODNet": 0.2711, "coGN": 0.3088, "coNGN": 0.3142, "AMMExpress": 0.3150,
               "SchNet": 0.3277, "MEGNet": 0.3391, "Dummy": 0.8088}  # fmt: skip
# Earlier runs of the same protocol: their committed record files (recovered by --history-from-git)
HISTORY = {
    "session 3": {
        "commit": "fcc62de",
        "title": "Full fine-tuning from the 30-epoch pretrained backbone (session 3)",
        "backbone": "30 epochs of edge_denoise + masked species (`src/atomssl/configs/pretrain_megnet.yaml` as "
        "committed then); same fine-tuning config",
        "commands": [
            "OMP_NUM_THREADS=1 atomssl pretrain --config pretrain_megnet --out runs/s3-pretrain-megnet",
            "OMP_NUM_THREADS=1 atomssl evaluate matbench_dielectric --config evaluate_dielectric \\",
            "    --checkpoint runs/s3-pretrain-megnet/checkpoints/best.pt --out runs/s3-mb-dielectric",
        ],
    },
    "session 2": {
        "commit": "673919a",
        "title": "Session 2: same fine-tuning, 6-epoch edge_denoise-only backbone",
        "backbone": "6 epochs of edge_denoise only on the matbench_dielectric structures (labels unused; "
        "transductive self-supervision) + 288 AFLOW prototypes",
        "commands": [
            "atomssl pretrain --config pretrain_megnet --out runs/t5-pretrain-megnet \\",
            "    'tasks=[{name: edge_denoise, weight: 1.0, sigma: 0.1, sigma_mode: relative, n_gaussians: 100}]' \\",
            "    trainer.max_epochs=6 optim.warmup_steps=50",
            "atomssl evaluate matbench_dielectric --config evaluate_dielectric \\",
            "    --checkpoint runs/t5-pretrain-megnet/checkpoints/best.pt --out runs/s2-mb-dielectric",
        ],
    },
    "session 1": {
        "commit": "29a6752",
        "title": "Session 1: 8 epochs per fold (18 min bound)",
        "backbone": "an early edge_denoise backbone; the only change since is the training length "
        "(40 epochs, patience 8)",
        "commands": [],
    },
}
HISTORY_FIELDS = ["session", "commit", "fold", "mae", "rmse", "mape", "max_error", "baseline_mae",
                  "val_mae", "best_epoch", "epochs_run", "max_epochs", "n_test", "seconds", "checkpoint"]  # fmt: skip
PROBE_FIELDS = ["embeddings", "fold", "mae", "rmse", "alpha", "seconds"]


# ------------------------------------------------------------------------------------------ runs
def eval_config(checkpoint: str, quick: bool, **extra) -> dict:
    from atomssl.utils import load_config

    cfg = load_config(CONFIG)
    cfg["backbone"].update(checkpoint=checkpoint, pretrained=True)
    if quick:
        cfg["trainer"].update(max_epochs=1, patience=0)
    for k, v in extra.items():
        if isinstance(v, dict):
            cfg.setdefault(k, {}).update(v)
        else:
            cfg[k] = v
    return cfg


def run_finetune(checkpoint: str, folds, quick: bool, out: Path, work: Path) -> None:
    from atomssl.evaluate._matbench import evaluate_matbench

    run = work / "finetune"
    evaluate_matbench(TASK, eval_config(checkpoint, quick), out=run, folds=folds, progress=True)
    shutil.copyfile(run / "results.json", out / f"{TASK}_results.json")
    shutil.copyfile(run / "scores.csv", out / f"{TASK}_scores.csv")
    if (run / "fold_1" / "parity.png").is_file():
        shutil.copyfile(run / "fold_1" / "parity.png", out / f"{TASK}_parity_fold1.png")


def run_probe(checkpoint: str, folds, quick: bool, out: Path, work: Path) -> None:
    from atomssl.evaluate._matbench import evaluate_matbench, load_fold_results

    rows = []
    for label, pretrained in (("checkpoint", True), ("random weights", False)):
        run = work / ("probe" if pretrained else "probe_random")
        cfg = eval_config(
            checkpoint, quick, mode="linear_probe", backbone={"pretrained": pretrained}
        )
        evaluate_matbench(TASK, cfg, out=run, folds=folds, progress=True)
        for k, r in sorted(load_fold_results(run).items()):
            alpha = r["parameters"]["chosen_on_validation"].get("alpha")
            rows.append({"embeddings": label, "fold": k, "mae": f"{r['scores']['mae']:.6g}",
                         "rmse": f"{r['scores']['rmse']:.6g}", "alpha": alpha, "seconds": f"{r['seconds']:.0f}"})  # fmt: skip
    with open(out / f"{TASK}_probe.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=PROBE_FIELDS)
        w.writeheader()
        w.writerows(rows)


def run_map(checkpoint: str, quick: bool, out: Path) -> None:
    from atomssl.analysis import embedding_map_figure

    limit = 200 if quick else 2000
    res = embedding_map_figure(checkpoint, out / f"{TASK}_embedding_map.png", limit=limit)
    record = {k: v for k, v in res.items() if k != "xy"}
    record["checkpoint"] = _rel(checkpoint)
    (out / f"{TASK}_embedding_map.json").write_text(json.dumps(record, indent=1) + "\n")


def _rel(path) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(path)


def history_from_git(out: Path) -> None:
    """``matbench_dielectric_history.csv`` from the record files committed with the earlier runs."""
    rows = []
    for session, h in HISTORY.items():

        def show(name, commit=h["commit"]):
            return subprocess.run(["git", "show", f"{commit}:benchmarks/results/{name}"], cwd=ROOT,
                                  check=True, capture_output=True, text=True).stdout  # fmt: skip

        scores = {
            int(r["fold"]): r for r in csv.DictReader(show(f"{TASK}_scores.csv").splitlines())
        }
        record = json.loads(show(f"{TASK}_results.json"))["tasks"][TASK]["results"]
        for key, fold in sorted(record.items()):
            k = int(key.split("_")[1])
            par, s = fold["parameters"], scores[k]
            rows.append({"session": session, "commit": h["commit"], "fold": k, **{m: s[m] for m in
                         ("mae", "rmse", "mape", "max_error", "baseline_mae", "val_mae")},
                         "best_epoch": par["chosen_on_validation"]["epoch"],
                         "epochs_run": par["chosen_on_validation"]["epochs_run"],
                         "max_epochs": par["config"]["trainer"]["max_epochs"], "n_test": par["n_test"],
                         "seconds": s["seconds"], "checkpoint": par["config"]["backbone"]["checkpoint"]})  # fmt: skip
    with open(out / f"{TASK}_history.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=HISTORY_FIELDS)
        w.writeheader()
        w.writerows(rows)


# ---------------------------------------------------------------------------------------- report
def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _fold_rows(records: Path) -> list[dict]:
    """Per fold of the current run: scores, trivial MAE, chosen epoch, seconds."""
    rec = json.loads((records / f"{TASK}_results.json").read_text())["tasks"][TASK]["results"]
    scores = {int(r["fold"]): r for r in _read_csv(records / f"{TASK}_scores.csv")}
    rows = []
    for key, fold in sorted(rec.items()):
        k = int(key.split("_")[1])
        par, s = fold["parameters"], fold["scores"]
        rows.append({"fold": k, **{m: float(s[m]) for m in ("mae", "rmse", "mape", "max_error")},
                     "baseline_mae": float(scores[k]["baseline_mae"]),
                     "best_epoch": int(par["chosen_on_validation"]["epoch"]),
                     "epochs_run": int(par["chosen_on_validation"]["epochs_run"]),
                     "max_epochs": int(par["config"]["trainer"]["max_epochs"]),
                     "n_test": int(par["n_test"]), "seconds": float(scores[k]["seconds"]),
                     "checkpoint": par["config"]["backbone"]["checkpoint"]})  # fmt: skip
    return rows


def _fold_table(rows: list[dict], epochs_run: bool = True) -> list[str]:
    head = "best epoch (0-based) of epochs run" if epochs_run else "best epoch (0-based)"
    lines = [f"| fold | MAE | RMSE | MAPE | max error | trivial MAE (train mean) | {head} | seconds |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        ep = f"{r['best_epoch']}"
        if epochs_run:
            stop = " (early stop)" if r["epochs_run"] < r["max_epochs"] else ""
            ep += f" of {r['epochs_run']}{stop}"
        lines.append(f"| {r['fold']} | {r['mae']:.4f} | {r['rmse']:.4f} | {r['mape']:.4f} | "
                     f"{r['max_error']:.2f} | {r['baseline_mae']:.4f} | {ep} | {r['seconds']:.0f} |")  # fmt: skip
    mae = np.array([r["mae"] for r in rows])
    mean = {m: np.mean([r[m] for r in rows]) for m in ("rmse", "mape", "max_error", "baseline_mae")}
    lines.append(f"| **mean** | **{mae.mean():.4f} +- {mae.std():.4f}** | {mean['rmse']:.4f} | "
                 f"{mean['mape']:.4f} | {mean['max_error']:.2f} | {mean['baseline_mae']:.4f} | | |")  # fmt: skip
    return lines


def _leaderboard_place(mae: float) -> str:
    below = [k for k, v in LEADERBOARD.items() if v > mae and k != "Dummy"]
    above = [k for k, v in LEADERBOARD.items() if v <= mae]
    return (f"ahead of {', '.join(f'{k} ({LEADERBOARD[k]:.4f})' for k in below) or 'no leaderboard entry'}; "
            f"{', '.join(f'{k} ({LEADERBOARD[k]:.4f})' for k in above) or 'none'} ahead of it")  # fmt: skip


def markdown(command: str, records: Path) -> str:
    rows = _fold_rows(records)
    mae = np.array([r["mae"] for r in rows])
    hist = _read_csv(records / f"{TASK}_history.csv")
    shipped = json.loads((SHIPPED.with_suffix(".json")).read_text())
    tasks = {t["task"]: t for t in shipped["tasks"]}
    cfg = json.loads((records / f"{TASK}_results.json").read_text())["tasks"][TASK]["results"]
    cfg = cfg["fold_0"]["parameters"]["config"]  # the run's own config (fold 0's seed)
    tr, bb = cfg["trainer"], shipped["backbone"]
    d, h, mi, se = (int(x) for x in tr["max_time"].split(":"))
    bound = d * 1440 + h * 60 + mi + se / 60
    L = [f"Command: `{command}`", "",
         "# matbench_dielectric (refractive index n): official 5 folds", "",
         "Target: n (MAE on n). Protocol: matbench v0.1 folds (`atomssl.data.matbench_folds`); per fold "
         f"{100 * cfg['data']['val_fraction']:.0f}% of the fold's *training* rows (seed {cfg['seed']} + fold) "
         "are held out for early stopping; the test rows are predicted once, with the weights of the best "
         f"validation epoch. Record file in matbench's format: `{TASK}_results.json` (per fold: predictions "
         f"keyed by test id, scores, parameters); per-fold CSV: `{TASK}_scores.csv`; test parity plot of "
         f"fold 1: `{TASK}_parity_fold1.png`.", "",
         f"Model: MEGNet at the matgl reference size ({bb['n_blocks']} blocks, dense "
         f"{'-'.join(map(str, bb['dense']))}, conv {'-'.join(map(str, bb['conv']))}, cutoff {bb['cutoff']:g} A, "
         f"{shipped['parameters']} parameters) initialised from the checkpoint, full fine-tuning, head = its own {cfg['task']['readout']} readout over atoms and bonds "
         f"+ the backbone embedding -> MLP {'-'.join(map(str, cfg['task']['hidden']))} -> log n, "
         f"{cfg['task']['loss'].upper()} loss, AdamW {cfg['optim']['lr']:g} with {cfg['optim']['scheduler']} "
         f"decay, batch {cfg['data']['batch_size']}, at most {tr['max_epochs']} epochs (patience "
         f"{tr['patience']} on validation MAE, {bound:g} min bound per fold; `--config evaluate_dielectric`).",
         "",
         f"## Full fine-tuning from `{rows[0]['checkpoint']}`: mean MAE {mae.mean():.4f} "
         f"(goal <= {GOAL} {'met' if mae.mean() <= GOAL else 'missed'})", ""]  # fmt: skip
    L += _fold_table(rows)
    worst = max(rows, key=lambda r: r["max_error"])
    L += ["", f"Backbone: the shipped `src/atomssl/weights/default.pt` (best validation loss after "
          f"{shipped['epochs']} epochs of `"
          f"{shipped['command']}`); validation edge_denoise {tasks['edge_denoise']['reached']:.3f} vs "
          f"{tasks['edge_denoise']['baseline']:.3f} baseline, mask {tasks['mask']['reached']:.3f} vs "
          f"{tasks['mask']['baseline']:.3f} (`src/atomssl/weights/default.json`). Leaderboard (published "
          f"values, below): {_leaderboard_place(mae.mean())}.",
          "",
          f"Long-tailed targets: max errors {min(r['max_error'] for r in rows):.0f}-"
          f"{max(r['max_error'] for r in rows):.0f}; fold {worst['fold']}'s single worst row alone adds "
          f"{worst['max_error'] / worst['n_test']:.3f} to that fold's MAE. "
          f"{sum(r['seconds'] for r in rows) / 60:.0f} core-minutes of fine-tuning in all (one thread per fold).",
          "", "Reproduce (resumable: folds with `fold_K/fold_result.json` in the work folder are skipped):", "",
          "    OMP_NUM_THREADS=1 python benchmarks/matbench_dielectric.py --stages finetune",
          "    # = atomssl evaluate matbench_dielectric --config evaluate_dielectric \\",
          "    #       --checkpoint src/atomssl/weights/default.pt --out runs/matbench_dielectric/finetune"]  # fmt: skip
    # earlier backbones
    current = {r["fold"]: r["mae"] for r in rows}
    for session, h in HISTORY.items():
        sel = [r for r in hist if r["session"] == session]
        L += ["", f"## {h['title']}", ""]
        if not sel:
            L += [f"Awaits `python benchmarks/matbench_dielectric.py --history-from-git` (record files of "
                  f"commit {h['commit']})."]  # fmt: skip
            continue
        hr = [{**{k: float(r[k]) for k in ("mae", "rmse", "mape", "max_error", "baseline_mae", "seconds")},
               **{k: int(r[k]) for k in ("fold", "best_epoch", "epochs_run", "max_epochs", "n_test")}}
              for r in sel]  # fmt: skip
        m = np.mean([r["mae"] for r in hr])
        L[-2] = f"## {h['title']}: mean MAE {m:.4f}"
        L += _fold_table(hr)
        diff = [r["mae"] - current[r["fold"]] for r in hr if r["fold"] in current]
        better = sum(d > 0 for d in diff)
        L += ["", f"Backbone: {h['backbone']}. Scores from the record files committed with the run "
              f"(commit {h['commit']}; `{TASK}_history.csv`). The shipped backbone above is better in "
              f"{better} of {len(diff)} folds (by {min(diff):+.4f} to {max(diff):+.4f} MAE); leaderboard: "
              f"{_leaderboard_place(m)}."]  # fmt: skip
        last = sum(r["epochs_run"] - r["best_epoch"] <= 2 for r in hr)
        L[-1] += f" Best epoch within the last 2 epochs run in {last} of {len(hr)} folds."
        if h["commands"]:
            L += ["", *(f"    {c}" for c in h["commands"])]
    L += ["", "## Leaderboard for scale (published matbench v0.1 values, not measured here)", "",
          "| model | mean MAE |", "|---|---|",
          *(f"| {k} | {v:.4f} |" for k, v in LEADERBOARD.items()),
          f"| **this run (shipped backbone)** | **{mae.mean():.4f}** |"]  # fmt: skip
    # linear probes
    probe = _read_csv(records / f"{TASK}_probe.csv")
    L += [
        "",
        "## Linear probes (ridge on frozen structure embeddings, alpha chosen on validation)",
        "",
    ]
    if probe:
        kinds = list(dict.fromkeys(r["embeddings"] for r in probe))
        folds = sorted({int(r["fold"]) for r in probe})
        L += ["| embeddings | " + " | ".join(f"fold {k}" for k in folds) + " | mean MAE |",
              "|---" * (len(folds) + 2) + "|"]  # fmt: skip
        means = {}
        for kind in kinds:
            v = {int(r["fold"]): float(r["mae"]) for r in probe if r["embeddings"] == kind}
            means[kind] = np.array([v[k] for k in folds])
            L.append(f"| {kind} | " + " | ".join(f"{v[k]:.4f}" for k in folds)
                     + f" | {means[kind].mean():.4f} +- {means[kind].std():.4f} |")  # fmt: skip
        if {"checkpoint", "random weights"} <= set(means):
            a, b = means["checkpoint"], means["random weights"]
            L += ["", f"The checkpoint's embeddings give a {100 * (1 - a.mean() / b.mean()):.1f}% lower probe "
                  f"MAE than random weights, better in {int((a < b).sum())} of {len(a)} folds."]  # fmt: skip
    else:
        L += ["No raw record yet: awaits a re-run (`python benchmarks/matbench_dielectric.py --stages "
              "probe`, which writes `matbench_dielectric_probe.csv`). The earlier hand-typed probe table "
              "(no record file) is in git history, commit 8ea88a0."]  # fmt: skip
    # embedding map
    emap = records / f"{TASK}_embedding_map.json"
    L += ["", "## Embedding map", ""]
    if emap.is_file():
        e = json.loads(emap.read_text())
        L += [f"`{TASK}_embedding_map.png`: {e['method'].upper()} of the structure embeddings of the first "
              f"{e['n']} structures (`{e['checkpoint']}`), coloured by density. Correlation between a "
              f"structure's density and the mean density of its 10 nearest neighbours: r = "
              f"{e['agreement']:.3f} in the full embedding ({e['agreement_2d']:.3f} in the 2D projection); "
              f"the same architecture with random weights: r = {e['agreement_random']:.3f}."]  # fmt: skip
    else:
        L += [f"`{TASK}_embedding_map.png`: 2D map of the shipped backbone's structure embeddings of the first "
              "2000 structures, coloured by density (`atomssl evaluate embedding-map --checkpoint "
              "src/atomssl/weights/default.pt --limit 2000`). Its density neighbour agreement has no raw "
              "record yet: awaits a re-run (`python benchmarks/matbench_dielectric.py --stages map`, which "
              f"writes `{TASK}_embedding_map.json`)."]  # fmt: skip
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(SHIPPED))
    p.add_argument("--stages", default="finetune,probe,map")
    p.add_argument("--folds", default=None, help="default: all 5 (--quick: 0)")
    p.add_argument("--work", default=str(ROOT / "runs" / "matbench_dielectric"))
    p.add_argument("--out", default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--report-only", action="store_true",
                   help="only write the markdown (into --out) from the records in benchmarks/results")  # fmt: skip
    p.add_argument("--history-from-git", action="store_true",
                   help=f"only rebuild {TASK}_history.csv (into --out) from the committed record files")  # fmt: skip
    args = p.parse_args(argv)
    command = command_line(argv)
    if args.report_only or args.history_from_git:
        out = report_folder(args.out)
        if args.history_from_git:
            history_from_git(out)
            return 0
        (out / f"{TASK}.md").write_text(markdown(command, RESULTS))
        return 0
    out, work = output_folders(args.quick, args.out, args.work, "matbench-dielectric")
    folds = args.folds or ("0" if args.quick else None)
    stages = args.stages.split(",")
    if "finetune" in stages:
        run_finetune(args.checkpoint, folds, args.quick, out, work)
    if "probe" in stages:
        run_probe(args.checkpoint, folds, args.quick, out, work)
    if "map" in stages:
        run_map(args.checkpoint, args.quick, out)
    if not (out / f"{TASK}_history.csv").is_file() and (RESULTS / f"{TASK}_history.csv").is_file():
        shutil.copyfile(RESULTS / f"{TASK}_history.csv", out / f"{TASK}_history.csv")
    if (out / f"{TASK}_results.json").is_file():
        (out / f"{TASK}.md").write_text(markdown(command, out))
        print((out / f"{TASK}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
