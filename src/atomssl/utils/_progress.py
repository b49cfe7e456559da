"""Progress bars for the long loops of the verbs: tqdm on stderr, shown after :data:`DELAY` s.

Every loop that may run longer than a few seconds (folds, learning-curve runs, inpainting steps,
embedded structures, ...) takes ``progress=True/False`` (the verbs' ``--no-progress``) and draws
its bar with :func:`progress_bar`. A bar appears only once its loop has run :data:`DELAY`
seconds, so quick commands (and commands that fail at once) print no bar at all; stdout stays
for results. While a bar is shown, :func:`logs_above_bars` keeps log lines from cutting it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

#: seconds a loop runs before its bar is drawn, and between two redraws (tests set 0)
DELAY = 2.0
MININTERVAL = 0.5


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    enabled: bool = True,
    leave: bool = True,
    **options: Any,
):
    """A tqdm bar on stderr (``enabled=False``: a silent one that still counts)."""
    from tqdm import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        leave=leave,
        file=sys.stderr,
        delay=DELAY,
        mininterval=MININTERVAL,
        dynamic_ncols=True,
        **options,
    )


def show(bar, text: str | None = None, **postfix: Any) -> None:
    """Put ``text`` (or ``key=value`` items) after the bar's counts and redraw it when due: how
    a long step reports on itself (e.g. the epoch inside a fold) between two counts."""
    if text is not None:
        bar.set_postfix_str(text, refresh=False)
    else:
        bar.set_postfix(refresh=False, **postfix)
    if bar.disable:
        return
    now = time.time()  # tqdm's clock
    if now - bar.start_t >= bar.delay and now - bar.last_print_t >= bar.mininterval:
        bar.refresh()  # drawn once DELAY has passed, at most every mininterval
        bar.last_print_t = now  # (also tells close() that the bar was drawn)


@contextlib.contextmanager
def logs_above_bars(enabled: bool = True) -> Iterator[None]:
    """Route console log lines through ``tqdm.write`` (printed above a bar, not through it)."""
    if not enabled:
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield


@contextlib.contextmanager
def counting_bar(desc: str, enabled: bool = True, unit: str = "step") -> Iterator[Any]:
    """A bar for a loop that reports ``progress(done, total)`` itself; yields that callback."""
    with progress_bar(desc=desc, unit=unit, enabled=enabled, leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield progress
