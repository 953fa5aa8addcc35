"""The worker threads that run chunks of one large batch alongside the calling thread.

numba ``prange``/``parallel=True`` kernels were tried first; :class:`Pool` says why they were
dropped. Fewer kernels also halve the first-run compile time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Pool", "default_threads", "shared_pool"]


@dataclass
class _Progress:
    """One :meth:`Pool.run`'s shared counters (guarded by its lock) and its first error."""

    next: int = 0
    done: int = 0
    error: BaseException | None = None


class Pool:
    """Worker threads that run chunks of one call alongside the calling thread.

    A call is cut into more chunks than threads; every participant (the caller included) takes
    the next chunk until none is left, and the caller waits only for chunks actually taken. So a
    core busy with another process slows a call down by at most one chunk instead of stalling it
    at a barrier (measured: numba's OpenMP ``prange`` fell to 1/20 of the serial speed on this
    shared 2-core machine under load, while this degrades to the serial speed).
    """

    def __init__(self, workers: int) -> None:
        import concurrent.futures as cf

        self._ex = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="offload-cpu")
        self.workers = workers

    def run(self, fn: Callable[[int, int], object], bounds: list[int]) -> None:
        """Call ``fn(lo, hi)`` for each consecutive pair of ``bounds``, in parallel."""
        nchunks = len(bounds) - 1
        lock = threading.Lock()
        state = _Progress()
        finished = threading.Event()

        def work() -> None:
            while True:
                with lock:
                    k = state.next
                    if k >= nchunks:
                        return
                    state.next = k + 1
                try:
                    fn(bounds[k], bounds[k + 1])
                except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                    state.error = state.error or e
                with lock:
                    state.done += 1
                    if state.done == nchunks:
                        finished.set()

        for _ in range(min(self.workers, nchunks - 1)):
            self._ex.submit(work)
        work()
        finished.wait()
        if state.error is not None:
            raise state.error


_POOLS: dict[int, Pool] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(workers: int) -> Pool:
    """The process's pool of ``workers`` threads, made on first use (backends with the same
    thread count share it)."""
    with _POOLS_LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = Pool(workers)
        return _POOLS[workers]


def default_threads() -> int:
    """The number of CPUs this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
