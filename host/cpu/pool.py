"""The worker threads that run chunks of one large batch alongside the calling thread.

numba ``prange``/``parallel=True`` kernels were tried first; :class:`Pool` says why they were
dropped. Fewer kernels also halve the first-run compile time.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["HANDOFF_S", "SPIN_S", "Pool", "default_threads", "shared_pool", "spin_seconds"]

#: How long a worker keeps polling for the next call after its last chunk, and the caller for
#: the workers' last chunks, before blocking (``OFFLOAD_CPU_SPIN_US`` sets it; 0 blocks at once).
#: Why: a thread that blocks lets its CPU go idle, and waking an idle CPU took 11 us back to back
#: and 100-170 us after 10 ms on this project's VMs; a call of a few hundred microseconds paid it
#: twice. OpenMP runtimes poll the same way (``GOMP_SPINCOUNT``, ``KMP_BLOCKTIME``).
SPIN_S = 1e-3
#: How long a caller that finds a worker polling waits for it to take the first chunk (it takes
#: a few microseconds; longer means the worker's CPU is busy elsewhere: the caller goes on).
HANDOFF_S = 1e-4
#: A worker's state (:attr:`Pool._state`): only a polling worker is handed the first chunk (one
#: running another caller's chunks would make every call wait out :data:`HANDOFF_S`).
_BLOCKED, _POLLING, _WORKING = 0, 1, 2

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def spin_seconds() -> float:
    """:data:`SPIN_S`, or ``OFFLOAD_CPU_SPIN_US`` microseconds when set (a clear error if bad)."""
    raw = os.environ.get("OFFLOAD_CPU_SPIN_US")
    if raw is None:
        return SPIN_S
    try:
        us = float(raw)
    except ValueError:
        us = -1.0
    if not 0.0 <= us <= 1e6:
        raise ValueError(
            f"OFFLOAD_CPU_SPIN_US must be a number of microseconds from 0 to 1000000, got {raw!r}"
        )
    return us * 1e-6


@intrinsic
def _load_acquire(typingctx, arr, idx):
    """``arr[idx]`` (int64) as an atomic acquire load: read anew on every iteration of a polling
    loop (a plain load may be hoisted out of it)."""
    sig = types.int64(arr, idx)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.load_atomic(builder.gep(ary.data, [args[1]]), "acquire", 8)

    return sig, codegen


@intrinsic
def _relax(typingctx):
    """x86 ``pause`` (a polling loop's hint to the core; nothing elsewhere)."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        if _X86:
            fnty = ir.FunctionType(ir.VoidType(), [])
            builder.call(cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def _poll(flags, i, value, iterations):  # pragma: no cover - compiled
    """Poll until ``flags[i] >= value`` (True: the counters polled only grow) or ``iterations``
    polls passed (False), without the GIL."""
    for _ in range(iterations):
        if _load_acquire(flags, i) >= value:
            return True
        _relax()
    return False


_POLLS_PER_S: list[float] = []


def _polls(seconds: float) -> int:
    """Polls of :func:`_poll` that take about ``seconds`` (its rate measured once a process)."""
    if seconds <= 0.0:
        return 0
    if not _POLLS_PER_S:
        never = np.zeros(1, np.int64)
        _poll(never, 0, 1, 1)  # compiled (or loaded) before it is timed
        t = time.perf_counter()
        _poll(never, 0, 1, 100_000)
        _POLLS_PER_S.append(100_000 / max(time.perf_counter() - t, 1e-6))
    return max(1, int(seconds * _POLLS_PER_S[0]))


class _Job:
    """One :meth:`Pool.run`: its chunks, the next to take, how many are done and its first
    error. ``counts`` mirrors for the caller's polling the number of chunks done (``[0]``) and
    taken (``[1]``)."""

    def __init__(self, fn: Callable[[int, int], object], bounds: list[int]) -> None:
        self.fn, self.bounds = fn, bounds
        self.nchunks = len(bounds) - 1
        self.next = self.done = 0
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.counts = np.zeros(2, np.int64)

    def work(self) -> None:
        """Take the next chunk until none is left."""
        while True:
            with self.lock:
                k = self.next
                if k >= self.nchunks:
                    return
                self.next = k + 1
                self.counts[1] = k + 1
            try:
                self.fn(self.bounds[k], self.bounds[k + 1])
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                self.error = self.error or e
            with self.lock:
                self.done += 1
                self.counts[0] = self.done
                if self.done == self.nchunks:
                    self.finished.set()


class Pool:
    """Worker threads that run chunks of one call alongside the calling thread.

    A call is cut into more chunks than threads; every participant (the caller included) takes
    the next chunk until none is left, and the caller waits only for chunks actually taken. So a
    core busy with another process slows a call down by at most one chunk instead of stalling it
    at a barrier (measured: numba's OpenMP ``prange`` fell to 1/20 of the serial speed on this
    shared 2-core machine under load, while this degrades to the serial speed).

    Between calls a worker polls for the next one for :data:`SPIN_S` before it blocks, and the
    caller polls for the workers' last chunks as long before it blocks: both without the GIL.

    A caller that finds a worker polling lets it take the first chunk before it takes one
    itself, polling without the GIL for up to
    :data:`HANDOFF_S`. Why: the worker needs the GIL to leave its poll and take a chunk; when
    the caller held it at that moment (on its way into its own chunk), the worker slept on the
    GIL, its idle CPU halted, and waking it cost tens of microseconds a call on this project's
    VMs (``docs/architecture.md``, "CPU threads").
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._spin_s = spin_seconds()
        self.polled = 0  # calls a worker found by polling (the others woke it)
        self.spun_out = 0  # times a worker polled in vain for the whole polling time
        self._polls = _polls(self._spin_s)
        self._handoff = _polls(min(self._spin_s, HANDOFF_S))
        # [i]: worker i is polling for the next call (1), running chunks (2) or blocked (0): a
        # hint, read without a lock
        self._state = np.ones(workers, np.int64)
        self._cond = threading.Condition()
        # [0]: the number of calls posted (a worker polls it for a change); [1]: unused padding
        self._posted = np.zeros(2, np.int64)
        self._job: _Job | None = None
        for i in range(workers):
            threading.Thread(target=self._serve, args=(i,), name=f"offload-cpu_{i}", daemon=True).start()

    def run(self, fn: Callable[[int, int], object], bounds: list[int]) -> None:
        """Call ``fn(lo, hi)`` for each consecutive pair of ``bounds``, in parallel."""
        job = _Job(fn, bounds)
        handoff = self._handoff if (self._state == _POLLING).any() else 0
        with self._cond:
            self._job = job
            self._posted[0] += 1
            self._cond.notify_all()
        if handoff:
            _poll(job.counts, 1, 1, handoff)
        job.work()
        if job.done < job.nchunks and not _poll(job.counts, 0, job.nchunks, self._polls):
            job.finished.wait()
        if job.error is not None:
            raise job.error

    def _serve(self, i: int) -> None:
        """Run chunks of each posted call. A worker polls only while calls come closer together
        than the polling time: after a longer pause it blocks at once (a caller that does other
        work between its calls, a test computing its expected values, gains nothing from a
        worker that spins, and its other threads lose a CPU)."""
        seen, idle_since, close = 0, time.perf_counter(), True
        while True:
            if close and _poll(self._posted, 0, seen + 1, self._polls):
                self.polled += 1
            else:
                self.spun_out += close
                self._state[i] = _BLOCKED
                with self._cond:
                    while int(self._posted[0]) == seen:
                        self._cond.wait()
            self._state[i] = _WORKING
            close = time.perf_counter() - idle_since < self._spin_s
            with self._cond:
                seen, job = int(self._posted[0]), self._job
            if job is not None:
                job.work()
            idle_since = time.perf_counter()
            self._state[i] = _POLLING if close else _BLOCKED  # what the loop does next


_POOLS: dict[int, Pool] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(workers: int) -> Pool:
    """The process's pool of ``workers`` threads, made on first use (backends with the same
    thread count share it)."""
    with _POOLS_LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = Pool(workers)
        return _POOLS[workers]


def _after_fork() -> None:
    # a child has none of its parent's threads: it makes its own pools on first use
    global _POOLS_LOCK
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def default_threads() -> int:
    """The number of CPUs this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
