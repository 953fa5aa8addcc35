"""The CPU backend's result pool: memory reused only once nothing can read the old result."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from offload import golden
from offload.host.cpu import CpuBackend
from offload.host.cpu.results import DEFAULT_LIMIT, MIN_BYTES, ResultPool, pool_limit, result_pool
from offload.runtime import Runtime

N = 1 << 16  # 512 KiB of uint64: above MIN_BYTES


def address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def test_a_dropped_result_serves_the_next():
    pool = ResultPool()
    a = pool.empty(N, np.uint64)
    where = address(a)
    del a
    assert address(pool.empty(N, np.uint64)) == where
    assert pool.stats()["hits"] == 1


@pytest.mark.parametrize(
    "keep",
    [
        lambda a: a[::2],
        lambda a: a.reshape(256, -1),
        lambda a: a.view(np.int64),
        lambda a: memoryview(a),
        lambda a: a[10:20],
    ],
    ids=["strided", "reshaped", "retyped", "memoryview", "slice"],
)
def test_a_view_keeps_the_memory_from_the_pool(keep):
    pool = ResultPool()
    a = pool.empty(N, np.uint64)
    a[:] = 7
    view, where = keep(a), address(a)
    del a
    b = pool.empty(N, np.uint64)
    assert address(b) != where
    b[:] = 0
    assert np.asarray(view).view(np.uint64).ravel()[0] == 7
    second = address(b)
    del view, b
    assert pool.stats()["blocks"] == 2
    c, d = pool.empty(N, np.uint64), pool.empty(N, np.uint64)
    assert {address(c), address(d)} == {where, second}


def test_an_arrow_array_keeps_the_memory_from_the_pool():
    pa = pytest.importorskip("pyarrow", reason="pyarrow is an optional dependency")
    pool = ResultPool()
    a = pool.empty(N, np.uint64)
    a[:] = np.arange(N, dtype=np.uint64)
    arr, where = pa.array(a), address(a)
    del a
    b = pool.empty(N, np.uint64)
    b[:] = 0
    assert address(b) != where
    assert arr.to_numpy()[N - 1] == N - 1


def test_small_results_come_from_numpy():
    pool = ResultPool()
    a = pool.empty(MIN_BYTES // 8 - 1, np.uint64)
    assert a.flags.owndata and pool.stats() == {"kept_bytes": 0, "blocks": 0, "hits": 0, "misses": 0}


@pytest.mark.parametrize("dtype", [np.uint8, np.uint32, np.uint64, np.int64])
def test_results_are_aligned_writable_and_sized(dtype):
    n = MIN_BYTES + 3  # items: above MIN_BYTES bytes for every item size
    a = ResultPool().empty(n, dtype)
    assert (address(a) % 64, a.shape, a.dtype, a.flags.writeable) == (0, (n,), np.dtype(dtype), True)


def test_the_pool_keeps_at_most_its_limit_the_oldest_freed_first():
    block = N * 8 + (64 << 10)  # a result's block: its bytes, aligned, rounded to 64 KiB
    pool = ResultPool(limit=2 * block)
    a, b, c = (pool.empty(N, np.uint64) for _ in range(3))
    first = address(a)
    del a, b, c
    assert pool.stats()["kept_bytes"] == 2 * block
    d, e = pool.empty(N, np.uint64), pool.empty(N, np.uint64)
    assert first not in {address(d), address(e)}


def test_limit_zero_turns_the_pool_off():
    a = ResultPool(limit=0).empty(N, np.uint64)
    assert a.flags.owndata


def test_a_block_never_serves_a_result_less_than_half_its_size():
    pool = ResultPool()
    big = pool.empty(8 * N, np.uint64)
    where = address(big)
    del big
    assert address(pool.empty(N, np.uint64)) != where


@pytest.mark.parametrize(
    ("env", "limit"),
    [(None, DEFAULT_LIMIT), ("", DEFAULT_LIMIT), ("0", 0), ("1.5", 3 << 19), ("64", 64 << 20)],
)
def test_the_limit_from_the_environment(env, limit):
    assert pool_limit(env) == limit


@pytest.mark.parametrize("env", ["-1", "lots", "nan", "inf"])
def test_a_bad_limit_is_refused(env):
    message = rf"^OFFLOAD_RESULT_POOL_MB must be a non-negative number of MiB, got '{env}'$"
    with pytest.raises(ValueError, match=message):
        pool_limit(env)


@pytest.mark.parametrize("limit", [-1, 1.5, True, "1"])
def test_a_bad_pool_limit_is_refused(limit):
    with pytest.raises(ValueError, match=r"^limit must be a non-negative number of bytes, got "):
        ResultPool(limit=limit)


def test_threads_taking_and_dropping_results_never_share_memory():
    pool = ResultPool()
    errors: list[str] = []

    def work(tag: int) -> None:
        for _ in range(200):
            a = pool.empty(N, np.uint64)
            a[:] = tag
            if not (a == tag).all():
                errors.append(f"thread {tag} saw another's write")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_the_cpu_backend_reuses_a_dropped_result_and_stays_exact():
    keys = np.arange(1 << 17, dtype=np.uint64)
    rt = Runtime([CpuBackend(threads=2)])
    first = rt.xxh64(keys, seed=3)
    assert first.tolist()[:5] == [golden.xxh64(int(k).to_bytes(8, "little"), 3) for k in keys[:5]]
    where = address(first)
    kept = first[::1000].copy()
    del first
    again = rt.xxh64(keys, seed=3)
    assert address(again) == where or result_pool().limit == 0
    assert (again[::1000] == kept).all()


def test_a_lease_dying_while_the_pool_is_locked_is_kept_later():
    # the garbage collector can drop a result inside the pool's own critical section
    pool = ResultPool()
    a = pool.empty(N, np.uint64)
    where = address(a)
    with pool._lock:
        del a
    assert pool.stats() == {"kept_bytes": N * 8 + (64 << 10), "blocks": 1, "hits": 0, "misses": 1}
    assert address(pool.empty(N, np.uint64)) == where


def test_a_forked_child_can_use_the_pool_a_thread_held_at_the_fork():
    import os

    pool = result_pool()
    with pool._lock:
        pid = os.fork()
        if pid == 0:  # the child: the lock must be free here (a deadlock ends at the alarm)
            import signal

            signal.alarm(5)
            try:
                ok = pool.empty(N, np.uint64).shape == (N,)
            finally:
                os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_bad_limit_in_the_environment_fails_the_call_with_its_message(monkeypatch):
    from offload.host.cpu import results

    monkeypatch.setattr(results, "_POOL", None)
    monkeypatch.setenv("OFFLOAD_RESULT_POOL_MB", "lots")
    with pytest.raises(
        ValueError, match=r"^OFFLOAD_RESULT_POOL_MB must be a non-negative number of MiB, got 'lots'$"
    ):
        Runtime([CpuBackend(threads=1)]).xxh64(np.arange(N, dtype=np.uint64))


def test_a_block_unused_for_the_decay_time_is_freed(monkeypatch):
    from offload.host.cpu import results

    clock = [1000.0]
    monkeypatch.setattr(results.time, "monotonic", lambda: clock[0])
    pool = ResultPool()
    pool.empty(N, np.uint64)  # dropped at once: its block goes back to the pool
    assert pool.stats()["blocks"] == 1
    clock[0] += results.DECAY_S - 1
    assert pool.stats()["blocks"] == 1
    clock[0] += 2
    assert pool.stats() == {"kept_bytes": 0, "blocks": 0, "hits": 0, "misses": 1}
