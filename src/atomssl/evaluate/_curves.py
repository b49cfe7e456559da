"""Learning curves: pretrained vs scratch at several label budgets, several seeds, same budget.

Protocol (matbench task, default ``matbench_dielectric``): the training pool is the training
part of one official fold, the test set its test part (optionally a fixed random subset of
``test_limit`` rows, the same for every run). For a budget of ``size`` labels and a seed, ``size``
rows are drawn from the pool; ``val_fraction`` of them (at least 1) are held out for early
stopping, the rest train. The *pretrained* and *scratch* runs of a (size, seed) see exactly the
same rows, the same architecture (the scratch model is built from the checkpoint's config
without loading its weights), the same optimiser, epochs and patience. ``size="all"`` uses the
whole pool.

Output folder::

    OUT/runs.csv            one row per (size, seed, variant): test MAE/RMSE, epochs, seconds (resumable)
    OUT/learning_curves.md  mean +- std test MAE per size and variant, relative gain, wins
    OUT/learning_curves.png test MAE vs labels (log-log), mean +- std over seeds
    OUT/summary.json        the same numbers + the count of (size, seed) settings won by pretraining
"""

from __future__ import annotations

import contextlib
import copy
import csv
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..train._progress import EpochReport
from ..utils import atomic_write, dump_config, make_run_dir, save_figure, write_csv, write_json
from ..utils._progress import logs_above_bars, progress_bar, show
from ._finetune import prepare_config, train_and_predict
from ._matbench import EVAL_DEFAULTS, _load_task

log = logging.getLogger(__name__)

DEFAULT_SIZES: tuple = (50, 100, 250, 500, 1000, 2000, "all")
VARIANTS = ("pretrained", "scratch")
FIELDS = [
    "size",
    "seed",
    "variant",
    "n_train",
    "n_val",
    "mae",
    "rmse",
    "max_error",
    "val_mae",
    "epoch",
    "seconds",
]


