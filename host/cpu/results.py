"""Result arrays whose memory is reused once the caller has dropped them.

A fresh result of a million keys or more comes from the operating system as untouched pages:
the kernel's first write to each page faults, and the kernel zeroes it. On this project's
2-core bench machine that costs more than the hashing: xxh64 of 10M keys took about 20 ms into a
fresh array and 3.5 ms into memory written before (docs/architecture.md, "Result memory"). How
much of a call is page faults also depended on the C allocator's history (glibc moves its
``mmap`` threshold with the sizes freed before), so the same call took 250 us or 570 us at 1M
keys: a cost the cost model cannot predict.

:class:`ResultPool` hands out result arrays of at least :data:`MIN_BYTES` from memory it keeps:
each array is a view of a pooled block through a small lease object that numpy keeps as the
array's base. Every view, slice, reshape or Arrow array made from the result holds the lease,
so the block goes back to the pool only when the last of them is gone, never while anything can
still read it. The pool keeps at most ``limit`` bytes of free blocks (:data:`DEFAULT_LIMIT`, or
``OFFLOAD_RESULT_POOL_MB``; ``0`` turns the pool off), frees the least recently returned
beyond that, and frees a block unused for :data:`DECAY_S` at its next use. Arrays are 64-byte
aligned (one cache line, one AVX-512 vector).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict, deque
from typing import Any

import numpy as np

__all__ = ["DEFAULT_LIMIT", "MIN_BYTES", "ResultPool", "pool_limit", "result_pool"]

#: Smaller results come from numpy's allocator: glibc serves them from its heap without faults.
MIN_BYTES = 128 << 10
#: Free memory the process-wide pool keeps at most (``OFFLOAD_RESULT_POOL_MB`` overrides).
DEFAULT_LIMIT = 512 << 20
#: A free block unused this long is freed at the pool's next use (a process that once ran a big
#: batch, e.g. one of many Ray workers, does not keep its memory for good).
DECAY_S = 30.0
_ALIGN = 64
_HUGE = 2 << 20  # blocks from 2 MiB are whole transparent huge pages
_SMALL = 64 << 10


def _capacity(nbytes: int) -> int:
    step = _HUGE if nbytes >= _HUGE else _SMALL
    return -(-nbytes // step) * step


class _Block:
    """A block of memory and its first 64-byte aligned address (read once: numpy's ``ctypes``
    attribute costs a microsecond)."""

    __slots__ = ("address", "cap", "mem")

    def __init__(self, cap: int) -> None:
        self.mem = np.empty(cap, np.uint8)
        self.cap = cap
        start = self.mem.__array_interface__["data"][0]
        self.address = start + (-start) % _ALIGN


class _Lease:
    """The base of one result array: returns its block to the pool when no view is left."""

    __slots__ = ("__array_interface__", "_block", "_pool")

    def __init__(self, pool: ResultPool, block: _Block, n: int, typestr: str) -> None:
        self._pool, self._block = pool, block
        self.__array_interface__ = {
            "data": (block.address, False),
            "shape": (n,),
            "typestr": typestr,
            "version": 3,
        }

    def __del__(self) -> None:
        pool = self._pool
        if pool is not None:  # None at interpreter shutdown
            pool._give(self._block)


class ResultPool:
    """Blocks of memory for result arrays, reused after the caller drops them (thread-safe)."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be a non-negative number of bytes, got {limit!r}")
        self.limit = limit
        self._free: dict[int, list[_Block]] = {}  # capacity -> free blocks
        # id(block) -> (capacity, when it was returned), oldest first
        self._order: OrderedDict[int, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._returned: deque[_Block] = deque()  # given back while the lock was held
        self.kept = 0  # bytes of free blocks
        self._swept = -DECAY_S  # when blocks unused for DECAY_S were last freed
        self.hits = 0
        self.misses = 0

    def empty(self, n: int, dtype: Any) -> np.ndarray:
        """An uninitialised 1-D array of ``n`` items (``numpy.empty``'s contract)."""
        dt = np.dtype(dtype)
        nbytes = n * dt.itemsize
        if nbytes < MIN_BYTES or self.limit == 0:
            return np.empty(n, dt)
        need = _capacity(nbytes + _ALIGN)
        block = self._take(need)
        if block is None:
            block = _Block(need)
        return np.asarray(_Lease(self, block, n, dt.str))

    def _take(self, need: int) -> _Block | None:
        """A free block of the smallest capacity from ``need`` to twice that."""
        with self._lock:
            if self._returned:
                self._drain()
            cap = need
            if need not in self._free:  # the usual case is a block of the same size
                fits = [c for c in self._free if need < c <= 2 * need]
                if not fits:
                    self.misses += 1
                    return None
                cap = min(fits)
            blocks = self._free[cap]
            block = blocks.pop()
            if not blocks:
                del self._free[cap]
            del self._order[id(block)]
            self.kept -= cap
            self.hits += 1
            return block

    def _give(self, block: _Block) -> None:
        """A lease's block back. Never waits: a lease can die inside the pool's own critical
        section (the garbage collector runs on any allocation) or while another thread holds
        the lock; such a block is queued and kept at the next :meth:`empty`."""
        if not self._lock.acquire(blocking=False):
            self._returned.append(block)  # atomic: no lock needed
            return
        try:
            self._keep(block)
            self._drain()
        finally:
            self._lock.release()

    def _drain(self) -> None:
        while self._returned:
            self._keep(self._returned.popleft())
        now = time.monotonic()
        if now - self._swept < 1.0:  # blocks decay over DECAY_S: once a second is often enough
            return
        self._swept = now
        while self._order and next(iter(self._order.values()))[1] < now - DECAY_S:
            self._evict_oldest()

    def _keep(self, block: _Block) -> None:
        cap = block.cap
        if cap > self.limit:
            return
        self._free.setdefault(cap, []).append(block)
        self._order[id(block)] = (cap, time.monotonic())
        self.kept += cap
        while self.kept > self.limit:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        key, (cap, _) = self._order.popitem(last=False)
        blocks = self._free[cap]
        blocks[:] = [b for b in blocks if id(b) != key]
        if not blocks:
            del self._free[cap]
        self.kept -= cap

    def clear(self) -> None:
        """Free every kept block (results still in use are not affected)."""
        with self._lock:
            self._returned.clear()
            self._free.clear()
            self._order.clear()
            self.kept = 0

    def stats(self) -> dict[str, int]:
        with self._lock:
            self._drain()
            blocks = len(self._order)
            return {"kept_bytes": self.kept, "blocks": blocks, "hits": self.hits, "misses": self.misses}


def pool_limit(env: str | None) -> int:
    """The pool's limit from ``OFFLOAD_RESULT_POOL_MB`` (unset: :data:`DEFAULT_LIMIT`)."""
    if env is None or env.strip() == "":
        return DEFAULT_LIMIT
    try:
        mb = float(env)
    except ValueError:
        mb = -1.0
    if not 0 <= mb < float("inf"):  # NaN compares false
        raise ValueError(f"OFFLOAD_RESULT_POOL_MB must be a non-negative number of MiB, got {env!r}")
    return int(mb * (1 << 20))


_POOL: ResultPool | None = None
_POOL_LOCK = threading.Lock()


def result_pool() -> ResultPool:
    """The process-wide pool every CPU backend's results come from."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ResultPool(pool_limit(os.environ.get("OFFLOAD_RESULT_POOL_MB")))
        return _POOL


def _after_fork() -> None:
    """A child process starts with unheld locks (another thread may have held one at the fork)."""
    global _POOL_LOCK
    _POOL_LOCK = threading.Lock()
    if _POOL is not None:
        _POOL._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
