"""Train on some groups of structures, score every group: ``data.train_where`` and ``data.group_by``.

``data.train_where="crystal_sys==cubic"`` keeps, for training and validation, only the structures
whose label ``crystal_sys`` is ``cubic`` (``==a,b``: any of several values; ``!=``: all but
those); the test rows are never filtered. ``data.group_by="crystal_sys"`` adds the test scores of
every value of that label (and of the trivial predictor fitted on the training rows), so a
model trained on cubic crystals is scored on each other lattice type. Values compare as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError


def parse_where(spec: str) -> tuple[str, str, tuple[str, ...]]:
    """``"key==v1,v2"`` / ``"key!=v"`` -> ``(key, op, values)``."""
    for op in ("==", "!="):
        if op in spec:
            key, _, rest = spec.partition(op)
            values = tuple(v.strip() for v in rest.split(",") if v.strip())
            if key.strip() and values:
                return key.strip(), op, values
    raise ConfigError(
        f"data.train_where must look like LABEL==VALUE[,VALUE...] or LABEL!=VALUE, got {spec!r}"
    )


def wanted_labels(data_cfg: dict) -> list[str]:
    """The structure labels that ``train_where`` and ``group_by`` refer to."""
    keys = []
    if data_cfg.get("train_where"):
        keys.append(parse_where(str(data_cfg["train_where"]))[0])
    if data_cfg.get("group_by"):
        keys.append(str(data_cfg["group_by"]))
    return list(dict.fromkeys(keys))


def label_columns(labels: Sequence[dict], keys: Sequence[str], what: str) -> dict[str, np.ndarray]:
    """``{key: text value per structure}``; a key missing on some structure is refused, naming it."""
    out = {}
    for key in keys:
        missing = [i for i, lab in enumerate(labels) if lab.get(key) is None]
        if missing:
            have = sorted(set().union(*(set(lab) for lab in labels[:50]))) if len(labels) else []
            raise ConfigError(
                f"{len(missing)} structure(s) of {what} have no label {key!r} (first: row {missing[0]}); "
                f"labels there: {', '.join(have) or 'none'}"
            )
        out[key] = np.array([str(lab[key]) for lab in labels], dtype=object)
    return out


def where_mask(meta: dict[str, np.ndarray], spec: str | None, n: int) -> np.ndarray:
    """Rows that ``spec`` keeps (all when ``spec`` is empty)."""
    if not spec:
        return np.ones(n, dtype=bool)
    key, op, values = parse_where(str(spec))
    if key not in meta:
        raise ConfigError(f"data.train_where: no label {key!r} on these structures")
    hit = np.isin(meta[key], np.array(values, dtype=object))
    if op == "==":
        unknown = sorted(set(values) - set(meta[key].tolist()))
        if unknown:
            raise ConfigError(f"data.train_where: no structure has {key} = {', '.join(unknown)} "
                              f"(values there: {', '.join(sorted(set(meta[key].tolist())))})")  # fmt: skip
    return hit if op == "==" else ~hit


def group_scores(
    kind: str, y_test, prediction: dict, groups: np.ndarray, y_train
) -> dict[str, dict[str, Any]]:
    """Per value of ``groups`` (one per test row): ``n``, ``scores`` and ``baseline`` (the trivial
    predictor of the training rows)."""
    from ._finetune import baseline_scores, score

    out: dict[str, dict[str, Any]] = {}
    y_test = np.asarray(y_test)
    for g in sorted(set(groups.tolist())):
        rows = np.nonzero(groups == g)[0]
        pred = {k: np.asarray(v)[rows] for k, v in prediction.items()}
        out[str(g)] = {"n": int(len(rows)), "scores": score(kind, y_test[rows], pred),
                       "baseline": baseline_scores(kind, y_train, y_test[rows])}  # fmt: skip
    return out


def format_group_table(per_group: dict[str, dict[str, Any]], metric: str) -> str:
    """Markdown: group, test rows, model and trivial ``metric``."""
    lines = [f"| group | test rows | {metric} | trivial {metric} |", "|---|---|---|---|"]
    for g, r in per_group.items():
        lines.append(
            f"| {g} | {r['n']} | {r['scores'][metric]:.4g} | {r['baseline'][metric]:.4g} |"
        )
    return "\n".join(lines)
