"""Safe checkpoints: plain tensors + a versioned config, loadable with ``torch.load(weights_only=True)``.

Format (a dict)::

    {"format": "atomssl-checkpoint", "version": 1, "atomssl_version": "...",
     "config": {...run config...}, "backbone_config": {...}, "backbone": state_dict,
     "tasks": {key: state_dict}, "task_configs": {key: {...}}, "metrics": {name: float},
     "epoch": int, "global_step": int, "trainer": {...Lightning resume state, optional...}}

Only tensors, numbers, strings, lists, tuples, dicts and None are stored, so loading never runs
pickled code; a file holding anything else is refused with :class:`CheckpointError`. Files are
written atomically (temporary file + fsync + rename): a crash leaves the old file or the new one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

from ..errors import CheckpointError
from ..utils import atomic_torch_save
from ..utils._torchfile import safe_torch_load

FORMAT = "atomssl-checkpoint"
VERSION = 1


def plain(obj: Any) -> Any:
    """``obj`` as JSON types (dict/list/str/number/bool/None); raises ``CheckpointError`` otherwise."""
    try:
        return json.loads(json.dumps(obj, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"config is not plain data (JSON types only): {exc}") from None


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (Path, os.PathLike)):
        return os.fspath(o)
    if isinstance(o, torch.Tensor) and o.numel() == 1:
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def save_checkpoint(
    path: str | os.PathLike,
    backbone,
    config: dict | None = None,
    tasks: dict[str, torch.nn.Module] | None = None,
    metrics: dict[str, float] | None = None,
    **extra: Any,
) -> Path:
    """Write ``backbone`` (+ task heads, config, metrics) to ``path`` atomically."""
    from .._version import __version__

    payload = {
        "format": FORMAT,
        "version": VERSION,
        "atomssl_version": __version__,
        "config": plain(config or {}),
        "backbone_config": plain(
            getattr(backbone, "config", {"name": getattr(backbone, "name", "?")})
        ),
        "backbone": backbone.state_dict(),
        "tasks": {k: t.state_dict() for k, t in (tasks or {}).items()},
        "task_configs": plain({k: getattr(t, "config", {}) for k, t in (tasks or {}).items()}),
        "metrics": plain(metrics or {}),
        **extra,
    }
    atomic_torch_save(payload, path)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load and check an atomssl checkpoint without unpickling any object.

    Raises :class:`CheckpointError` naming the file when it is missing, truncated/corrupt, holds
    pickled objects (refused, never executed), or is not an atomssl checkpoint of a known version.
    """
    path = Path(path)
    obj = safe_torch_load(path, map_location=map_location)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an atomssl checkpoint ({_what_it_is(obj)}; no 'format': {FORMAT!r} entry)"
        )
    if obj.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {obj.get('version')!r}; this atomssl reads {VERSION}"
        )
    for key in ("backbone", "backbone_config"):
        if key not in obj:
            raise CheckpointError(f"{path}: checkpoint has no {key!r} entry")
    obj["backbone_config"] = _upgrade_backbone_config(obj["backbone_config"])
    return obj


def _what_it_is(obj: Any) -> str:
    """A few words on what a torch file that is not an atomssl checkpoint holds."""
    if not isinstance(obj, dict):
        return f"it holds a {type(obj).__name__}"
    kind = obj.get("kind")
    if isinstance(kind, str):
        return f"it is a {kind!r} checkpoint"
    keys = ", ".join(repr(k) for k in list(obj)[:5]) + (", ..." if len(obj) > 5 else "")
    return f"a dict with keys {keys}" if obj else "an empty dict"


def _upgrade_backbone_config(config: Any) -> Any:
    """Fill options added after a checkpoint was written with the value it was trained with.

    equiformer: ``conv`` (default ``"so2"`` since edge-aligned SO(2) messages were added); a
    checkpoint without it used Clebsch-Gordan tensor-product messages, ``"dtp"``.
    """
    if isinstance(config, dict) and config.get("name") == "equiformer" and "conv" not in config:
        return {**config, "conv": "dtp"}
    return config


def load_backbone(path: str | os.PathLike, map_location: Any = "cpu", eval: bool = True):
    """The pretrained backbone stored in an atomssl checkpoint, ready to embed or fine-tune.

    A backbone trained by any pretext task loads here, independent of the task heads.
    """
    from ..representation import build_backbone

    ck = load_checkpoint(path, map_location)
    backbone = build_backbone(ck["backbone_config"])
    load_backbone_weights(backbone, ck["backbone"], path, ck["backbone_config"].get("name"))
    return backbone.eval() if eval else backbone


def load_backbone_weights(backbone, state: dict, path, name) -> None:
    """Load ``state`` into ``backbone``; weights that do not fit raise one line naming ``path``."""
    try:
        backbone.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not fit backbone {name!r}: {str(exc).splitlines()[0]}"
        ) from None


class AtomicCheckpointIO(CheckpointIO):
    """Lightning checkpoint I/O writing the atomssl format atomically and reading it back safely.

    The LightningModule puts its atomssl payload under ``checkpoint["atomssl"]`` (see
    ``PretrainModule.on_save_checkpoint``); everything else Lightning needs to resume (loops,
    optimiser, scheduler, callbacks) is kept under ``"trainer"``. Tensors shared between the two
    views are stored once.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path, storage_options: Any | None = None
    ) -> None:
        from .._version import __version__

        checkpoint = dict(checkpoint)
        payload = checkpoint.pop("atomssl", None)
        if payload is None:
            raise CheckpointError(f"{path}: nothing to save (the module added no atomssl payload)")
        out = {"format": FORMAT, "version": VERSION, "atomssl_version": __version__, **payload}
        out["epoch"] = int(checkpoint.get("epoch", 0))
        out["global_step"] = int(checkpoint.get("global_step", 0))
        out["trainer"] = checkpoint
        atomic_torch_save(out, path)

    def load_checkpoint(
        self, path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        ck = load_checkpoint(path, map_location if map_location is not None else "cpu")
        if "trainer" not in ck:
            raise CheckpointError(
                f"{path}: has weights but no trainer state, so a run cannot resume from it"
            )
        state = dict(ck["trainer"])
        state["atomssl"] = {k: v for k, v in ck.items() if k != "trainer"}
        return state

    def remove_checkpoint(self, path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def epoch_checkpoints(ckpt_dir, monitor: str | None) -> list:
    """Lightning callbacks writing ``best.pt`` (lowest ``monitor``) and ``last.pt`` (every epoch).

    Two callbacks, because Lightning's ``save_last=True`` refreshes ``last`` only when a top-k
    checkpoint is saved, so an epoch that does not improve ``monitor`` would be lost on resume.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    common = dict(
        dirpath=ckpt_dir, save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False
    )
    best = ModelCheckpoint(filename="best", monitor=monitor, mode="min", **common)
    last = ModelCheckpoint(filename="last", monitor=None, every_n_epochs=1, **common)
    for cb in (best, last):
        cb.FILE_EXTENSION = ".pt"
    return [best, last]
