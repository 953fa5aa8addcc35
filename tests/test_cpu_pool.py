"""The CPU backend's worker threads (:mod:`offload.host.cpu.pool`): every chunk once, errors
re-raised, concurrent callers, fork, and the polling between calls."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from typing import Any

import numpy as np
import pytest

from offload.batch import as_records
from offload.host.cpu import CpuBackend
from offload.host.cpu import pool as P
from offload.ops import make_call


def chunked(n: int, k: int) -> list[int]:
    return [i * n // k for i in range(k + 1)]


def ranges_of(pool: P.Pool, n: int, k: int) -> list[tuple[int, int, str]]:
    seen: list[tuple[int, int, str]] = []
    lock = threading.Lock()

    def fn(lo: int, hi: int) -> None:
        with lock:
            seen.append((lo, hi, threading.current_thread().name))

    pool.run(fn, chunked(n, k))
    return seen


def test_every_chunk_runs_once() -> None:
    pool = P.Pool(2)
    for k in (1, 2, 3, 8, 64):
        got = ranges_of(pool, 1000, k)
        assert sorted((lo, hi) for lo, hi, _ in got) == list(zip(chunked(1000, k), chunked(1000, k)[1:]))


def test_workers_take_chunks_while_the_caller_runs_its_own() -> None:
    pool = P.Pool(1)
    started = threading.Event()

    def fn(lo: int, hi: int) -> None:
        if lo == 0:  # the first chunk (the caller's): waits until another thread has one
            assert started.wait(10.0)
        else:
            started.set()

    pool.run(fn, chunked(100, 4))


def test_the_first_error_is_raised_and_the_pool_serves_the_next_call() -> None:
    pool = P.Pool(1)

    def fn(lo: int, hi: int) -> None:
        if lo == 50:
            raise KeyError("chunk 50")

    with pytest.raises(KeyError, match="chunk 50"):
        pool.run(fn, chunked(100, 4))
    assert len(ranges_of(pool, 100, 4)) == 4


def test_concurrent_callers_each_get_all_their_chunks() -> None:
    pool = P.Pool(1)
    results: dict[int, list[int]] = {}

    def caller(c: int) -> None:
        out = np.zeros(4000, np.int64)

        def fn(lo: int, hi: int) -> None:
            out[lo:hi] += c

        for _ in range(50):
            pool.run(fn, chunked(4000, 8))
        results[c] = sorted(set(out.tolist()))

    threads = [threading.Thread(target=caller, args=(c,)) for c in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60.0)
    assert results == {1: [50], 2: [100], 3: [150]}


def test_a_busy_worker_never_stalls_another_call() -> None:
    """A worker stuck in a long chunk of one call: a second call runs all its chunks itself."""
    pool = P.Pool(1)
    release, inside = threading.Event(), threading.Event()

    def slow(lo: int, hi: int) -> None:
        if threading.current_thread().name.startswith("offload-cpu"):
            inside.set()
            release.wait(30.0)
        else:
            time.sleep(0.001)  # the caller's chunks leave the worker time to take one

    first = threading.Thread(target=pool.run, args=(slow, chunked(100, 50)))
    first.start()
    assert inside.wait(10.0)
    try:
        got = ranges_of(pool, 100, 8)
        assert len(got) == 8 and {name for _, _, name in got} == {threading.current_thread().name}
    finally:
        release.set()
        first.join(30.0)


@pytest.mark.parametrize("spin_us", ["0", "50", "1000"])
def test_with_or_without_polling_the_result_is_the_same(monkeypatch: Any, spin_us: str) -> None:
    monkeypatch.setenv("OFFLOAD_CPU_SPIN_US", spin_us)
    pool = P.Pool(1)
    assert (pool._polls == 0) == (spin_us == "0")
    for gap in (0.0, 0.002):
        time.sleep(gap)  # longer than the polling: the worker has blocked
        assert len(ranges_of(pool, 1000, 8)) == 8


def test_workers_poll_only_while_calls_come_close_together(monkeypatch: Any) -> None:
    # a polling time of 50 ms: calls back to back come well within it even on a loaded machine
    # (with 1 ms, a worker woken late on a busy CPU saw every gap as a long one)
    monkeypatch.setenv("OFFLOAD_CPU_SPIN_US", "50000")
    pool = P.Pool(1)

    never, spin = np.zeros(1, np.int64), P._polls(2e-5)

    def call() -> None:  # chunks of 20 us without the GIL, as a kernel's
        pool.run(lambda lo, hi: P._poll(never, 0, 1, spin), chunked(8, 8))

    # back to back: the worker finds calls polling (rounds of 50 until it does, for up to 10 s:
    # on a machine busy with other processes a worker may get no CPU for a whole round)
    deadline = time.monotonic() + 10.0
    while pool.polled == 0 and time.monotonic() < deadline:
        for _ in range(50):
            call()
    assert pool.polled > 0
    time.sleep(0.2)
    call()  # after a pause longer than the polling time
    # The counts are read once the worker is done with that call: it counts a call found by
    # polling only when it holds the GIL again, which can be after the caller ran every chunk
    # and returned (seen on a loaded machine: a count read at once missed it).
    time.sleep(0.2)
    polled, spun_out = pool.polled, pool.spun_out
    for _ in range(5):
        call()
        time.sleep(0.2)
    # calls 0.2 s apart: the worker blocks at once, neither finding a call by polling nor
    # polling in vain
    assert (pool.polled, pool.spun_out) == (polled, spun_out)


def first_chunk_runners(pool: P.Pool, calls: int) -> set[str]:
    """The threads that ran the first chunk of each of ``calls`` calls back to back."""
    runners: set[str] = set()

    never, spin = np.zeros(1, np.int64), P._polls(2e-5)

    def fn(lo: int, hi: int) -> None:
        if lo == 0:
            runners.add(threading.current_thread().name)
        P._poll(never, 0, 1, spin)  # 20 us without the GIL and without sleeping, as a kernel

    for _ in range(calls):
        pool.run(fn, chunked(8, 8))
    return runners


def test_a_polling_worker_takes_the_first_chunk(monkeypatch: Any) -> None:
    # long polling and hand-off times: a loaded machine (the other test processes) may keep
    # the worker off a CPU for milliseconds
    monkeypatch.setenv("OFFLOAD_CPU_SPIN_US", "200000")
    monkeypatch.setattr(P, "HANDOFF_S", 0.2)
    # The caller waits for a polling worker to take a chunk before it takes one (the worker
    # needs the GIL, which a caller on its way into its own chunk holds): so the worker runs the
    # first chunk, which without the hand-off only the caller, holding the GIL from posting the
    # call to taking it, ever does.
    assert "offload-cpu_0" in first_chunk_runners(P.Pool(1), 20)
    monkeypatch.setattr(P, "HANDOFF_S", 0.0)
    assert first_chunk_runners(P.Pool(1), 20) == {threading.current_thread().name}


def test_a_pool_without_workers_never_waits_to_hand_off(monkeypatch: Any) -> None:
    polled: list[int] = []
    real = P._poll

    def poll(flags: np.ndarray, i: int, value: int, n: int) -> bool:
        polled.append(i)
        return real(flags, i, value, n)

    monkeypatch.setattr(P, "_poll", poll)
    pool = P.Pool(0)
    assert {name for _, _, name in ranges_of(pool, 100, 4)} == {threading.current_thread().name}
    assert 1 not in polled  # never polled for a worker to take a chunk


def test_a_worker_busy_with_another_call_is_not_waited_for(monkeypatch: Any) -> None:
    monkeypatch.setenv("OFFLOAD_CPU_SPIN_US", "1000000")
    monkeypatch.setattr(P, "HANDOFF_S", 1.0)
    pool = P.Pool(1)
    release = np.zeros(1, np.int64)
    running: list[str] = []

    def long_chunk(lo: int, hi: int) -> None:  # holds its thread without the GIL until released
        running.append(threading.current_thread().name)
        P._poll(release, 0, 1, P._polls(30.0))

    other = threading.Thread(target=pool.run, args=(long_chunk, chunked(2, 2)))
    other.start()
    try:
        deadline = time.monotonic() + 10.0
        while len(running) < 2 and time.monotonic() < deadline:  # the worker runs one of them
            time.sleep(0.001)
        assert "offload-cpu_0" in running
        t = time.perf_counter()
        for _ in range(20):
            pool.run(lambda lo, hi: None, chunked(4, 4))
        # a worker running a chunk is not handed one: no call waits out the 1 s hand-off
        assert time.perf_counter() - t < 1.0
    finally:
        release[0] = 1
        other.join(30.0)


@pytest.mark.parametrize("bad", ["-1", "fast", "1e7", "nan"])
def test_a_bad_spin_setting_is_a_clear_error(monkeypatch: Any, bad: str) -> None:
    monkeypatch.setenv("OFFLOAD_CPU_SPIN_US", bad)
    with pytest.raises(
        ValueError, match="OFFLOAD_CPU_SPIN_US must be a number of microseconds from 0 to 1000000, got"
    ):
        P.Pool(1)


def test_poll_sees_a_counter_another_thread_raises() -> None:
    flags = np.zeros(1, np.int64)
    assert not P._poll(flags, 0, 1, 1000)  # gives up
    timer = threading.Timer(0.01, lambda: flags.__setitem__(0, 3))
    timer.start()
    assert P._poll(flags, 0, 3, P._polls(10.0))  # returns once it is seen, long before 10 s
    timer.join()


KEYS = np.arange(100_000, dtype=np.uint64)


def parallel_xxh64() -> list[int]:
    be = CpuBackend(threads=2, parallel_threshold=0)
    return be.run(make_call("xxh64", seed=1), as_records(KEYS)).tolist()


def _child(q: Any) -> None:
    got = parallel_xxh64()
    q.put((got, sorted(t.name for t in threading.enumerate() if t.name.startswith("offload-cpu"))))


def test_a_forked_child_makes_its_own_workers() -> None:
    want = parallel_xxh64()  # the parent's workers exist before the fork
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    child = ctx.Process(target=_child, args=(q,))
    child.start()
    try:
        assert q.get(timeout=60) == (want, ["offload-cpu_0"])
    finally:
        child.join(30)
    assert child.exitcode == 0
