"""Species histogram and label statistics of a sharded corpus, per shard and merged.

Each shard keeps a partial state (numbers: count, mean, sum of squared deviations ``m2``, min,
max; computed by numpy over the shard's values), merged over shards with Chan et al.'s pairwise
formula: the corpus statistics equal numpy's over all values up to rounding (~1e-15 relative),
and do not depend on how an import was interrupted and resumed. Non-finite numbers are counted
(``non_finite``) and left out of mean/std/min/max.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np


def label_kind(value: Any) -> str:
    """``number`` (int/float, not bool), ``bool``, ``str`` or ``array`` (anything else)."""
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return "number"
    if isinstance(value, str):
        return "str"
    return "array"


class ShardStats:
    """What one shard holds: species counts and each label's values (numbers kept until :meth:`state`)."""

    def __init__(self) -> None:
        self.atoms: Counter = Counter()
        self.structures: Counter = Counter()
        self.kinds: dict[str, str] = {}
        self.values: dict[str, list[float]] = {}
        self.counts: Counter = Counter()
        self.true: Counter = Counter()

    def add(self, symbols: list[str], labels: dict[str, Any]) -> None:
        per = Counter(symbols)
        self.atoms.update(per)
        self.structures.update(per.keys())
        for name, value in labels.items():
            kind = label_kind(value)
            known = self.kinds.setdefault(name, kind)
            if known != kind:
                self.kinds[name] = "mixed"
            self.counts[name] += 1
            if kind == "number":
                self.values.setdefault(name, []).append(float(value))
            elif kind == "bool" and value:
                self.true[name] += 1

    def state(self) -> dict[str, Any]:
        """JSON-able partial state of this shard (see :func:`merge_states`)."""
        labels = {}
        for name in sorted(self.kinds):
            rec: dict[str, Any] = {"kind": self.kinds[name], "count": int(self.counts[name])}
            if rec["kind"] == "number":
                rec.update(_number_state(np.asarray(self.values[name], dtype=np.float64)))
            elif rec["kind"] == "bool":
                rec["true"] = int(self.true[name])
            labels[name] = rec
        species = {el: [int(self.atoms[el]), int(self.structures[el])] for el in sorted(self.atoms)}
        return {"species": species, "labels": labels}


def _number_state(x: np.ndarray) -> dict[str, Any]:
    finite = x[np.isfinite(x)]
    out: dict[str, Any] = {"n": int(finite.size), "non_finite": int(x.size - finite.size)}
    if finite.size:
        mean = float(np.mean(finite))
        out.update(
            mean=mean,
            m2=float(np.sum((finite - mean) ** 2)),
            min=float(finite.min()),
            max=float(finite.max()),
        )
    return out


def _merge_number(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    if not b.get("n"):
        return {**a, "non_finite": a.get("non_finite", 0) + b.get("non_finite", 0)}
    if not a.get("n"):
        return {**b, "non_finite": a.get("non_finite", 0) + b.get("non_finite", 0)}
    n = a["n"] + b["n"]
    delta = b["mean"] - a["mean"]
    return {
        "n": n,
        "non_finite": a["non_finite"] + b["non_finite"],
        "mean": a["mean"] + delta * b["n"] / n,
        "m2": a["m2"] + b["m2"] + delta * delta * a["n"] * b["n"] / n,
        "min": min(a["min"], b["min"]),
        "max": max(a["max"], b["max"]),
    }


def merge_states(states: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Shard states (in order) -> (species histogram, label statistics) of the whole corpus.

    Species: ``{"Si": {"atoms": n, "structures": m}}``. Labels: ``{"name": {"kind", "count",
    ...}}`` with ``mean``/``std`` (population, numpy's default)/``min``/``max`` for numbers
    (``non_finite`` when some values were NaN/inf), ``true`` for booleans.
    """
    atoms: Counter = Counter()
    structures: Counter = Counter()
    labels: dict[str, dict[str, Any]] = {}
    for state in states:
        for el, (n_atoms, n_structures) in state["species"].items():
            atoms[el] += n_atoms
            structures[el] += n_structures
        for name, rec in state["labels"].items():
            cur = labels.get(name)
            if cur is None:
                labels[name] = dict(rec)
                continue
            kind = cur["kind"] if cur["kind"] == rec["kind"] else "mixed"
            merged: dict[str, Any] = {"kind": kind, "count": cur["count"] + rec["count"]}
            if kind == "number":
                merged.update(_merge_number(cur, rec))
            elif kind == "bool":
                merged["true"] = cur["true"] + rec["true"]
            labels[name] = merged
    species = {
        el: {"atoms": int(atoms[el]), "structures": int(structures[el])} for el in sorted(atoms)
    }
    out = {}
    for name in sorted(labels):
        rec = labels[name]
        final: dict[str, Any] = {"kind": rec["kind"], "count": rec["count"]}
        if rec["kind"] == "number":
            if rec.get("n"):
                final.update(
                    mean=rec["mean"],
                    std=math.sqrt(max(rec["m2"], 0.0) / rec["n"]),
                    min=rec["min"],
                    max=rec["max"],
                )
            if rec.get("non_finite"):
                final["non_finite"] = rec["non_finite"]
        elif rec["kind"] == "bool":
            final["true"] = rec["true"]
        out[name] = final
    return species, out
