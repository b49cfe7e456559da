"""Typed config schemas: one per workflow, declared next to the workflow's defaults.

A :class:`Schema` is built from a workflow's ``DEFAULTS`` dict: every key there is known, and its
default's type is the type a value must have (a float key also takes an integer; a ``None`` default
takes anything unless ``types`` says otherwise). On top of that, per dotted key:

* ``types``: the allowed types where the default does not tell (``(int, None)``: an integer or
  null; ``None`` stands for null); a key listed there is known even when the defaults lack it;
* ``choices``: the allowed values;
* ``open``: sections whose *unknown* keys are accepted (their known keys are still checked), for
  options that depend on a choice made elsewhere (the chosen backbone's or task kind's options);
* ``lightning``: sections holding Lightning ``Trainer`` options (``trainer``): unknown keys must be
  ``Trainer`` arguments.

Lists (pretext task lists, data sources) are checked as lists; their items are the business of the
code that reads them. :func:`validate` raises :class:`ConfigError` with the workflow, the full
dotted key and what is allowed, e.g. ``finetune: mode='frozn' is not one of full, frozen,
linear_probe`` or ``pretrain: unknown key trainer.max_epoch (did you mean max_epochs?); ...``.

:data:`WORKFLOWS` names the module declaring each workflow's ``SCHEMA`` (imported on first use:
they import torch) and the verb that reads its configs; :func:`workflow_of` tells which workflow a
packaged config (``src/atomssl/configs/NAME.yaml``) is for, from its name.
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ConfigError

NoneType = type(None)

#: workflow -> (module declaring its ``SCHEMA``, the verb that reads its configs)
WORKFLOWS: dict[str, tuple[str, str]] = {
    "pretrain": ("atomssl.train._pretrain", "atomssl pretrain"),
    "finetune": ("atomssl.train._finetune", "atomssl finetune"),
    "evaluate": ("atomssl.evaluate._matbench", "atomssl evaluate"),
    "gan": ("atomssl.generate._gan", "atomssl gan"),
    "motif": ("atomssl.motif._workflow", "atomssl motif"),
    "order": ("atomssl.order._pretrain", "atomssl order pretrain"),
    "simulate": ("atomssl.simulate._crystallise", "atomssl data simulate"),
    "demo": ("atomssl.analysis._demo", "atomssl demo"),
}

#: packaged config name prefix -> workflow; the first match wins (a test checks every packaged
#: config has one)
PACKAGED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("pretrain_", "pretrain"),
    ("reconstruct_pretrain", "pretrain"),
    ("finetune_", "finetune"),
    ("evaluate_", "evaluate"),
    ("gan", "gan"),
    ("motif", "motif"),
    ("order_pretrain", "order"),
    ("simulate_", "simulate"),
    ("demo", "demo"),
)

#: the types of common Lightning ``Trainer`` options whose defaults do not tell them all
TRAINER_TYPES: dict[str, tuple] = {
    "max_epochs": (int, NoneType),
    "devices": (int, str, list),
    "precision": (str, int),
    "gradient_clip_val": (float, NoneType),
    "deterministic": (bool, str),
    "max_time": (str, dict, NoneType),
    "patience": (int,),
}

_TYPE_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
    NoneType: "null",
}
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_MISSING = object()


@dataclass(frozen=True)
class Schema:
    """The keys, types and choices a workflow's config may hold (see module docstring)."""

    workflow: str
    defaults: Mapping[str, Any]
    choices: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    types: Mapping[str, tuple] = field(default_factory=dict)
    open: tuple[str, ...] = ()
    lightning: tuple[str, ...] = ("trainer",)

    def over(self, workflow: str, defaults: Mapping[str, Any]) -> Schema:
        """The same rules for another workflow whose defaults are ``defaults`` merged over ours."""
        from ._config import _merge

        merged = _merge(copy.deepcopy(dict(self.defaults)), copy.deepcopy(dict(defaults)))
        return replace(self, workflow=workflow, defaults=merged)

    def validate(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """``cfg`` checked against the schema; returns a copy in which numbers that YAML read as
        strings (``1e-3``) are numbers. Raises :class:`ConfigError` on the first problem."""
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"{self.workflow}: a config must be a mapping, got {_kind(cfg)}")
        return self._section(cfg, self.defaults, "")

    # ------------------------------------------------------------------------------ internals
    def _section(self, node: Mapping, defaults: Mapping, prefix: str) -> dict[str, Any]:
        section = prefix[:-1]
        out = {}
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if not (isinstance(key, str) and (key in defaults or dotted in self.types)):
                if section in self.open:
                    out[key] = copy.deepcopy(value)
                    continue
                if section in self.lightning and isinstance(key, str) and key in _lightning_args():
                    out[key] = self._value(dotted, value, _MISSING, TRAINER_TYPES.get(key))
                    continue
                raise ConfigError(self._unknown(key, dotted, defaults, prefix))
            types = TRAINER_TYPES.get(key) if section in self.lightning else None
            out[key] = self._value(dotted, value, defaults.get(key, _MISSING), types)
        return out

    def _value(self, dotted: str, value: Any, default: Any, section_types: tuple | None) -> Any:
        allowed = self.types.get(dotted) or section_types or _inferred(default)
        if allowed is not None:
            allowed = tuple(NoneType if t is None else t for t in allowed)
            value = _coerced(value, allowed)
            if not any(_is(value, t) for t in allowed):
                expected = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in allowed)
                raise ConfigError(f"{self.workflow}: {dotted}={_short(value)} is not {expected}")
        choices = self.choices.get(dotted)
        if choices is not None and value not in choices:
            allowed_values = ", ".join(str(c) for c in choices)
            raise ConfigError(
                f"{self.workflow}: {dotted}={_short(value)} is not one of {allowed_values}"
            )
        if isinstance(value, Mapping) and (isinstance(default, Mapping) or dotted in self.open):
            sub = default if isinstance(default, Mapping) else {}
            return self._section(value, sub, dotted + ".")
        return copy.deepcopy(value)

    def _unknown(self, key: Any, dotted: str, defaults: Mapping, prefix: str) -> str:
        declared = [k[len(prefix) :] for k in self.types if k.startswith(prefix)]
        known = sorted({str(k) for k in defaults} | {k for k in declared if "." not in k})
        section = prefix[:-1]
        candidates = list(known)
        if section in self.lightning:
            candidates += sorted(_lightning_args())
        close = difflib.get_close_matches(str(key), candidates, n=1)
        msg = f"{self.workflow}: unknown key {dotted}"
        if close:
            msg += f" (did you mean {close[0]}?)"
        msg += f"; allowed{' in ' + section if section else ''}: {', '.join(known)}"
        if section in self.lightning:
            msg += ", or any lightning Trainer argument"
        return msg


