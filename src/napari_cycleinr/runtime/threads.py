"""How many CPU threads torch may use, given the cores this process has and what else keeps them busy."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator, TypeVar

import torch

T = TypeVar("T")


def available_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup (container) CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as handle:
            quota, period = handle.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def busy_elsewhere(interval: float = 0.1) -> float:
    """Cores that other processes keep busy, from /proc/stat over `interval` seconds (0 if unknown)."""

    def system_busy() -> float:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
        busy = fields[0] + fields[1] + fields[2] + sum(fields[5:8])  # user nice system irq softirq steal
        return busy / os.sysconf("SC_CLK_TCK")

    def own() -> float:
        times = os.times()
        return times.user + times.system

    try:
        b0, o0, w0 = system_busy(), own(), time.monotonic()
        time.sleep(interval)
        b1, o1, w1 = system_busy(), own(), time.monotonic()
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, ((b1 - b0) - (o1 - o0)) / max(w1 - w0, 1e-3))


_THREAD_CHOICE: list[tuple[float, int]] = []


def choose_threads(requested: int = 0) -> int:
    """Torch CPU threads for inference: `requested` if positive, else the available cores less those other
    processes keep busy (at least 1; the choice is kept for 10 s).

    A thread that shares its core with another busy process stalls every parallel region it joins, which on a
    loaded 2-core machine made small tensor operations 100 times slower than one thread; a quiet machine gets
    all its cores.
    """
    if requested > 0:
        return requested
    now = time.monotonic()
    if _THREAD_CHOICE and now - _THREAD_CHOICE[0][0] < 10.0:
        return _THREAD_CHOICE[0][1]
    cores = available_cores()
    threads = 1 if cores == 1 else max(1, min(cores, int(cores - busy_elsewhere() + 0.5)))
    _THREAD_CHOICE[:] = [(now, threads)]
    return threads


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with `threads` torch CPU threads (0: leave as is), restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    if threads > 0 and threads != previous:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def with_threads(blocks: Iterator[T], threads: int) -> Iterator[T]:
    """Each step of a block generator with `threads` torch threads (0: leave), the caller's in between."""
    while True:
        with torch_threads(threads):
            block = next(blocks, None)
        if block is None:
            return
        yield block
