"""SmartNIC service benchmarks over loopback: ``rows(quick) -> list[dict]``.

Rows (``name, value, unit, baseline, ratio, target, passed``):

* ``smartnic_xxh64_1M_keys_per_s``: end-to-end keys/s of 1M-key uint64 xxh64 batches through
  ``SmartNicBackend`` to an ``offload serve --backend cpu`` child process (median of the runs);
  baseline: the CPU backend in process; target 50 M keys/s.
* ``smartnic_payload_out_GBps`` / ``smartnic_payload_in_GBps``: payload bytes over the time the
  client spends moving them (inside ``sendmsg`` / ``recv_into`` + frame decoding and CRC32C) during
  those batches: the link rate each way while the data flows; target 1 GB/s each way.
* ``smartnic_effective_GBps``: 8 MB each way over the whole round trip (compute included).
* ``smartnic_1k_p50_us`` / ``smartnic_1k_p99_us``: round trip of 1000-key batches (target p50 <=
  300 us); baseline: the CPU backend in process.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

__all__ = ["rows", "measure"]


def _row(
    name: str,
    value: float,
    unit: str,
    baseline: float | None,
    target: float | None,
    higher_is_better: bool = True,
) -> dict[str, Any]:
    ratio = (value / baseline if higher_is_better else baseline / value) if baseline else None
    passed = None if target is None else (value >= target if higher_is_better else value <= target)
    return {
        "name": name,
        "value": round(value, 3),
        "unit": unit,
        "baseline": None if baseline is None else round(baseline, 3),
        "baseline_unit": "" if baseline is None else f"{unit} (cpu backend in process)",
        "ratio": None if ratio is None else round(ratio, 3),
        "target": target,
        "target_kind": "value" if higher_is_better else "max",
        "passed": passed,
    }


def measure(quick: bool = True, address: str | None = None) -> dict[str, float]:
    from offload.batch import as_records
    from offload.host.cpu import CpuBackend
    from offload.ops import make_call

    from .backend import SmartNicBackend
    from .testing import ServerProcess

    reps = 5 if quick else 20
    small_reps = 300 if quick else 3000
    call = make_call("xxh64", seed=1)
    keys = np.random.default_rng(1).integers(0, 2**63, 1 << 20, dtype=np.uint64)
    big = as_records(keys)
    small = as_records(keys[:1000])
    cpu = CpuBackend()
    cpu.run(call, big)
    t_cpu = float(np.median([_timed(lambda: cpu.run(call, big)) for _ in range(reps)]))
    cpu_small = sorted(_timed(lambda: cpu.run(call, small)) for _ in range(200))[100]

    srv = None if address else ServerProcess(backend="cpu").start()
    try:
        be = SmartNicBackend(address or srv.address)  # type: ignore[union-attr]
        ref = cpu.run(call, big)
        if not np.array_equal(be.run(call, big), ref):  # an exception, not an assert: kept by -O
            raise RuntimeError("smartnic result differs from the CPU backend's")
        conn_stats = []
        times = []
        for _ in range(reps):
            conn = be.pool.acquire(2.0)
            s0, r0, ts0, tr0 = conn.bytes_sent, conn.bytes_received, conn.send_s, conn.recv_s
            be.pool.release(conn)
            times.append(_timed(lambda: be.run(call, big)))
            conn_stats.append(
                (conn.bytes_sent - s0, conn.bytes_received - r0, conn.send_s - ts0, conn.recv_s - tr0)
            )
        t_med = float(np.median(times))
        sent = sum(c[0] for c in conn_stats)
        recv = sum(c[1] for c in conn_stats)
        send_s = sum(c[2] for c in conn_stats)
        recv_s = sum(c[3] for c in conn_stats)
        for _ in range(50):
            be.run(call, small)
        lat = np.array([_timed(lambda: be.run(call, small)) for _ in range(small_reps)])
        be.close()
    finally:
        if srv is not None:
            srv.close()
    return {
        "keys_per_s": keys.size / t_med,
        "cpu_keys_per_s": keys.size / t_cpu,
        "out_GBps": sent / send_s / 1e9 if send_s else 0.0,
        "in_GBps": recv / recv_s / 1e9 if recv_s else 0.0,
        "effective_GBps": keys.nbytes / t_med / 1e9,
        "p50_us": float(np.percentile(lat, 50) * 1e6),
        "p99_us": float(np.percentile(lat, 99) * 1e6),
        "cpu_small_us": cpu_small * 1e6,
    }


def _timed(f: Any) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def rows(quick: bool = True) -> list[dict[str, Any]]:
    m = measure(quick)
    return [
        _row("smartnic_xxh64_1M_keys_per_s", m["keys_per_s"], "keys/s", m["cpu_keys_per_s"], 50e6),
        _row("smartnic_payload_out_GBps", m["out_GBps"], "GB/s", None, 1.0),
        _row("smartnic_payload_in_GBps", m["in_GBps"], "GB/s", None, 1.0),
        _row("smartnic_effective_GBps", m["effective_GBps"], "GB/s", None, None),
        _row("smartnic_1k_p50_us", m["p50_us"], "us", m["cpu_small_us"], 300.0, higher_is_better=False),
        _row("smartnic_1k_p99_us", m["p99_us"], "us", m["cpu_small_us"], None, higher_is_better=False),
    ]


if __name__ == "__main__":
    import json
    import sys

    for r in rows(quick="--full" not in sys.argv):
        print(json.dumps(r))
