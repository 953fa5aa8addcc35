"""``offload demo``: the main job.

Builds a synthetic recommendation batch (user/item ids, categorical strings, float features,
behaviour sequences), runs every operator on every available backend, and prints a table of
backend x operator with bit-exact status and throughput. Every result is checked against the golden
model on a random sample of records and compared in full with the CPU backend's result.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from offload import batch as B
from offload.backend import BackendError, BackendUnavailable, BitExactError, Result
from offload.ops import OpCall, golden_result, make_call
from offload.runtime import BACKEND_FACTORIES, Runtime, result_element


@dataclass
class Workload:
    name: str
    call: OpCall
    batch: Any
    unit: str


def synthetic_events(n: int, seed: int = 2026) -> dict[str, Any]:
    """A day of recsys events in miniature: ids, categorical strings, floats, behaviour sequences."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    user = (rng.zipf(1.3, n) % (1 << 40)).astype(np.int64) * 2654435761 % (1 << 62)
    item = rng.integers(0, 1 << 31, n, dtype=np.int64).astype(np.int32)
    countries = np.array(["US", "DE", "BR", "IN", "JP", "FR", "GB", "CN", "MX", "KR"])
    devices = np.array(["ios_17.2", "android_14", "web_chrome", "web_safari", "tv_os"])
    cats = np.char.add(np.char.add(countries[rng.integers(0, 10, n)], "|"), devices[rng.integers(0, 5, n)])
    cats = np.char.add(cats, np.char.mod("|cat_%d", rng.integers(0, 5000, n)))
    price = rng.lognormal(3.0, 1.0, n).astype(np.float32)
    price[rng.random(n) < 0.001] = np.nan  # missing values are NaN in the feature log
    dwell = rng.exponential(30.0, n)
    seq_len = rng.integers(0, 40, n)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(seq_len, out=offsets[1:])
    # Behaviour sequences: timestamps, mostly increasing, so delta coding pays.
    steps = rng.integers(1, 600, int(offsets[-1]), dtype=np.int64)
    ts = 1_700_000_000 + np.cumsum(steps)
    return {
        "user_id": user,
        "item_id": item,
        "category": pa.array(cats.tolist(), pa.string()),
        "price": price,
        "dwell": dwell,
        "sequences": (offsets, ts),
    }


def workloads(ev: dict[str, Any]) -> list[Workload]:
    price_b = np.quantile(ev["price"][~np.isnan(ev["price"])], np.linspace(0, 1, 66)[1:-1])
    price_b = np.unique(price_b.astype(np.float32))
    dwell_b = np.unique(np.quantile(ev["dwell"], np.linspace(0, 1, 18)[1:-1]))
    seqs = B.as_sequences(ev["sequences"])
    enc_offsets, enc_data = _encode_reference(seqs)
    return [
        Workload("xxh64 user_id", make_call("xxh64", seed=7), B.as_records(ev["user_id"]), "keys"),
        Workload("xxh32 item_id", make_call("xxh32", seed=7), B.as_records(ev["item_id"]), "keys"),
        Workload(
            "hash_bucket category",
            make_call("hash_bucket", num_buckets=1_000_003, seed=1),
            B.as_records(ev["category"]),
            "strings",
        ),
        Workload(
            "hash_bucket fastrange",
            make_call("hash_bucket", num_buckets=1 << 20, seed=1, method="fastrange"),
            B.as_records(ev["user_id"]),
            "keys",
        ),
        Workload("fid v2 item_id", make_call("fid", slot=42, version=2), B.as_records(ev["item_id"]), "keys"),
        Workload(
            "fid v1 category", make_call("fid", slot=513, version=1), B.as_records(ev["category"]), "strings"
        ),
        Workload(
            "bucketize price f32",
            make_call("bucketize", boundaries=price_b, dtype=np.float32),
            B.as_numbers(ev["price"]),
            "values",
        ),
        Workload(
            "bucketize dwell f64 left",
            make_call("bucketize", boundaries=dwell_b, dtype=np.float64, right=False),
            B.as_numbers(ev["dwell"]),
            "values",
        ),
        Workload(
            "farmhash64 category (TF)", make_call("farmhash64"), B.as_records(ev["category"]), "strings"
        ),
        Workload(
            "cityhash64 user_id (Monolith)", make_call("cityhash64"), B.as_records(ev["user_id"]), "keys"
        ),
        Workload(
            "murmur3_32 category (Spark)",
            make_call("murmur3_32", seed=42, tail="spark"),
            B.as_records(ev["category"]),
            "strings",
        ),
        Workload(
            "sigrid_hash user_id (TorchRec)",
            make_call("sigrid_hash", salt=0, max_value=1 << 24, dtype=np.int64),
            B.as_numbers(ev["user_id"]),
            "keys",
        ),
        Workload(
            "decimal_hash_bucket user_id (Keras Hashing)",
            make_call("decimal_hash_bucket", num_buckets=1 << 20, dtype=np.int64),
            B.as_numbers(ev["user_id"]),
            "keys",
        ),
        Workload("delta_varint_encode", make_call("delta_varint_encode"), seqs, "sequences"),
        Workload(
            "delta_varint_decode",
            make_call("delta_varint_decode"),
            B.as_encoded(enc_offsets, enc_data),
            "sequences",
        ),
    ]


