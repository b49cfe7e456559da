"""The matbench protocol: official 5 folds, per-fold scores, a results file in matbench's format.

For each fold, a validation split is carved (``data.val_fraction``, seeded by ``seed + fold``)
from the fold's *training* rows only; early stopping / ridge alpha are chosen on it, and the
test rows are predicted once by the chosen model. Nothing about the test rows is used to
choose anything.

Run folder::

    OUT/config.yaml
    OUT/fold_K/...                 the fold's training run (checkpoints, metrics.csv, parity.png of the test rows)
    OUT/fold_K/fold_result.json    written last: its presence marks the fold done (resume skips it)
    OUT/results.json               matbench record format (``MatbenchBenchmark.as_dict``): per fold
                                   ``data`` {test id: prediction}, ``scores``, ``parameters``
    OUT/scores.csv, summary.md     per-fold MAE / RMSE / MAPE / max error and mean +- std over folds
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..train._finetune import SCHEMA as FINETUNE_SCHEMA
from ..train._finetune import LabelledGraphs, prepare_config
from ..train._progress import EpochReport
from ..utils import atomic_write, dump_config, make_run_dir, write_json
from ..utils._progress import logs_above_bars, progress_bar
from ._finetune import plot_parity, train_and_predict

log = logging.getLogger(__name__)

#: matbench tasks available offline: name -> (label of the bundled dataset, matbench target name)
MATBENCH_TASKS = {"matbench_dielectric": ("n", "n")}
MATBENCH_VERSION = "0.6"
BENCHMARK_NAME = "matbench_v0.1"
RESULT_FILE = "fold_result.json"

EVAL_DEFAULTS: dict[str, Any] = {
    "data": {"val_fraction": 0.1},
    # the refractive index is positive and long-tailed: log target + L1 loss lowers the MAE
    "task": {"name": "regression", "loss": "l1", "transform": "log"},
    "run": {"root": "runs", "name": "evaluate"},
}
#: the finetune schema over these defaults (atomssl.utils._schema)
SCHEMA = FINETUNE_SCHEMA.over("evaluate", EVAL_DEFAULTS)


def _load_task(
    task: str, config: dict
) -> tuple[LabelledGraphs, list[tuple[np.ndarray, np.ndarray]]]:
    from ..data import load_dataset, matbench_folds
    from ..train._data import build_graphs
    from ._finetune import _graph_spec

    if task not in MATBENCH_TASKS:
        raise ConfigError(
            f"unknown matbench task {task!r}; available offline: {sorted(MATBENCH_TASKS)}"
        )
    from ._groups import label_columns, wanted_labels

    label = MATBENCH_TASKS[task][0]
    keys = wanted_labels(config.get("data") or {})
    structures = load_dataset(task, metadata=True) if keys else load_dataset(task)
    folds = matbench_folds(task)
    graphs, kept = build_graphs(
        structures, _graph_spec(config["backbone"]), skip_bad=False, cache_key=f"matbench:{task}"
    )
    if len(kept) != len(structures):  # pragma: no cover - skip_bad=False raises instead
        raise ConfigError(f"{task}: some structures could not be converted to graphs")
    y = np.array([s.labels[label] for s in structures], dtype=np.float64)
    ids = [s.id for s in structures]
    meta = label_columns([s.labels for s in structures], keys, task) if keys else {}
    return LabelledGraphs(list(graphs), y, ids, meta), folds


def carve_validation(
    train_idx: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split a fold's training rows into (train, validation), seeded; the test rows are never involved."""
    if not 0 < fraction < 1:
        raise ConfigError(f"data.val_fraction must be in (0, 1) for evaluate (got {fraction})")
    perm = np.random.default_rng(seed).permutation(len(train_idx))
    n_val = max(1, int(round(fraction * len(train_idx))))
    return np.sort(train_idx[perm[n_val:]]), np.sort(train_idx[perm[:n_val]])


def parse_folds(spec: str | Sequence[int] | None, n_folds: int) -> list[int]:
    if spec is None or spec == "" or spec == "all":
        return list(range(n_folds))
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    try:
        folds = sorted({int(str(f).strip()) for f in items})
    except ValueError:
        raise ConfigError(f"--folds must be comma-separated fold numbers, got {spec!r}") from None
    bad = [f for f in folds if not 0 <= f < n_folds]
    if bad:
        raise ConfigError(f"folds {bad} out of range 0..{n_folds - 1}")
    return folds


