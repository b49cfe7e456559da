"""Crash-safe file writing: write to a temporary file in the same folder, fsync, rename."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of ``path``; on success it atomically replaces ``path``.

    A crash (even SIGKILL) leaves either the old file or the new one, never a partial file.
    The new file keeps the permission bits (and, where allowed, the group) of the file it
    replaces; a new file gets the usual ``0666 & ~umask``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        keep_file_mode(tmp, path)  # mkstemp creates 0600
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def keep_file_mode(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Give ``tmp`` (about to be renamed over ``target``) the permission bits of ``target``, and
    its group where the owner may set it; when ``target`` does not exist, ``0666 & ~umask``
    (what ``open()`` would give a new file). mkstemp's 0600 would otherwise make a file shared
    by a group unreadable to it after every rewrite."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        os.chmod(tmp, 0o666 & ~_umask())
        return
    if os.stat(tmp).st_gid != st.st_gid:
        with contextlib.suppress(OSError):  # not a member of that group: keep ours
            os.chown(tmp, -1, st.st_gid)
    os.chmod(tmp, stat.S_IMODE(st.st_mode))


def atomic_save_npz(path, **arrays) -> None:
    """``numpy.savez`` of ``arrays`` to ``path``, written atomically (:func:`atomic_write`)."""
    import numpy as np

    with atomic_write(path) as fh:
        np.savez(fh, **arrays)


def atomic_torch_save(obj, path) -> None:
    """``torch.save(obj)`` to ``path``, written atomically (:func:`atomic_write`)."""
    import torch

    with atomic_write(path) as fh:
        torch.save(obj, fh)


def write_json(path, obj: Any) -> None:
    """Write ``obj`` to ``path`` as indented JSON, atomically; numpy scalars and arrays and paths
    are converted to plain JSON values."""
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def save_figure(fig, path, dpi: int = 110) -> Path:
    """Render a matplotlib figure to PNG, write it atomically to ``path`` and close the figure."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    with atomic_write(path) as fh:
        fh.write(buf.getvalue())
    return Path(path)


def write_csv(path, rows: list[dict], fieldnames: list[str] | None = None) -> None:
    """Rows of dicts as CSV, written atomically; columns ``fieldnames`` (default: in order of first
    appearance)."""
    import csv
    import io

    keys: list[str] = list(fieldnames or [])
    if fieldnames is None:
        for r in rows:
            keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    with atomic_write(path, "w") as fh:
        fh.write(buf.getvalue())


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def make_run_dir(
    root: str | os.PathLike = "runs", name: str = "run", exist_ok: bool = False
) -> Path:
    """Create ``root/name-YYYYmmdd-HHMMSS[-n]`` (or ``root`` itself when ``exist_ok``)."""
    root = Path(root)
    if exist_ok:
        root.mkdir(parents=True, exist_ok=True)
        _track(root)
        return root
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = root / (f"{name}-{stamp}" + (f"-{n}" if n else ""))
        try:
            path.mkdir(parents=True)
            _track(path)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run folder under {root}")


# ------------------------------------------------------------------------------ run status
STATUS_FILE = "status.json"
#: the open :func:`run_status` blocks, innermost last; each lists the run folders made inside it
_OPEN_RUNS: list[RunStatus] = []


class RunStatus:
    """The run folders made (by :func:`make_run_dir`) inside one :func:`run_status` block."""

    def __init__(self) -> None:
        self.folders: list[Path] = []
        self.error: str | None = None
        self.started = _now()

    def add(self, folder: Path) -> None:
        folder = Path(folder).resolve()
        if any(folder == f or f in folder.parents for f in self.folders):
            return  # a folder inside the run's own folder (e.g. a fold or a sub-run)
        self.folders.append(folder)
        self._write({"status": "running", "pid": os.getpid(), "started": self.started}, folder)

    def failed(self, error: str) -> None:
        """Mark the run failed with ``error`` (one line) even though no exception ends it."""
        self.error = " ".join(str(error).split()) or "failed"

    def _write(self, status: dict, *folders: Path) -> None:
        for folder in folders or self.folders:
            if folder.is_dir():  # a folder removed meanwhile stays removed
                with contextlib.suppress(OSError):  # never hides the run's own outcome
                    write_json(folder / STATUS_FILE, status)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _rank_zero() -> bool:
    """Not a process started for another rank (DDP, torchrun, SLURM): only rank 0 writes status."""
    keys = ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "RANK", "SLURM_PROCID")
    return not any(int(os.environ.get(k) or "0") > 0 for k in keys)


def _track(folder: Path) -> None:
    if _OPEN_RUNS and _rank_zero():
        _OPEN_RUNS[-1].add(folder)


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (KeyboardInterrupt)"
    text = " ".join(str(exc).split())
    from ..errors import AtomsslError

    line = text if isinstance(exc, AtomsslError) and text else f"{type(exc).__name__}: {text}"
    return line if len(line) <= 500 else line[:497] + "..."


@contextlib.contextmanager
def run_status() -> Iterator[RunStatus]:
    """Record in every run folder made inside the block how the run ended.

    Each folder :func:`make_run_dir` returns inside the block (folders nested in one of them
    excepted) gets ``status.json``, written atomically: ``{"status": "running", ...}`` at once,
    then ``{"status": "done", ...}`` when the block ends normally, or ``{"status": "failed",
    "error": "<one line>", ...}`` when it raises (``KeyboardInterrupt`` included) or
    :meth:`RunStatus.failed` was called. A run that fails before its folder exists leaves none.
    A killed process (SIGKILL) leaves ``running`` with its ``pid``.
    """
    status = RunStatus()
    _OPEN_RUNS.append(status)
    try:
        yield status
    except SystemExit as exc:
        if exc.code not in (0, None):
            status.failed(f"exit status {exc.code}")
        raise
    except BaseException as exc:
        status.failed(_error_line(exc))
        raise
    finally:
        _OPEN_RUNS.remove(status)
        times = {"started": status.started, "finished": _now()}
        if status.error is None:
            status._write({"status": "done", **times})
        else:
            status._write({"status": "failed", "error": status.error, **times})
