"""A run's report: metrics merged over restarts, the summary, its table and the loss curves."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from ..utils import save_figure
from ._module import PretrainModule

log = logging.getLogger(__name__)


def merged_metrics(run_dir: Path) -> list[dict[str, float]]:
    """One row per epoch, merged over ``logs/version_*`` (a later version overrides the epochs it re-ran)."""
    by_epoch: dict[int, dict[str, float]] = {}
    versions = sorted(
        (run_dir / "logs").glob("version_*/metrics.csv"),
        key=lambda p: int(p.parent.name.split("_")[1]),
    )
    for path in versions:
        fresh: dict[int, dict[str, float]] = {}
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                if not row.get("epoch"):
                    continue
                e = int(float(row["epoch"]))
                for k, v in row.items():
                    if v not in ("", None) and k not in ("epoch", "step"):
                        fresh.setdefault(e, {})[k] = float(v)
        if fresh:
            for e in [e for e in by_epoch if e >= min(fresh)]:
                del by_epoch[e]
            by_epoch.update(fresh)
    return [{"epoch": e, **by_epoch[e]} for e in sorted(by_epoch)]


def summarize(
    rows, module: PretrainModule, config: dict, rates: list[float], ckpt_dir: Path
) -> dict[str, Any]:
    stage = "val" if any("val/loss" in r for r in rows) else "train"
    total = (
        "val/loss" if stage == "val" else "train/loss_epoch"
    )  # the training total is logged per step and epoch
    final: dict[str, Any] = next((r for r in reversed(rows) if total in r), {})
    tasks = []
    for key in module.keys:
        losses = [r[f"{stage}/{key}/loss"] for r in rows if f"{stage}/{key}/loss" in r]
        entry = {
            "task": key,
            "backbone": module.backbone.name,
            "weight": module.weights[key],
            "baseline": final.get(f"{stage}/{key}/baseline"),
            "reached": final.get(f"{stage}/{key}/loss"),
            "best": min(losses) if losses else None,
        }
        for k, v in final.items():
            prefix = f"{stage}/{key}/"
            if k.startswith(prefix) and k[len(prefix) :] not in ("loss", "baseline"):
                entry[k[len(prefix) :]] = v
        tasks.append(entry)
    steady = rates[1:] if len(rates) > 1 else rates
    return {
        "stage": stage,
        "epochs": int(final.get("epoch", -1)) + 1 if final else 0,
        "backbone": module.backbone.name,
        "parameters": module.backbone.num_parameters(),
        "tasks": tasks,
        "total": {"baseline": final.get(f"{stage}/baseline"), "reached": final.get(total)},
        "structures_per_s": sorted(steady)[len(steady) // 2] if steady else None,
        "best_checkpoint": str(ckpt_dir / "best.pt"),
        "last_checkpoint": str(ckpt_dir / "last.pt"),
    }


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def format_table(summary: dict[str, Any]) -> str:
    lines = [
        f"| task | backbone | {summary['stage']} baseline | reached | best | reached/baseline |",
        "|---|---|---|---|---|---|",
    ]
    for t in summary["tasks"]:
        ratio = t["reached"] / t["baseline"] if t["reached"] is not None and t["baseline"] else None
        lines.append(
            f"| {t['task']} | {t['backbone']} | {_fmt(t['baseline'])} | {_fmt(t['reached'])} | {_fmt(t['best'])} | {_fmt(ratio)} |"
        )
    rate = summary.get("structures_per_s")
    lines.append("")
    lines.append(f"epochs: {summary['epochs']}; training throughput: {_fmt(rate)} structures/s")
    return "\n".join(lines)


def plot_loss_curves(rows, keys: list[str], path: Path) -> None:
    """Per task: training loss, validation loss and validation baseline against epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (["total"] if len(keys) > 1 else []) + list(keys)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, key in zip(axes[0], panels):
        base = "" if key == "total" else f"{key}/"
        for name, style, label in (
            (f"train/{base}loss" + ("_epoch" if key == "total" else ""), "-", "train"),
            (f"val/{base}loss", "-", "validation"),
            (f"val/{base}baseline", "--", "baseline (val)"),
        ):
            pts = [(r["epoch"], r[name]) for r in rows if name in r]
            if pts:
                ax.plot(*zip(*pts), style, marker="o", ms=3, label=label)
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
