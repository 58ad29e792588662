"""Worker threads that run tasks of a meta-batch at the same time on CPU, each with one intra-op thread.

With one process on two cores, torch runs the convolutions one after another on both cores, and the second core
waits while the main thread works in Python, autograd and small operators: 10 % of an fp32 and 15 % of a bf16
MZSR meta-gradient on a 2-core AVX-512 EPYC (``python benchmarks/cpu_threads.py``). TensorFlow hides that part by
running independent graph nodes concurrently. ``MAMLConfig(task_threads=2)`` does the same with whole tasks: two
worker threads, one oneDNN/OpenMP thread each, share the meta-batch's tasks, so that one thread's Python time
overlaps the other's convolutions (:meth:`~metasr_adapter.meta.learner.MetaLearner.meta_gradient`).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import torch

__all__ = ["TaskThreadPool"]

T = TypeVar("T")


def _single_threaded(ready: threading.Barrier) -> None:
    # torch initialises a thread's intra-op thread count lazily, from the process-wide count, on its first
    # operator; trigger that first, or it would later undo the count set here
    torch.get_num_threads()
    torch.set_num_threads(1)
    ready.wait()  # every worker holds here, so each of these start-up jobs gets its own thread


class TaskThreadPool:
    """``threads`` worker threads with one intra-op (oneDNN/OpenMP) thread each. The caller's own thread count
    is left as it was. :meth:`run` runs one job per worker and returns their results in order."""

    def __init__(self, threads: int) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 2:
            raise ValueError(f"threads={threads!r}: a pool needs an int >= 2")
        self.threads = threads
        previous = torch.get_num_threads()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="metasr-task")
        ready = threading.Barrier(threads)
        for f in [self._pool.submit(_single_threaded, ready) for _ in range(threads)]:
            f.result()
        torch.set_num_threads(previous)  # the process-wide count, which the workers' set_num_threads(1) changed

    def run(self, jobs: Sequence[Callable[[], T]]) -> list[T]:
        """Each job on a worker (at most ``threads`` of them), under the caller's grad mode; the results in the
        jobs' order. An exception in a job is raised here after all jobs have finished."""
        if len(jobs) > self.threads:
            raise ValueError(f"{len(jobs)} jobs for {self.threads} worker threads: give at most {self.threads}")
        grad = torch.is_grad_enabled()

        def call(job: Callable[[], T]) -> T:
            with torch.set_grad_enabled(grad):
                return job()

        futures = [self._pool.submit(call, job) for job in jobs]
        errors = [f.exception() for f in futures]
        for e in errors:
            if e is not None:
                raise e
        return [f.result() for f in futures]

    def close(self) -> None:
        """Stop the worker threads (idempotent)."""
        self._pool.shutdown(wait=True)
