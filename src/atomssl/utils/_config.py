"""YAML configs with ``a.b.c=value`` command-line overrides."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

import yaml

from ..errors import ConfigError


def load_config(
    path: str | Path | None, defaults: dict | None = None, overrides: Iterable[str] = ()
) -> dict:
    """Merge ``defaults`` <- YAML file ``path`` <- ``overrides`` and return a new dict."""
    cfg = copy.deepcopy(defaults or {})
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
        _merge(cfg, loaded)
    return apply_overrides(cfg, overrides)


def _merge(base: dict, new: dict) -> dict:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    cfg = copy.deepcopy(cfg)
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = cfg
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return cfg


def dump_config(cfg: dict, path: str | Path) -> None:
    from ._io import atomic_write

    with atomic_write(path, "w") as fh:
        yaml.safe_dump(cfg, fh, sort_keys=False)
