"""runtime.workers: pieces of work on one torch thread per core, the caller's thread count untouched, and the
first error (a cancel included) raised once every piece has stopped."""

import threading

import pytest
import torch

from napari_cycleinr.errors import Cancelled
from napari_cycleinr.runtime.workers import Workers


def test_workers_run_every_job_on_one_torch_thread_each():
    before = torch.get_num_threads()
    workers = Workers(torch.device("cpu"), 2)
    seen = []
    lock = threading.Lock()

    def job(i):
        with lock:
            seen.append((i, torch.get_num_threads(), threading.current_thread().name))

    workers.run([lambda i=i: job(i) for i in range(6)])
    workers.close()
    assert sorted(i for i, _, _ in seen) == list(range(6))
    assert {threads for _, threads, _ in seen} == {1}
    assert all(name.startswith("cycleinr-decode") for _, _, name in seen)
    assert torch.get_num_threads() == before


def test_the_first_error_is_raised_after_all_jobs_stopped():
    workers = Workers(torch.device("cpu"), 2)
    finished = []

    def fails():
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        workers.run([fails, lambda: finished.append(1), lambda: finished.append(2)])
    assert sorted(finished) == [1, 2]
    workers.close()


def test_one_thread_or_a_gpu_runs_inline():
    for device, threads in ((torch.device("cpu"), 1), (torch.device("cuda"), 4)):
        workers = Workers(device, threads)
        names = []
        workers.run([lambda: names.append(threading.current_thread().name)])
        assert workers.pool is None and names == [threading.current_thread().name]