def _encode_reference(seqs: B.Sequences) -> tuple[np.ndarray, np.ndarray]:
    from offload.host.cpu import CpuBackend

    return CpuBackend().run(make_call("delta_varint_encode"), seqs)  # type: ignore[return-value]


def _same(a: Result, b: Result) -> bool:
    if isinstance(a, tuple):
        return all(np.array_equal(x, y) for x, y in zip(a, b))
    return bool(np.array_equal(a, b))


def check_against_golden(w: Workload, res: Result, sample: int, rng: random.Random) -> int | None:
    """First sampled index whose result differs from the golden model, or None."""
    n = w.batch.n
    for i in sorted(rng.sample(range(n), min(sample, n))):
        if result_element(w.call.op, res, i) != golden_result(w.call, w.batch.record(i)):
            return i
    return None


@contextlib.contextmanager
def local_service(backend: str = "cpu") -> Iterator[str | None]:
    """Start an ``offload serve`` on loopback for the demo; yields its address or None."""
    try:
        from offload.host.smartnic.testing import ServerProcess
    except ImportError as e:
        print(f"  (smartnic service unavailable: {e})", file=sys.stderr)
        yield None
        return
    # The service compiles/loads its kernels before it listens: allow for a cold numba cache.
    proc = ServerProcess(backend=backend, startup_timeout=600.0)
    try:
        proc.start()  # starts `offload serve` on an ephemeral loopback port and health-checks it
    except Exception as e:  # the demo goes on without the service; the table says why
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"  (smartnic service did not start: {first})", file=sys.stderr)
        proc.stop()
        yield None
        return
    try:
        yield proc.address
    finally:
        proc.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="offload demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000, help="events in the batch (1M)")
    p.add_argument("--backends", default="cpu,sim,fpga,smartnic", help="backends to run, comma-separated")
    p.add_argument(
        "--fpga",
        default=os.environ.get("OFFLOAD_FPGA", "sim"),
        help="fpga device: 'sim' (simulated PYNQ device, default here) or 'board'",
    )
    p.add_argument(
        "--smartnic",
        default=os.environ.get("OFFLOAD_SMARTNIC", "local"),
        help="'local' starts an 'offload serve' on loopback; or HOST:PORT",
    )
    p.add_argument(
        "--sim-events",
        type=int,
        default=50_000,
        help="events sent to simulated hardware (the Verilator model runs at ~0.1-1 M cycles/s; 0 = all)",
    )
    p.add_argument("--sample", type=int, default=500, help="records checked against golden per cell")
    a = p.parse_args(argv)
    if a.events < 1:
        p.error("--events must be at least 1")
    names = [n.strip() for n in a.backends.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKEND_FACTORIES]
    if unknown or not names:
        p.error(
            f"unknown backend {unknown[0]!r}: expected a comma-separated list of "
            f"{', '.join(BACKEND_FACTORIES)}"
            if unknown
            else "--backends names no backend"
        )

    t0 = time.perf_counter()
    print(f"offload demo: {a.events:,} synthetic recsys events")
    ev = synthetic_events(a.events)
    ws = workloads(ev)
    print(
        f"  built the batch in {time.perf_counter() - t0:.1f} s: user/item ids, "
        f"{len(ev['category']):,} categorical strings, 2 float features, "
        f"{int(ev['sequences'][0][-1]):,} sequence values"
    )

    svc = (
        local_service()
        if ("smartnic" in names and a.smartnic == "local")
        else contextlib.nullcontext(None if a.smartnic == "local" else a.smartnic)
    )
    with svc as addr:
        fpga_dev = None if a.fpga == "board" else a.fpga
        rt = Runtime(backends=names, fallback=False, fpga=fpga_dev, smartnic=addr)
        rng = random.Random(1)
        cpu_results: dict[str, Result] = {}
        rows: list[tuple[str, str, str, str]] = []
        status = {n: rt.availability(n, refresh=True) for n in names}
        if "cpu" in names:
            rt.backend("cpu").warmup()  # type: ignore[attr-defined]
        for name in names:
            av = status[name]
            if not av.ok:
                rows.append((name, "*", "unavailable", av.reason))
                continue
            for w in ws:
                be = rt.backend(name)
                why = be.supports(w.call, w.batch)
                if why is not None:
                    rows.append((name, w.name, "n/a", why))
                    continue
                b = w.batch
                simulated = name == "sim" or (name == "fpga" and fpga_dev == "sim")
                if simulated and a.sim_events and b.n > a.sim_events:
                    b = b.slice(0, a.sim_events)
                try:
                    t = time.perf_counter()
                    res = rt.run(w.call, b, backend=name)
                    dt = time.perf_counter() - t
                except (BackendError, BackendUnavailable, BitExactError) as e:
                    rows.append((name, w.name, "FAILED", str(e)[:100]))
                    continue
                wb = Workload(w.name, w.call, b, w.unit)
                bad = check_against_golden(wb, res, a.sample, rng)
                if name == "cpu":
                    cpu_results[w.name] = res
                agrees = ""
                if name != "cpu" and w.name in cpu_results and b is w.batch:
                    agrees = ", = cpu" if _same(cpu_results[w.name], res) else ", != cpu"
                verdict = "bit-exact" if bad is None and "!=" not in agrees else "MISMATCH"
                rate = b.n / dt if dt > 0 else float("inf")
                rows.append(
                    (
                        name,
                        w.name,
                        verdict,
                        f"{rate / 1e6:8.2f} M {w.unit}/s ({b.n:,} in {dt * 1e3:.0f} ms; "
                        f"golden sample {min(a.sample, b.n)}{agrees})",
                    )
                )
        rt.close()

    w0 = max([len("backend")] + [len(r[0]) for r in rows])
    w1 = max([len("operator")] + [len(r[1]) for r in rows])
    print()
    print(f"{'backend':<{w0}}  {'operator':<{w1}}  {'status':<11}  throughput / reason")
    print("-" * (w0 + w1 + 60))
    for r in rows:
        print(f"{r[0]:<{w0}}  {r[1]:<{w1}}  {r[2]:<11}  {r[3]}")
    failed = [r for r in rows if r[2] in ("MISMATCH", "FAILED")]
    print(
        f"\n{sum(r[2] == 'bit-exact' for r in rows)} bit-exact, {len(failed)} failed or mismatched; "
        f"total {time.perf_counter() - t0:.1f} s"
    )
    if not any(r[2] == "bit-exact" for r in rows):
        print(
            "offload demo: nothing ran: every backend named was unavailable or unable to run "
            "the workloads (see the reasons above)",
            file=sys.stderr,
        )
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
