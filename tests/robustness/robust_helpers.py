"""Helpers of the robustness tests: run a call in a forked child with a time bound.

Why fork: a hang inside C code (a parser, a neighbour search) cannot be interrupted by a Python
signal handler, and a segfault would take pytest down with it. A forked child inherits every
imported module (a call costs a few ms, not an interpreter start), and the parent sees a hang
(killed at the time bound), a crash (killed by a signal) or the outcome, as plain data.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Per-call time bound (s). Every call here normally takes milliseconds; the bound is generous
#: because the test machine may be heavily shared.
TIME_BOUND = 30.0


@dataclass
class Outcome:
    """What a bounded call did: ``kind`` is "ok" (``value``), "error" (``error_type`` names the
    exception class and its bases, ``message``, ``tb``), "hang" or "crash" (``signal``)."""

    kind: str
    value: Any = None
    error_type: tuple[str, ...] = ()
    message: str = ""
    tb: str = ""
    signal: int | None = None
    seconds: float = 0.0

    def is_error(self, cls: type) -> bool:
        return self.kind == "error" and cls.__name__ in self.error_type

    def describe(self) -> str:
        if self.kind == "error":
            return f"{self.error_type[0]}: {self.message}\n{self.tb}"
        if self.kind == "crash":
            return f"child killed by signal {self.signal}"
        if self.kind == "hang":
            return f"no answer within {self.seconds:.0f} s"
        return f"ok: {self.value!r}"


def bounded(
    fn: Callable[..., Any], *args: Any, timeout: float = TIME_BOUND, **kwargs: Any
) -> Outcome:
    """Run ``fn(*args, **kwargs)`` in a forked child; its return value must be picklable."""
    read_fd, write_fd = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        os.close(read_fd)
        try:
            try:
                out = Outcome("ok", value=fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                names = tuple(c.__name__ for c in type(exc).__mro__)
                out = Outcome(
                    "error", error_type=names, message=str(exc), tb=traceback.format_exc()
                )
            data = pickle.dumps(out)
        except BaseException as exc:  # unpicklable value
            data = pickle.dumps(Outcome("error", error_type=("PicklingError",), message=repr(exc)))
        with os.fdopen(write_fd, "wb") as fh:
            fh.write(data)
        sys.stdout.flush()
        os._exit(0)
    os.close(write_fd)
    chunks = []
    deadline = t0 + timeout
    with os.fdopen(read_fd, "rb") as fh:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return Outcome("hang", seconds=timeout)
            ready, _, _ = select.select([fh], [], [], left)
            if ready:
                chunk = os.read(fh.fileno(), 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    seconds = time.monotonic() - t0
    if os.WIFSIGNALED(status):
        return Outcome("crash", signal=os.WTERMSIG(status), seconds=seconds)
    if not chunks:
        return Outcome("crash", signal=None, seconds=seconds)
    out = pickle.loads(b"".join(chunks))
    out.seconds = seconds
    return out