def evaluate_matbench(
    task: str,
    config: dict,
    out: str | os.PathLike | None = None,
    folds: str | Sequence[int] | None = None,
    progress: bool = True,
    dataset: tuple[LabelledGraphs, list[tuple[np.ndarray, np.ndarray]]] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the matbench folds of ``task``; returns the summary (see module docstring).

    ``dataset`` = ``(graphs with targets and ids, [(train_rows, test_rows), ...])`` replaces the
    bundled task data (other data sets with their own folds; tests).
    """
    import copy

    from ..utils._config import _merge

    config = prepare_config(_merge(_merge({}, copy.deepcopy(EVAL_DEFAULTS)), copy.deepcopy(config)))
    if out is None:
        out = make_run_dir(
            config["run"].get("root", "runs"), f"{config['run'].get('name', 'evaluate')}-{task}"
        )
    out = make_run_dir(out, exist_ok=True)
    dump_config(config, out / "config.yaml")
    n_folds = len(dataset[1]) if dataset is not None else 5
    wanted = parse_folds(folds, n_folds)
    todo = [k for k in wanted if not (out / f"fold_{k}" / RESULT_FILE).is_file()]
    for k in sorted(set(wanted) - set(todo)):
        log.info("fold %d: already done in %s, skipped", k, out / f"fold_{k}")
    if todo:
        data, splits = dataset if dataset is not None else _load_task(task, config)
        bar = progress_bar(total=len(wanted), initial=len(wanted) - len(todo), unit="fold",
                           desc=f"{task} folds", enabled=progress)  # fmt: skip
        with bar, logs_above_bars(progress):
            for i, k in enumerate(todo, start=len(wanted) - len(todo) + 1):
                train_idx, test_idx = splits[k]
                seed = int(config["seed"]) + k
                where = config["data"].get("train_where")
                if where:  # train (and validate) on the chosen groups of the fold's training rows
                    from ._groups import where_mask

                    train_idx = train_idx[where_mask(data.meta, where, len(data))[train_idx]]
                    if len(train_idx) < 2:
                        raise ConfigError(f"fold {k}: data.train_where={where!r} leaves "
                                          f"{len(train_idx)} training rows")  # fmt: skip
                tr, va = carve_validation(train_idx, float(config["data"]["val_fraction"]), seed)
                fold_cfg = {**config, "seed": seed}
                fold_dir = out / f"fold_{k}"
                log.info(
                    "fold %d: %d train, %d validation, %d test", k, len(tr), len(va), len(test_idx)
                )
                test = data.subset(test_idx)
                report = [EpochReport(bar, f"fold {k}")] if progress else []
                res = train_and_predict(fold_cfg, data.subset(tr), data.subset(va), {"test": test},
                                        fold_dir, False, callbacks=report)  # fmt: skip
                predicted = map(float, res["predictions"]["test"]["prediction"])
                result = {
                    "fold": k,
                    "task": task,
                    "data": dict(zip(test.ids, predicted)),
                    "scores": res["scores"]["test"],
                    "validation_scores": res["scores"]["val"],
                    "baseline_scores": res["scores"]["test_baseline"],
                    "parameters": {
                        "config": fold_cfg,
                        "chosen_on_validation": res["chosen"],
                        "n_train": len(tr),
                        "n_val": len(va),
                        "n_test": len(test_idx),
                    },  # fmt: skip
                    "seconds": res["seconds"],
                }
                group = config["data"].get("group_by")
                if group:
                    from ._groups import group_scores

                    result["group_by"], result["train_where"] = group, where
                    result["group_scores"] = group_scores(
                        "regression", test.y, res["predictions"]["test"], test.meta[group],
                        data.subset(tr).y)  # fmt: skip
                plot_parity(
                    fold_dir / "parity.png",
                    "regression",
                    {"test": test},
                    res["predictions"],
                    title=f"{task} fold {k} (test)",
                )
                write_json(fold_dir / RESULT_FILE, result)  # last: marks the fold done
                s = result["scores"]
                bar.update(1)
                log.info(
                    "fold %d (%d/%d): test MAE %.4f RMSE %.4f max %.4f (%.0f s)",
                    k,
                    i,
                    len(wanted),
                    s["mae"],
                    s["rmse"],
                    s["max_error"],
                    res["seconds"],
                )
    return write_results(task, out, progress)


def load_fold_results(out: str | os.PathLike) -> dict[int, dict]:
    results = {}
    for path in sorted(Path(out).glob(f"fold_*/{RESULT_FILE}")):
        r = json.loads(path.read_text())
        results[int(r["fold"])] = r
    return results


def matbench_record(
    task: str, results: dict[int, dict], user_metadata: dict | None = None
) -> dict[str, Any]:
    """``MatbenchBenchmark.as_dict()``-shaped record of the done folds (matbench's own keys)."""
    fold_entries = {
        f"fold_{k}": {"data": r["data"], "parameters": r["parameters"], "scores": r["scores"]}
        for k, r in sorted(results.items())
    }
    return {
        "@module": "matbench.bench",
        "@class": "MatbenchBenchmark",
        "version": MATBENCH_VERSION,
        "tasks": {
            task: {
                "@module": "matbench.task",
                "@class": "MatbenchTask",
                "benchmark_name": BENCHMARK_NAME,
                "dataset_name": task,
                "results": fold_entries,
            }
        },
        "user_metadata": user_metadata or {"software": "atomssl"},
        "benchmark_name": BENCHMARK_NAME,
        "datestamp": datetime.datetime.now(datetime.UTC).strftime("%Y.%m.%d %H:%M.%S"),
    }


def write_results(task: str, out: Path, progress: bool = True) -> dict[str, Any]:
    """Record file, per-fold CSV and summary table from the folds done so far."""
    results = load_fold_results(out)
    record = matbench_record(task, results)
    write_json(out / "results.json", record)
    metrics = ["mae", "rmse", "mape", "max_error"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["fold", *metrics, "baseline_mae", "val_mae", "epochs_or_alpha", "seconds"])
    for k, r in sorted(results.items()):
        chosen = r["parameters"]["chosen_on_validation"]
        w.writerow([k, *(f"{r['scores'][m]:.6g}" for m in metrics), f"{r['baseline_scores']['mae']:.6g}",
                    f"{r['validation_scores']['mae']:.6g}", chosen.get("epoch", chosen.get("alpha")), f"{r['seconds']:.0f}"])  # fmt: skip
    with atomic_write(out / "scores.csv", "w") as fh:
        fh.write(buf.getvalue())
    mean = (
        {m: float(np.mean([r["scores"][m] for r in results.values()])) for m in metrics}
        if results
        else {}
    )
    std = (
        {m: float(np.std([r["scores"][m] for r in results.values()])) for m in metrics}
        if results
        else {}
    )
    lines = [
        "| fold | MAE | RMSE | MAPE | max error | trivial MAE | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, r in sorted(results.items()):
        s = r["scores"]
        lines.append(f"| {k} | {s['mae']:.4f} | {s['rmse']:.4f} | {s['mape']:.4f} | {s['max_error']:.3f} | "
                     f"{r['baseline_scores']['mae']:.4f} | {r['seconds']:.0f} |")  # fmt: skip
    if results:
        lines.append(f"| mean ({len(results)} folds) | {mean['mae']:.4f} +- {std['mae']:.4f} | {mean['rmse']:.4f} | "
                     f"{mean['mape']:.4f} | {mean['max_error']:.3f} | | |")  # fmt: skip
    groups = _mean_group_scores(results)
    if groups:
        from ._groups import format_group_table

        first = next(iter(results.values()))
        where = f", trained on {first['train_where']}" if first.get("train_where") else ""
        lines += ["", f"test rows by {first['group_by']}{where} (mean over {len(results)} fold(s)):", "",
                  format_group_table(groups, "mae")]  # fmt: skip
    table = "\n".join(lines)
    with atomic_write(out / "summary.md", "w") as fh:
        fh.write(table + "\n")
    summary = {"task": task, "folds_done": sorted(results), "mean": mean, "std": std,
               "per_fold": {k: r["scores"] for k, r in sorted(results.items())}, "out": str(out)}  # fmt: skip
    if groups:
        summary["groups"] = groups
    write_json(out / "summary.json", summary)
    if progress:
        print(table)
    return summary


def _mean_group_scores(results: dict[int, dict]) -> dict[str, dict[str, Any]]:
    """Per group: test rows over folds, and model / trivial scores averaged over folds."""
    per = [r["group_scores"] for r in results.values() if r.get("group_scores")]
    if not per:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for g in sorted(set().union(*per)):
        rows = [p[g] for p in per if g in p]
        metrics = rows[0]["scores"]
        out[g] = {
            "n": int(sum(r["n"] for r in rows)),
            "scores": {m: float(np.mean([r["scores"][m] for r in rows])) for m in metrics},
            "baseline": {m: float(np.mean([r["baseline"][m] for r in rows])) for m in metrics},
        }
    return out
