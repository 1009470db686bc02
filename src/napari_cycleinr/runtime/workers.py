"""Independent pieces of work spread over the CPU cores, one torch thread each.

The decoder's operations are small (a few thousand queries each) and mostly memory-bound: two torch threads
splitting every one of them gained only 1.36x over one thread on 2 cores, while two pieces computed side by
side, one thread each, gain close to 2x. torch's thread count is per OS thread (OpenMP), so the workers are
set to one thread each and the caller keeps its own count for the convolutions, which do scale.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

import torch


class Workers:
    def __init__(self, device: torch.device, threads: int) -> None:
        """threads: the torch threads the job may use; on a CPU with 2 or more, as many workers."""
        self.pool = None
        if device.type == "cpu" and threads > 1:
            self.pool = ThreadPoolExecutor(threads, thread_name_prefix="cycleinr-decode", initializer=_one_thread)

    def run(self, jobs: Iterable[Callable[[], None]]) -> None:
        """Run every job; the first exception (a cancel included) is raised once all have stopped."""
        if self.pool is None:
            for job in jobs:
                job()
            return
        futures = [self.pool.submit(job) for job in jobs]
        errors = [f.exception() for f in futures]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _one_thread() -> None:
    torch.set_num_threads(1)