def parse_sizes(spec: str | Sequence | None) -> list:
    if spec is None:
        return list(DEFAULT_SIZES)
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list = []
    for s in items:
        s = str(s).strip()
        if s == "all":
            out.append("all")
        else:
            try:
                v = int(s)
            except ValueError:
                raise ConfigError(f"sizes must be integers or 'all', got {s!r}") from None
            if v < 2:
                raise ConfigError(
                    f"a training size needs at least 2 labels (train + validation), got {v}"
                )
            out.append(v)
    return out


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def learning_curves(
    config: dict,
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    sizes: str | Sequence | None = None,
    seeds: str | Sequence[int] = (0, 1, 2),
    task: str = "matbench_dielectric",
    fold: int = 0,
    test_limit: int | None = None,
    variants: Sequence[str] = VARIANTS,
    progress: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """Run the missing (size, seed, variant) runs and rewrite the table and plot (see module docstring).

    ``progress``: a bar over the runs (with the epoch of the run in progress) and the table on
    stdout. ``workers`` > 1: that many runs at a time, each in its own process with one torch
    thread (largest budgets first); each run is seeded on its own, whatever runs beside it."""
    from ..utils._config import _merge

    if not Path(checkpoint).is_file():
        raise ConfigError(f"{checkpoint}: pretrained checkpoint not found")
    base = prepare_config(_merge(_merge({}, copy.deepcopy(EVAL_DEFAULTS)), copy.deepcopy(config)))
    base["backbone"] = {**base["backbone"], "checkpoint": str(checkpoint)}
    sizes = parse_sizes(sizes)
    seeds = [int(s) for s in (seeds.split(",") if isinstance(seeds, str) else seeds)]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ConfigError(f"unknown variants {bad}; use {VARIANTS}")
    out = make_run_dir(out, exist_ok=True)
    dump_config({**base, "curves": {"sizes": sizes, "seeds": seeds, "task": task, "fold": fold, "test_limit": test_limit}},
                out / "config.yaml")  # fmt: skip
    rows = _read_rows(out / "runs.csv")
    done = {(r["size"], int(r["seed"]), r["variant"]) for r in rows}
    todo = [
        (s, sd, v) for s in sizes for sd in seeds for v in variants if (str(s), sd, v) not in done
    ]
    if todo:
        bar = progress_bar(total=len(todo), desc="learning-curve runs", unit="run",
                           enabled=progress)  # fmt: skip
        with bar, logs_above_bars(progress):
            if workers > 1 and len(todo) > 1:
                runs = _parallel(todo, base, out, task, fold, test_limit, workers)
            else:
                runs = _sequential(todo, base, out, task, fold, test_limit, bar, progress)
            with contextlib.closing(runs) as results:  # an error: no new run starts
                for row, seconds in results:  # as each run ends
                    rows.append(row)
                    write_csv(out / "runs.csv", rows, FIELDS)  # after every run: resumes here
                    bar.update(1)
                    show(bar, f"size {row['size']} seed {row['seed']} {row['variant']}: "
                              f"test MAE {float(row['mae']):.4f}")  # fmt: skip
                    log.info("size %s seed %s %s: test MAE %.4f (%.0f s)", row["size"],
                             row["seed"], row["variant"], float(row["mae"]), seconds)  # fmt: skip
    return summarize_curves(out, rows, progress)


# ------------------------------------------------------------------------------------- runs
def _pool_and_test(task: str, base: dict, fold: int, test_limit: int | None):
    """The task's graphs, the fold's training pool (row indices) and its (limited) test set."""
    data, splits = _load_task(task, base)
    pool, test_idx = splits[fold]
    if test_limit is not None and test_limit < len(test_idx):
        rng = np.random.default_rng(12345)
        test_idx = np.sort(rng.choice(test_idx, int(test_limit), replace=False))
    return data, pool, data.subset(test_idx)


def _one_run(base, state, out, size, seed, variant, callbacks=()) -> tuple[dict, float]:
    """Train and score one (size, seed, variant): its ``runs.csv`` row and seconds."""
    data, pool, test = state
    n = len(pool) if size == "all" else min(int(size), len(pool))
    chosen = np.random.default_rng([seed, n]).choice(pool, n, replace=False)  # both variants
    n_val = max(1, int(round(float(base["data"]["val_fraction"]) * n)))
    tr, va = np.sort(chosen[n_val:]), np.sort(chosen[:n_val])
    cfg = copy.deepcopy(base)
    cfg["seed"] = seed
    cfg["backbone"]["pretrained"] = variant == "pretrained"
    run_dir = out / "runs" / f"size{size}-seed{seed}-{variant}"
    res = train_and_predict(cfg, data.subset(tr), data.subset(va), {"test": test}, run_dir, False,
                            callbacks=list(callbacks))  # fmt: skip
    s = res["scores"]["test"]
    row = {"size": str(size), "seed": seed, "variant": variant, "n_train": len(tr),
           "n_val": len(va), "mae": f"{s['mae']:.6g}", "rmse": f"{s['rmse']:.6g}",
           "max_error": f"{s['max_error']:.6g}", "val_mae": f"{res['scores']['val']['mae']:.6g}",
           "epoch": res["chosen"].get("epoch", res["chosen"].get("alpha")),
           "seconds": f"{res['seconds']:.1f}"}  # fmt: skip
    return row, float(res["seconds"])


def _sequential(todo, base, out, task, fold, test_limit, bar, progress):
    state = _pool_and_test(task, base, fold, test_limit)
    for size, seed, variant in todo:
        report = [EpochReport(bar, f"size {size} seed {seed} {variant}")] if progress else []
        yield _one_run(base, state, out, size, seed, variant, report)


_WORKER_STATE: dict[str, Any] = {}


def _start_worker(task, base, fold, test_limit) -> None:
    """A worker process: one torch thread (the runs share the cores), the data built once."""
    import torch

    torch.set_num_threads(1)
    for name in ("lightning.pytorch", "lightning.fabric"):  # no per-run Trainer banners
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")  # nor its advice, once per process
    _WORKER_STATE["state"] = _pool_and_test(task, base, fold, test_limit)


def _worker_run(base, out, size, seed, variant) -> tuple[dict, float]:
    return _one_run(base, _WORKER_STATE["state"], out, size, seed, variant)


def _parallel(todo, base, out, task, fold, test_limit, workers):
    """The runs of ``todo`` on ``workers`` spawned processes, largest budgets first."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    order = sorted(todo, key=lambda job: -1 if job[0] == "all" else -int(job[0]))  # stable
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with ProcessPoolExecutor(min(int(workers), len(todo)), mp_context=ctx,
                             initializer=_start_worker,
                             initargs=(task, base, fold, test_limit)) as ex:  # fmt: skip
        futures = [ex.submit(_worker_run, base, out, *job) for job in order]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def summarize_curves(
    out: Path, rows: list[dict[str, Any]], progress: bool = True
) -> dict[str, Any]:
    """Table, plot and win count from ``runs.csv`` rows."""
    by: dict[tuple[str, str], dict[int, float]] = {}
    n_train: dict[str, int] = {}
    for r in rows:
        by.setdefault((str(r["size"]), r["variant"]), {})[int(r["seed"])] = float(r["mae"])
        n_train[str(r["size"])] = int(r["n_train"]) + int(r["n_val"])
    sizes = sorted({k[0] for k in by}, key=lambda s: (s == "all", int(s) if s != "all" else 0))
    table = [
        "| labels | scratch MAE | pretrained MAE | gain | pretrained wins |",
        "|---|---|---|---|---|",
    ]
    per_size: dict[str, dict[str, Any]] = {}  # size -> means, gain, wins, ...
    wins, settings = 0, 0
    for size in sizes:
        a, b = by.get((size, "scratch"), {}), by.get((size, "pretrained"), {})
        common = sorted(set(a) & set(b))
        w = sum(b[s] < a[s] for s in common)
        wins, settings = wins + w, settings + len(common)
        ms, mp = (
            (float(np.mean(list(a.values()))) if a else np.nan),
            (float(np.mean(list(b.values()))) if b else np.nan),
        )
        ss, sp = (
            (float(np.std(list(a.values()))) if a else np.nan),
            (float(np.std(list(b.values()))) if b else np.nan),
        )
        gain = (ms - mp) / ms if a and b else np.nan
        per_size[size] = {"labels": n_train.get(size), "scratch_mean": ms, "scratch_std": ss, "pretrained_mean": mp,
                          "pretrained_std": sp, "gain": gain, "wins": w, "settings": len(common)}  # fmt: skip
        label = f"{size} ({n_train.get(size)})" if size == "all" else size
        table.append(
            f"| {label} | {ms:.4f} +- {ss:.4f} | {mp:.4f} +- {sp:.4f} | {100 * gain:+.1f}% | {w}/{len(common)} |"
        )
    table.append("")
    share = f" ({100 * wins / settings:.0f}%)" if settings else ""
    table.append(f"pretrained beats scratch in {wins} of {settings}{share} (size, seed) settings")
    small = [
        d["gain"]
        for s, d in per_size.items()
        if s != "all" and int(s) <= 250 and np.isfinite(d["gain"])
    ]
    if small:
        table.append(f"smallest gain in mean MAE at <= 250 labels: {100 * min(small):+.1f}%")
    text = "\n".join(table)
    with atomic_write(out / "learning_curves.md", "w") as fh:
        fh.write(text + "\n")
    _plot(out / "learning_curves.png", per_size)
    summary = {"per_size": per_size, "wins": wins, "settings": settings}
    clean = {size: {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}
             for size, d in per_size.items()}  # fmt: skip
    write_json(out / "summary.json", {**summary, "per_size": clean})
    if progress:
        print(text)
    return summary


def _plot(path: Path, per_size: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    xs = [v["labels"] for v in per_size.values()]
    for variant, marker in (("scratch", "s"), ("pretrained", "o")):
        m = [v[f"{variant}_mean"] for v in per_size.values()]
        s = [v[f"{variant}_std"] for v in per_size.values()]
        ax.errorbar(xs, m, yerr=s, marker=marker, capsize=3, label=variant)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("labelled structures (train + validation)")
    ax.set_ylabel("test MAE")
    ax.legend()
    ax.set_title("learning curves (mean +- std over seeds)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
