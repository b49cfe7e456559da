"""The fine-tuning workflow: labelled structures -> split -> train (or linear probe) ->
predictions, scores, parity plots and a run folder (see :mod:`atomssl.train._finetune` for
the modes and the run-folder layout)."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from ..data._labels import _source_names, labels_table, resolve_labels
from ..errors import ConfigError
from ..train._embed import embed_graphs
from ..train._engine import clean_partial_files, is_worker, resolve_run_dir
from ..train._finetune import fit_module, prepare_config
from ..train._finetune_module import (
    LabelledGraphs,
    build_finetune_backbone,
    predict_graphs,
    split_three,
)
from ..utils import atomic_write, dump_config, save_figure, write_json
from ._metrics import baseline_scores, score
from ._probe import LinearProbe

log = logging.getLogger(__name__)


def train_and_predict(
    config: dict,
    train: LabelledGraphs,
    val: LabelledGraphs,
    predict_sets: dict[str, LabelledGraphs],
    run_dir: str | os.PathLike,
    progress: bool = False,
    backbone=None,
    callbacks: Sequence = (),
    resume: bool = False,
) -> dict[str, Any]:
    """Fit on ``train`` (epochs / alpha chosen on ``val`` only) and predict every set.

    ``callbacks``: more Lightning callbacks for the training (e.g. a progress report).
    ``resume``: continue the training from ``run_dir/checkpoints/last.pt`` (a linear probe is
    fitted again). A DDP process other than rank 0 trains and returns without predictions.

    Returns ``{"predictions": {name: {...}}, "scores": {name: {...}}, "chosen": {...},
    "seconds": float, "module"|"probe": fitted object}``. Writes checkpoints (or ``probe.json``)
    and ``metrics.csv`` under ``run_dir``.
    """
    config = prepare_config(config)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    kind, mode = config["task"]["name"], config["mode"]
    L.seed_everything(int(config["seed"]), workers=True, verbose=False)
    t0 = time.perf_counter()
    sets = {"val": val, **predict_sets}
    out: dict[str, Any] = {"predictions": {}, "scores": {}, "chosen": {}}
    if mode == "linear_probe":
        bb = backbone if backbone is not None else build_finetune_backbone(config["backbone"])
        n_classes = config["task"].get("n_classes") if kind == "classification" else None
        probe = LinearProbe(
            kind,
            config["task"].get("transform", "none"),
            n_classes=int(n_classes) if n_classes else None,
        )
        grid = config["probe"]["Cs"] if kind == "classification" else config["probe"]["alphas"]
        x_train = embed_graphs(bb, train.graphs)
        x_val = embed_graphs(bb, val.graphs) if len(val) else np.zeros((0, x_train.shape[1]))
        probe.fit(x_train, train.y, x_val, val.y, grid)
        write_json(run_dir / "probe.json", probe.to_dict())
        out["chosen"] = {("C" if kind == "classification" else "alpha"): probe.param}
        out["probe"] = probe
        for name, s in sets.items():
            if len(s):
                x = x_val if name == "val" else embed_graphs(bb, s.graphs)
                out["predictions"][name] = probe.predict(x)
    else:
        module, out["chosen"] = fit_module(
            config, train, val, run_dir, progress, backbone, callbacks, resume
        )
        out["module"] = module
        if is_worker():  # rank 0 predicts and writes
            out["seconds"] = time.perf_counter() - t0
            return out
        label_totals = kind == "spectrum" and config["task"].get("total") == "label"
        for name, s in sets.items():
            if len(s):
                totals = (
                    s.y.sum(1) if label_totals else None
                )  # a known total: the spectrum's integral
                out["predictions"][name] = predict_graphs(module, s.graphs, totals=totals)
    for name, s in sets.items():
        if name in out["predictions"]:
            out["scores"][name] = score(kind, s.y, out["predictions"][name])
            out["scores"][name + "_baseline"] = baseline_scores(kind, train.y, s.y)
    out["seconds"] = time.perf_counter() - t0
    return out


# -------------------------------------------------------------------------- run folder
def load_labelled(config: dict) -> tuple[LabelledGraphs, list[str] | None, Any]:
    """Structures + labels of the ``data`` section as graphs for the configured backbone."""
    from ..train._data import StreamedGraphs, StreamedIds, build_graphs, load_structures, streams

    config = prepare_config(config)
    dcfg = config["data"]
    table = labels_table(
        dcfg, config["task"]["name"]
    )  # a wrong label column fails before loading structures
    structures = load_structures({**dcfg, "sources": dcfg["sources"]})
    values, kept, classes = resolve_labels(structures, dcfg, config["task"]["name"], table)
    spec = _graph_spec(config["backbone"])
    from ._groups import label_columns, wanted_labels

    keys, what = wanted_labels(dcfg), ", ".join(_source_names(dcfg))
    if streams(dcfg, structures):  # graphs built when batched (corpora are validated at import)
        graphs = StreamedGraphs(structures, kept, spec, dcfg.get("num_workers", "auto"))
        meta = label_columns([structures[int(i)].labels for i in kept], keys, what) if keys else {}
        return (
            LabelledGraphs(graphs, np.asarray(values), StreamedIds(structures, kept), meta),
            classes,
            structures,
        )
    key = json.dumps(
        {k: dcfg.get(k) for k in ("sources", "limit", "skip_bad")}, sort_keys=True, default=str
    )
    graphs, ok = build_graphs(structures, spec, bool(dcfg.get("skip_bad", True)), cache_key=key)
    pos = {int(i): j for j, i in enumerate(ok)}
    rows = [(pos[int(i)], v, structures[int(i)]) for i, v in zip(kept, values) if int(i) in pos]
    ids = [
        s.id or (f"{s.source}@{s.index}" if s.source else str(k))
        for k, (_, _, s) in enumerate(rows)
    ]
    meta = label_columns([r[2].labels for r in rows], keys, what) if keys else {}
    data = LabelledGraphs([graphs[r[0]] for r in rows], np.array([r[1] for r in rows]), ids, meta)
    return data, classes, structures


def _graph_spec(bcfg: dict) -> dict:
    """How graphs are built for the configured backbone (without building it twice)."""
    return build_finetune_backbone({**bcfg, "pretrained": False}).graph_spec


def finetune(
    config: dict,
    run_dir: str | os.PathLike | None = None,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, Any]:
    """One fine-tuning run (see module docstring); returns the summary written to ``summary.json``.

    ``resume=True`` (with the ``run_dir`` of an interrupted run and its config): the same split,
    training continued from ``run_dir/checkpoints/last.pt``. Under DDP only rank 0 writes the run
    folder; other processes return ``{}``.
    """
    import importlib

    config = prepare_config(config)
    for name in config.get("imports") or []:
        importlib.import_module(name)
    # data and labels first: a bad source or label column fails before a run folder exists
    data, classes, structures = load_labelled(config)
    run_dir = resolve_run_dir(config["run"], run_dir, "finetune")  # rank 0's, for all ranks
    n_warned = None
    if not is_worker():
        from ..train._data import record_read_warnings

        for p in clean_partial_files(run_dir / "checkpoints") + clean_partial_files(run_dir):
            log.info("removed partial file %s left by an interrupted run", p)
        dump_config(config, run_dir / "config.yaml")
        log.info("run folder: %s", run_dir)
        n_warned = record_read_warnings(structures, run_dir)
    d = config["data"]
    tr, va, te = split_three(
        len(data), float(d["val_fraction"]), float(d["test_fraction"]), int(config["seed"])
    )
    if d.get(
        "train_where"
    ):  # train and validate on the chosen groups only; the test rows stay whole
        from ._groups import where_mask

        keep = where_mask(data.meta, d["train_where"], len(data))
        tr, va = tr[keep[tr]], va[keep[va]]
        if not len(tr):
            raise ConfigError(
                f"data.train_where={d['train_where']!r} leaves no training structures"
            )
    if classes is not None:
        config["task"].setdefault("n_classes", len(classes))
    sets = {"train": data.subset(tr), "val": data.subset(va), "test": data.subset(te)}
    res = train_and_predict(
        config,
        sets["train"],
        sets["val"],
        {"train": sets["train"], "test": sets["test"]},
        run_dir,
        progress,
        resume=resume,
    )
    if is_worker():
        return {}
    if config["task"]["name"] == "spectrum":
        from ..train._spectrum import plot_spectra, write_spectra

        write_spectra(run_dir / "predictions.npz", sets, res["predictions"])
        plot_spectra(
            run_dir / "spectra.png",
            sets,
            res["predictions"],
            baseline=sets["train"].y.mean(0),
            seed=int(config["seed"]),
        )
    else:
        write_predictions(run_dir / "predictions.csv", sets, res["predictions"], classes)
        plot_parity(
            run_dir / "parity.png", config["task"]["name"], sets, res["predictions"], classes
        )
    summary = {
        "mode": config["mode"],
        "task": config["task"]["name"],
        "backbone": config["backbone"].get("checkpoint") or config["backbone"].get("name"),
        "pretrained": bool(config["backbone"].get("checkpoint"))
        and bool(config["backbone"].get("pretrained", True)),
        "sizes": {k: len(v) for k, v in sets.items()},
        "classes": classes,
        "chosen": res["chosen"],
        "scores": res["scores"],
        "seconds": res["seconds"],
        "run_dir": str(run_dir),
        "structures_read_with_warnings": n_warned,
    }
    if d.get("train_where"):
        summary["train_where"] = d["train_where"]
    if d.get("group_by") and "test" in res["predictions"]:
        from ._groups import group_scores

        summary["group_by"] = d["group_by"]
        summary["group_scores"] = group_scores(config["task"]["name"], sets["test"].y, res["predictions"]["test"],
                                               sets["test"].meta[d["group_by"]], sets["train"].y)  # fmt: skip
    write_json(run_dir / "summary.json", summary)
    table = format_summary(summary)
    with atomic_write(run_dir / "summary.md", "w") as fh:
        fh.write(table + "\n")
    print(table)  # the run's summary, with or without progress bars
    return summary


def write_predictions(
    path: Path, sets: dict[str, LabelledGraphs], preds: dict[str, dict], classes=None
) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    n_cls = len(classes) if classes else 0
    w.writerow(["id", "split", "target", "prediction"] + [f"p_{c}" for c in (classes or [])])
    for name, s in sets.items():
        p = preds.get(name)
        if p is None:
            continue
        for i in range(len(s)):
            if classes:
                row = [s.ids[i], name, classes[int(s.y[i])], classes[int(p["prediction"][i])]]
                row += [f"{v:.6g}" for v in p["proba"][i][:n_cls]] if "proba" in p else []
            else:
                row = [s.ids[i], name, f"{float(s.y[i]):.8g}", f"{float(p['prediction'][i]):.8g}"]
            w.writerow(row)
    with atomic_write(path, "w") as fh:
        fh.write(buf.getvalue())


def plot_parity(
    path: Path,
    kind: str,
    sets: dict[str, LabelledGraphs],
    preds: dict[str, dict],
    classes=None,
    title: str = "",
) -> None:
    """Regression: predicted vs true per split (MAE in the legend); classification: confusion matrices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("train", "val", "test") if n in preds and n in sets and len(sets[n])]
    if kind == "regression":
        fig, ax = plt.subplots(figsize=(4.6, 4.4))
        lo, hi = math.inf, -math.inf
        for n in names:
            y, p = sets[n].y.astype(float), preds[n]["prediction"]
            mae = float(np.abs(y - p).mean())
            ax.scatter(y, p, s=6, alpha=0.5, label=f"{n} (n={len(y)}, MAE {mae:.3g})")
            lo, hi = min(lo, y.min(), p.min()), max(hi, y.max(), p.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
        ax.legend(fontsize=7)
        ax.set_title(title or "parity")
    else:
        from sklearn.metrics import confusion_matrix

        k = len(classes or []) or int(max(int(sets[n].y.max()) for n in names)) + 1
        fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
        for ax, n in zip(axes[0], names):
            cm = confusion_matrix(sets[n].y, preds[n]["prediction"], labels=list(range(k)))
            ax.imshow(cm, cmap="Blues")
            for (i, j), v in np.ndenumerate(cm):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
            ax.set_title(n)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def format_summary(summary: dict[str, Any]) -> str:
    scores = summary["scores"]
    names = [n for n in ("train", "val", "test") if n in scores]
    metrics = list(scores[names[0]]) if names else []
    lines = ["| split | " + " | ".join(metrics) + " | trivial " + (metrics[0] if metrics else "") + " |",
             "|---" * (len(metrics) + 2) + "|"]  # fmt: skip
    for n in names:
        base = scores.get(n + "_baseline", {}).get(metrics[0])
        lines.append(
            f"| {n} | " + " | ".join(f"{scores[n][m]:.4g}" for m in metrics) + f" | {base:.4g} |"
        )
    lines.append("")
    lines.append(f"mode: {summary['mode']}; backbone: {summary['backbone']}; sizes: {summary['sizes']}; "
                 f"chosen on validation: {summary['chosen']}; {summary['seconds']:.1f} s")  # fmt: skip
    if summary.get("group_scores"):
        from ._groups import format_group_table

        where = f", trained on {summary['train_where']}" if summary.get("train_where") else ""
        lines += [
            "",
            f"test rows by {summary['group_by']}{where}:",
            "",
            format_group_table(summary["group_scores"], metrics[0]),
        ]
    return "\n".join(lines)
