"""Reading torch files safely: one loader shared by every checkpoint reader of atomssl.

:func:`safe_torch_load` never unpickles an object (``weights_only=True``) and turns every way a
file can fail to be a torch checkpoint into a one-line :class:`~atomssl.errors.CheckpointError`
naming the file and the reason, checked before torch sees the file where possible:

* missing: ``PATH: checkpoint not found``;
* a folder, an unreadable, empty, text or binary file, a truncated zip archive, a zip archive
  that ``torch.save`` did not write (an ``.npz``), a file torch cannot parse:
  ``PATH: not a torch checkpoint (REASON)``;
* pickled Python objects (code would run under a plain ``torch.load``):
  ``PATH: refused: the file holds pickled Python objects, ...``.

What the loaded object must hold (an atomssl checkpoint, a motif VAE ...) is checked by the caller.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

#: the first bytes of torch's legacy (pre-1.6, non-zip) format: a pickled magic number
_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (messages of torch errors run over many lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end is still text
        return exc.start >= len(head) - 3
    return True


def not_a_checkpoint(path: str | os.PathLike, reason: str) -> CheckpointError:
    return CheckpointError(f"{path}: not a torch checkpoint ({reason})")


def check_torch_file(path: str | os.PathLike) -> Path:
    """Refuse, without loading it, a ``path`` that cannot be a torch checkpoint (see the module
    docstring); returns ``path`` as a :class:`Path`."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except OSError as exc:
        raise not_a_checkpoint(path, f"cannot read it: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise not_a_checkpoint(path, "a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise not_a_checkpoint(path, "not a regular file")
    if st.st_size == 0:
        raise not_a_checkpoint(path, "empty file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        raise not_a_checkpoint(path, f"cannot read it: {exc.strerror or exc}") from None
    if head.startswith(_LEGACY_MAGIC):
        return path  # torch's old format: torch.load decides
    if not head.startswith(_ZIP_MAGIC):
        what = "a text file" if _looks_like_text(head) else "binary data"
        raise not_a_checkpoint(path, f"{what}, not the zip archive torch.save writes")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise not_a_checkpoint(
            path, f"truncated or corrupt zip archive: {first_line(exc)}"
        ) from None
    if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        raise not_a_checkpoint(
            path, "a zip archive without data.pkl (e.g. an .npz), not written by torch.save"
        )
    return path


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with every failure a one-line
    :class:`CheckpointError` naming ``path`` (never a traceback, never unpickled code)."""
    import pickle

    import torch

    path = check_torch_file(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()]
        detail = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported global" in ln), None)
        if detail is not None:
            raise CheckpointError(
                f"{path}: refused: the file holds pickled Python objects, not only tensors and plain data ({detail})"
            ) from None
        detail = next((ln for ln in lines if "Unsupported" in ln), None)
        raise not_a_checkpoint(
            path, f"unreadable pickle data: {detail}" if detail else first_line(exc)
        ) from None
    except MemoryError:
        raise not_a_checkpoint(path, "too large to load into memory") from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, KeyError, EOFError ... on bad files
        raise not_a_checkpoint(path, f"unreadable or corrupt: {first_line(exc)}") from None
