"""Checks the verbs run on what the user named, before any work: input paths, output files, run
folders and torch devices. Each failure is one :class:`~atomssl.errors.AtomsslError` line naming
the path (or device) and the reason; nothing is created on the way.

Rules:

* an output FILE (``embed --out e.npz``, ``data import --out s.db``, ``data graph --out g.npz``)
  goes only into a folder that exists: no folder is ever created for it;
* a run FOLDER the user named (``--out runs/x`` of a training verb) may be created, but only that
  folder itself, inside a folder that exists: a missing parent is an error (a typo in a path must
  not grow a tree of folders somewhere unexpected);
* a folder named as input must hold at least one structure file;
* ``--device`` must name a device torch can use here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import ConfigError


def _parent(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def output_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """``path`` as the output file of a verb: its folder must exist; ``path`` must not be a folder."""
    path = Path(path)
    if str(path) in ("", "."):
        raise ConfigError(f"{flag}: give a file name")
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; give a file name inside it")
    parent = _parent(path)
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise ConfigError(
            f"{flag} {path}: folder {parent} {what} (output files are written only into an existing folder)"
        )
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{flag} {path}: folder {parent} is not writable")
    return path


def run_folder(path: str | os.PathLike | None, flag: str = "--out") -> Path | None:
    """``path`` as a run folder the user named (``None`` passes through: the verb picks one under
    ``runs/``): an existing folder, or a new one whose parent exists. Nothing is created here."""
    if path is None:
        return None
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{flag} {path}: is a file, not a folder")
        return path
    parent = _parent(path)
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise ConfigError(
            f"{flag} {path}: folder {parent} {what} (a run folder is created only inside an existing folder)"
        )
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{flag} {path}: folder {parent} is not writable")
    return path


def input_sources(paths: Iterable[str | os.PathLike], must_exist: bool = False) -> list[str]:
    """The structure inputs ``paths`` (files, folders, stores): each named folder must hold at
    least one structure file (searched as :func:`atomssl.data.expand_sources` does). A missing
    path raises ``file not found`` with ``must_exist``, else it is left to the readers (``data
    info`` lists it among the other entries)."""
    from ..data import expand_sources
    from ..errors import EmptyInputError, MissingFileError

    names: list[str] = [os.fspath(p) for p in paths]
    for p in names:
        if must_exist and not os.path.exists(p):
            raise MissingFileError("no such file or folder", p)
        if os.path.isdir(p) and not expand_sources([p]):
            others = sorted(os.path.join(r, f) for r, _, fs in os.walk(p) for f in fs)
            hint = (
                f" ({len(others)} file(s) of no known structure format, e.g. {os.path.relpath(others[0], p)})"
                if others
                else ""
            )
            raise EmptyInputError(f"no structure files found in {p}{hint}")
    return names


def check_device(name: str, flag: str = "--device") -> str:
    """``name`` if torch can use that device here, else a :class:`ConfigError` naming it and what
    is available (``cpu``, ``cuda:0`` ... ``mps``)."""
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"{flag} {name!r}: not a torch device ({reason}); available: {', '.join(available_devices())}"
        ) from None
    ok = dev.type != "meta"  # tensors without data: nothing would be computed
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and (
            dev.index is None or dev.index < torch.cuda.device_count()
        )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        ok = mps is not None and mps.is_available() and dev.index in (None, 0)
    elif dev.type not in ("cpu", "meta"):
        try:
            torch.empty(0, device=dev)
        except Exception:  # noqa: BLE001 - any backend failure means: not usable here
            ok = False
    if not ok:
        why = "torch sees no such device on this machine"
        if dev.type == "cuda" and not torch.cuda.is_available():
            why = "torch sees no CUDA device on this machine" + (
                "" if torch.version.cuda else " (this torch is built without CUDA)"
            )
        raise ConfigError(f"{flag} {name!r}: {why}; available: {', '.join(available_devices())}")
    return name


def available_devices() -> list[str]:
    import torch

    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def check_checkpoint(path: str | os.PathLike | None) -> None:
    """Before any work (and before a run folder exists): refuse a ``path`` that is not an atomssl
    checkpoint with its one-line :class:`~atomssl.errors.CheckpointError` (``None``: nothing to check)."""
    if path in (None, ""):
        return
    from ..train import load_checkpoint

    load_checkpoint(path)
