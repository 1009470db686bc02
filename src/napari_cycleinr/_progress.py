"""The progress bar and status line of a running job: always moving, with an estimate of the time left.

The runner reports coarse steps (a handful of blocks per target), and nothing while torch and the model load.
So the bar is busy (animated) through the "loading the model" phase; after that it advances between two of
the runner's reports at the pace measured so far, never past the next report it expects, and the status line
ends with the time left at that pace.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QTimer

LOADING = "loading the model"
TICK_MS = 100
"""How often the bar moves between two reports of the runner."""
_LOADING_MESSAGES = ("", "starting", LOADING)
_LOADING_PREFIXES = ("running on ",)


def is_loading(message: str) -> bool:
    """Whether a runner message belongs to the start of a job (torch import, device, weights)."""
    return message in _LOADING_MESSAGES or message.startswith(_LOADING_PREFIXES)


def time_left(seconds: float) -> str:
    """'about 40 s left', 'about 3 min left'."""
    if seconds < 60:
        return f"about {max(5, round(seconds / 5) * 5):.0f} s left"
    return f"about {round(seconds / 60):.0f} min left"


class ProgressView:
    """Drives a magicgui ProgressBar and status Label from the runner's (done, total, message) reports."""

    def __init__(self, bar: Any, status: Any, parent: Any = None, clock: Callable[[], float] = time.monotonic):
        self._bar, self._status, self._clock = bar, status, clock
        self._timer = QTimer(parent)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._tick)
        self._reset_state(1)

    def _reset_state(self, total: int) -> None:
        self._total, self._done, self._message = max(int(total), 1), 0, LOADING
        self._started: tuple[float, int] | None = None  # (time, done) when the model began to work
        self._last: tuple[float, int] = (self._clock(), 0)  # (time, done) of the latest report
        self._increment = 0
        self._rate: float | None = None  # progress units per second

    @property
    def active(self) -> bool:
        return self._timer.isActive()

    def start(self, total: int) -> None:
        """A job starts: a busy bar and 'loading the model' until the model reports work done."""
        self._reset_state(total)
        self._bar.min, self._bar.max, self._bar.value = 0, 0, 0  # max 0: Qt's animated busy bar
        self._status.value = LOADING
        self._timer.start()

    def report(self, done: int, total: int, message: str) -> None:
        now = self._clock()
        self._total = max(int(total), 1)
        if message:
            self._message = message
        if is_loading(message) and self._started is None:
            self._status.value = LOADING if message in _LOADING_MESSAGES else f"{LOADING} ({message})"
            return
        if self._started is None:
            self._started = (now, done)
            self._bar.max = self._total
        if done > self._done:
            self._increment = done - self._done
            t0, d0 = self._started
            if now > t0 and done > d0:
                self._rate = (done - d0) / (now - t0)
        self._done = min(done, self._total)
        self._last = (now, self._done)
        self._show(now)

    def _tick(self) -> None:
        if self._started is not None:
            self._show(self._clock())

    def shown_value(self, now: float) -> int:
        """The bar's value now: the last report, plus the measured pace since, short of the next report."""
        t_last, done = self._last
        if self._rate is None or done >= self._total:
            return done
        ahead = min(self._rate * (now - t_last), 0.9 * self._increment)
        return int(min(done + ahead, self._total))

    def _show(self, now: float) -> None:
        value = self.shown_value(now)
        if self._bar.value != value:
            self._bar.value = value
        text = self._message
        if self._rate and value < self._total:
            text = f"{text} · {time_left((self._total - value) / self._rate)}"
        if self._status.value != text:
            self._status.value = text

    def finish(self, completed: bool) -> None:
        """The job ended: a full bar if it delivered, else an empty one (an error or cancel shows no 100 %)."""
        self._timer.stop()
        self._bar.min, self._bar.max = 0, self._total
        self._bar.value = self._total if completed else 0

    def stop(self) -> None:
        self._timer.stop()