@functools.cache
def _lightning_args() -> frozenset[str]:
    import inspect

    from lightning.pytorch import Trainer

    return frozenset(p for p in inspect.signature(Trainer.__init__).parameters if p != "self")


def _inferred(default: Any) -> tuple | None:
    if default is _MISSING or default is None:
        return None  # anything
    for t in (bool, int, float, str, dict):
        if isinstance(default, Mapping if t is dict else t):
            return (t,)
    if isinstance(default, (list, tuple)):
        return (list,)
    return (type(default),)


def _is(value: Any, t: type) -> bool:
    if t is NoneType:
        return value is None
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if t is list:
        return isinstance(value, (list, tuple))
    if t is dict:
        return isinstance(value, Mapping)
    return isinstance(value, t)


def _coerced(value: Any, allowed: tuple) -> Any:
    """PyYAML reads ``1e-3`` (no dot) as a string: a number where a number is expected."""
    if isinstance(value, str) and float in allowed and str not in allowed:
        if _NUMBER.fullmatch(value.strip()):
            return float(value)
    return value


def _kind(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------- registry
def schema(workflow: str) -> Schema:
    """The schema of ``workflow`` (one of :data:`WORKFLOWS`)."""
    if workflow not in WORKFLOWS:
        raise ConfigError(f"unknown workflow {workflow!r}; one of {', '.join(WORKFLOWS)}")
    return importlib.import_module(WORKFLOWS[workflow][0]).SCHEMA


def validate(workflow: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` checked against the schema of ``workflow`` (see :meth:`Schema.validate`)."""
    return schema(workflow).validate(cfg)


def workflow_of(name: str) -> str | None:
    """The workflow a config named ``name`` (a packaged config's name) is for, or ``None``."""
    for prefix, workflow in PACKAGED_PREFIXES:
        if name.startswith(prefix):
            return workflow
    return None


def verb_of(workflow: str) -> str:
    """The command that reads configs of ``workflow``."""
    return WORKFLOWS[workflow][1]
