"""YAML configs with ``a.b.c=value`` command-line overrides, and the configs shipped in the
package (``atomssl/configs/NAME.yaml``), which ``--config NAME`` names."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import yaml

from ..errors import ConfigError

CONFIG_SUFFIXES = (".yaml", ".yml")


def packaged_configs_dir() -> Path:
    """The folder of the configs shipped with atomssl."""
    return Path(str(resources.files("atomssl") / "configs"))


def packaged_configs() -> dict[str, Path]:
    """Name (file name without ``.yaml``) -> path of every config shipped with atomssl, by name."""
    folder = packaged_configs_dir()
    if not folder.is_dir():  # pragma: no cover - a broken installation
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def config_description(path: str | Path) -> str:
    """The first line of the comment block that opens a config file ('' if none)."""
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text:
            return text
    return ""


def resolve_config(spec: str | os.PathLike) -> Path:
    """The config file ``spec`` names: an existing file, else a packaged config by name (with or
    without ``.yaml``). Anything else is a :class:`ConfigError` listing the packaged names."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"{spec}: a folder, not a config file")
    text = str(spec)
    name = path.stem if path.suffix in CONFIG_SUFFIXES else path.name
    known = packaged_configs()
    if os.sep in text or "/" in text:  # a path that does not exist
        hint = f"; the packaged config of that name is --config {name}" if name in known else ""
        raise ConfigError(f"{spec}: config file not found{hint}")
    if name in known:
        return known[name]
    raise ConfigError(
        f"{spec}: no such config file or packaged config; packaged: {', '.join(known)}"
    )


def load_config(
    path: str | Path | None,
    defaults: dict | None = None,
    overrides: Iterable[str] = (),
    schema: str | None = None,
) -> dict:
    """Merge ``defaults`` <- YAML file ``path`` <- ``overrides`` and return a new dict.

    ``path``: a file, or the name of a packaged config (:func:`resolve_config`). ``schema``: a
    workflow name (``atomssl.utils._schema.WORKFLOWS``) whose schema the result must satisfy.
    """
    cfg = copy.deepcopy(defaults or {})
    if path is not None:
        path = resolve_config(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
        _merge(cfg, loaded)
    cfg = apply_overrides(cfg, overrides)
    if schema is not None:
        from ._schema import validate

        cfg = validate(schema, cfg)
    return cfg


def _merge(base: dict, new: dict) -> dict:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """A copy of ``cfg`` with ``key.sub=value`` overrides set (values parsed as YAML: ``5`` is an
    int, ``[1, 2]`` a list); missing sections are created. ConfigError for an item without ``=``
    or one that descends into a value that is not a section."""
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
    """Write ``cfg`` to ``path`` as YAML (keys in their given order), atomically."""
    from ._io import atomic_write

    with atomic_write(path, "w") as fh:
        yaml.safe_dump(cfg, fh, sort_keys=False)
