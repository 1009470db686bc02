"""Thread workers still running when the dock, napari or Python closes are waited for first.

A napari thread worker that outlives Qt's objects emits its last signals into deleted ones, and the process
aborts. The widget's job stops within a second once cancelled and a profile estimate takes a second or two,
so the wait is short; it is bounded all the same.
"""

from __future__ import annotations

import atexit

_RUNNING: set[int] = set()
"""Workers in flight, by a key their owner chooses."""


def started(key: int) -> None:
    _RUNNING.add(key)


def finished(key: int) -> None:
    _RUNNING.discard(key)


def wait_for_workers(milliseconds: int = 10_000) -> None:
    """Block until the running workers are done (bounded), before Qt objects go."""
    if _RUNNING:
        from qtpy.QtCore import QThreadPool

        QThreadPool.globalInstance().waitForDone(milliseconds)


atexit.register(wait_for_workers)
