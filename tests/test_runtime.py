"""Runtime: auto selection, verification, fallback without loss, provenance in stats().

Faulty backends here are plain Python wrappers around the CPU backend; device-level fault injection
(stalled engine, dropped TLAST, device lost) lives with the sim/fpga/smartnic backends' tests.
"""

from __future__ import annotations

import numpy as np
import pytest

import offload
from offload import golden
from offload.backend import Availability, Backend, BackendError, Capabilities
from offload.host.cpu import CpuBackend
from offload.ops import OPERATORS


class Faulty(Backend):
    """Runs on the CPU kernels, then misbehaves as told."""

    def __init__(self, name: str, mode: str, at: int = 0, ops: tuple[str, ...] = OPERATORS) -> None:
        self.name = name  # type: ignore[misc]
        self.mode, self.at, self.ops = mode, at, ops
        self.cpu = CpuBackend()
        self.calls = 0
        self.closed = False

    def availability(self) -> Availability:
        if self.mode == "unavailable":
            return Availability(False, "board not found")
        return Availability(True, "test double")

    def capabilities(self) -> Capabilities:
        return Capabilities(ops=frozenset(self.ops), max_boundaries=4)

    def run(self, call, batch):
        self.calls += 1
        res = self.cpu.run(call, batch)
        if self.mode == "fail_after":
            k = min(self.at, batch.n)
            part = (res[0][: k + 1], res[1]) if isinstance(res, tuple) else res[:k]
            raise BackendError(
                f"device lost after {k} records", cause="device_lost", completed=k, partial=part
            )
        if self.mode == "crash":
            raise RuntimeError("segfault in driver")
        if self.mode == "short":  # loses its last records without saying so
            return res[: max(0, batch.n - self.at)]
        if self.mode == "overclaim":  # claims more completed records than its partial holds
            raise BackendError("lost", cause="device_lost", completed=batch.n, partial=res[: self.at])
        if self.mode == "flip" and not isinstance(res, tuple):
            res = res.copy()
            res[self.at] ^= res.dtype.type(1)
        return res

    def close(self) -> None:
        self.closed = True


KEYS = np.arange(1000, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)


def expected_xxh64(keys, seed=0):
    return np.array([golden.xxh64(k.tobytes(), seed) for k in keys], np.uint64)


def test_fallback_recomputes_only_the_unfinished_part():
    dev = Faulty("fpga", "fail_after", at=300)
    rt = offload.Runtime(backends=[dev, "cpu"])
    out = rt.xxh64(KEYS, seed=3)
    assert np.array_equal(out, expected_xxh64(KEYS, 3))
    st = rt.stats()
    assert st["last_call"]["segments"] == [("fpga", 0, 300), ("cpu", 300, 1000)]
    assert rt.last_call() == st["last_call"]
    (fb,) = st["fallbacks"]
    assert (fb["from"], fb["to"], fb["cause"], fb["at_record"], fb["records_redone"]) == (
        "fpga",
        "cpu",
        "device_lost",
        300,
        700,
    )
    assert st["by_backend"]["fpga"]["records"] == 300 and st["by_backend"]["cpu"]["records"] == 700


def test_fallback_through_a_chain_of_failing_devices_keeps_order():
    a = Faulty("fpga", "fail_after", at=100)
    b = Faulty("smartnic", "fail_after", at=250)
    rt = offload.Runtime(backends=[a, b, "cpu"])
    out = rt.xxh64(KEYS)
    assert np.array_equal(out, expected_xxh64(KEYS))
    assert rt.stats()["last_call"]["segments"] == [
        ("fpga", 0, 100),
        ("smartnic", 100, 350),
        ("cpu", 350, 1000),
    ]


def test_varint_fallback_joins_offsets():
    seqs = [np.arange(i, dtype=np.int64) * 7 - 3 for i in range(50)]
    dev = Faulty("fpga", "fail_after", at=20)
    rt = offload.Runtime(backends=[dev, "cpu"])
    off, data = rt.delta_varint_encode(seqs)
    for i, s in enumerate(seqs):
        assert data[off[i] : off[i + 1]].tobytes() == golden.delta_varint_encode_seq(s.tolist())


def test_crashing_backend_falls_back_and_is_recorded():
    rt = offload.Runtime(backends=[Faulty("fpga", "crash"), "cpu"])
    assert np.array_equal(rt.xxh64(KEYS), expected_xxh64(KEYS))
    (fb,) = rt.stats()["fallbacks"]
    assert fb["cause"] == "exception" and "segfault in driver" in fb["message"]


def test_fallback_false_raises_the_device_error():
    rt = offload.Runtime(backends=[Faulty("fpga", "fail_after", at=10), "cpu"], fallback=False)
    with pytest.raises(BackendError, match=r"^device lost after 10 records$") as ei:
        rt.xxh64(KEYS)
    assert ei.value.completed == 10


def test_verify_full_catches_a_flipped_bit():
    rt = offload.Runtime(backends=[Faulty("fpga", "flip", at=7)], verify="full")
    with pytest.raises(
        offload.BitExactError,
        match=r"^fpga result differs from the golden model for "
        r"xxh64\(seed=0\) at index 7: record b'.*', expected \d+ \(0x[0-9a-f]+\), "
        r"got \d+ \(0x[0-9a-f]+\)$",
    ) as ei:
        rt.xxh64(KEYS)
    e = ei.value
    assert e.index == 7 and e.expected ^ e.got == 1
    assert rt.stats()["mismatches"][0]["index"] == 7


def test_verify_sample_catches_a_flipped_bit_it_samples():
    """The sample is drawn from the runtime's seeded generator: with every record sampled the one
    flipped record is found; with one sampled record elsewhere it is not (what sampling means)."""
    import random

    rt = offload.Runtime(backends=[Faulty("fpga", "flip", at=7)], verify="sample", sample_size=len(KEYS))
    with pytest.raises(offload.BitExactError, match=r"at index 7: "):
        rt.xxh64(KEYS)
    assert rt.stats()["verified_records"] == 0 and rt.stats()["mismatches"][0]["index"] == 7
    seed = next(s for s in range(100) if random.Random(s).sample(range(len(KEYS)), 1) != [7])
    lucky = offload.Runtime(
        backends=[Faulty("fpga", "flip", at=7)], verify="sample", sample_size=1, rng_seed=seed
    )
    assert lucky.xxh64(KEYS)[7] != expected_xxh64(KEYS)[7]
    assert lucky.stats()["verified_records"] == 1


def test_verify_sample_finds_a_widespread_error():
    dev = Faulty("fpga", "flip", at=0)
    dev.run = lambda call, batch: dev.cpu.run(call, batch) ^ np.uint64(1 << 40)  # type: ignore
    rt = offload.Runtime(backends=[dev], verify="sample", sample_size=8)
    with pytest.raises(offload.BitExactError):
        rt.xxh64(KEYS)
    assert len(rt.stats()["mismatches"]) == 1


def test_verify_full_on_cpu_checks_every_record_against_golden(monkeypatch):
    import offload.runtime as runtime_module

    seen = []
    real = runtime_module.golden_result
    monkeypatch.setattr(
        runtime_module, "golden_result", lambda call, record: seen.append(record) or real(call, record)
    )
    rt = offload.Runtime(backends=["cpu"], verify="full")
    rt.xxh32([b"a", b"bc", b""], seed=1)
    assert seen == [b"a", b"bc", b""] and rt.stats()["verified_records"] == 3
    # ... and a wrong CPU result is caught by that comparison
    from offload.host.cpu import CpuBackend

    monkeypatch.setattr(CpuBackend, "run_xxh32", lambda self, call, batch: np.zeros(batch.n, np.uint32))
    monkeypatch.setattr("offload.host.cpu.backend._KERNELS", {})  # resolve the kernel afresh
    with pytest.raises(
        offload.BitExactError,
        match=r"^cpu result differs from the golden model "
        r"for xxh32\(seed=1\) at index 0: ",
    ):
        offload.Runtime(backends=["cpu"], verify="full").xxh32([b"a", b"bc", b""], seed=1)


def test_auto_skips_unavailable_and_incapable_backends():
    off = Faulty("fpga", "unavailable")
    small = Faulty("smartnic", "ok", ops=("xxh64", "bucketize"))
    rt = offload.Runtime(backends=[off, small, "cpu"])
    rt.xxh64(KEYS)
    assert rt.stats()["last_call"]["segments"] == [("smartnic", 0, 1000)]
    rt.xxh32(KEYS)  # smartnic does not implement xxh32
    assert rt.stats()["last_call"]["segments"] == [("cpu", 0, 1000)]
    x = np.linspace(-1, 1, 100)
    rt.bucketize(x, [-0.5, 0.0, 0.5, 0.75, 0.9])  # 5 boundaries > max 4
    assert rt.stats()["last_call"]["segments"] == [("cpu", 0, 100)]
    assert off.calls == 0


def test_named_backend_unavailable_or_incapable_raises():
    rt = offload.Runtime(backends=[Faulty("fpga", "unavailable"), "cpu"])
    with pytest.raises(offload.BackendUnavailable, match=r"^backend 'fpga' is unavailable: board not found$"):
        rt.xxh64(KEYS, backend="fpga")
    rt = offload.Runtime(backends=[Faulty("fpga", "ok", ops=("xxh64",)), "cpu"])
    with pytest.raises(
        offload.BackendUnavailable, match=r"^backend 'fpga' cannot run xxh32: fpga does not implement xxh32$"
    ):
        rt.xxh32(KEYS, backend="fpga")


def test_empty_batches_give_empty_results_of_the_right_type():
    assert offload.xxh64(np.zeros(0, np.int64)).dtype == np.uint64
    assert offload.xxh32([]).shape == (0,)
    off, data = offload.delta_varint_encode([])
    assert off.tolist() == [0] and data.dtype == np.uint8
    assert offload.bucketize(np.zeros((0, 3)), [1.0]).shape == (0, 3)


def test_shape_is_kept_for_numpy_keys():
    k = np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2]
    out = offload.xxh32(k, seed=9)
    assert out.shape == (3, 2)
    assert out[2, 1] == golden.xxh32(np.int32(k[2, 1]).tobytes(), 9)


def test_close_closes_backends():
    dev = Faulty("fpga", "ok")
    with offload.Runtime(backends=[dev, "cpu"]) as rt:
        rt.xxh64(KEYS)
    assert dev.closed


def test_backends_lists_every_backend_with_a_reason(monkeypatch):
    monkeypatch.delenv("OFFLOAD_SMARTNIC", raising=False)
    monkeypatch.delenv("OFFLOAD_FPGA", raising=False)
    rows = {n: (ok, r) for n, ok, r in offload.Runtime(backends=["cpu"]).backends()}
    assert set(rows) == {"cpu", "sim", "fpga", "smartnic"}
    assert rows["cpu"][0] is True
    assert rows["smartnic"][0] is False and rows["smartnic"][1]
    assert rows["fpga"][0] is False and rows["fpga"][1]


@pytest.mark.parametrize("verify", ["off", "sample", "full"])
def test_a_short_result_is_a_failure_not_an_answer(verify):
    rt = offload.Runtime(backends=[Faulty("fpga", "short", at=7), "cpu"], verify=verify)
    assert np.array_equal(rt.xxh64(KEYS, seed=3), expected_xxh64(KEYS, 3))
    (fb,) = rt.stats()["fallbacks"]
    assert (fb["cause"], fb["at_record"], fb["records_redone"]) == ("result_length", 0, 1000)
    assert fb["message"] == "fpga: returned 993 results for 1000 records of xxh64(seed=3)"
    strict = offload.Runtime(backends=[Faulty("fpga", "short", at=7)], fallback=False)
    with pytest.raises(BackendError, match=r"^fpga: returned 993 results for 1000 records"):
        strict.xxh64(KEYS, seed=3)


@pytest.mark.parametrize("verify", ["off", "sample", "full"])
def test_a_partial_result_counts_only_the_records_it_holds(verify):
    rt = offload.Runtime(backends=[Faulty("fpga", "overclaim", at=400), "cpu"], verify=verify)
    assert np.array_equal(rt.xxh64(KEYS, seed=3), expected_xxh64(KEYS, 3))
    assert rt.stats()["last_call"]["segments"] == [("fpga", 0, 400), ("cpu", 400, 1000)]


# -- a backend the caller asked for, unavailable: recorded, warned once -------------------------


def test_a_configured_backend_that_is_unavailable_is_recorded_and_warned_once():
    rt = offload.Runtime(backends=[Faulty("fpga", "unavailable"), "cpu"])
    with pytest.warns(
        RuntimeWarning,
        match=r"^offload: backend 'fpga' is unavailable: board not "
        r"found; running on cpu$",
    ):
        assert np.array_equal(rt.xxh64(KEYS, seed=3), expected_xxh64(KEYS, 3))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call warns no more, but is recorded again
        rt.xxh64(KEYS, seed=3)
    fbs = rt.stats()["fallbacks"]
    assert [(f["from"], f["to"], f["cause"], f["at_record"], f["records_redone"]) for f in fbs] == [
        ("fpga", "cpu", "unavailable", 0, 1000)
    ] * 2
    assert fbs[0]["message"] == "backend 'fpga' is unavailable: board not found"


def test_fpga_sim_without_pynq_is_recorded(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pynq", None)  # as on an install without the 'fpga' extra
    rt = offload.Runtime(backends=["fpga", "cpu"], fpga="sim")
    with pytest.warns(RuntimeWarning, match=r"^offload: backend 'fpga' is unavailable: .*fpga"):
        rt.xxh64(KEYS)
    (fb,) = rt.stats()["fallbacks"]
    assert (fb["from"], fb["to"], fb["cause"]) == ("fpga", "cpu", "unavailable")


def test_a_configured_backend_lacking_the_operator_is_recorded_without_a_warning():
    rt = offload.Runtime(backends=[Faulty("fpga", "ok", ops=("xxh64",)), "cpu"])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rt.xxh32(KEYS)
    (fb,) = rt.stats()["fallbacks"]
    assert (fb["from"], fb["to"], fb["cause"], fb["message"]) == (
        "fpga",
        "cpu",
        "unsupported",
        "backend 'fpga' cannot run xxh32: fpga does not implement xxh32",
    )


def test_the_default_chain_skips_absent_devices_silently(monkeypatch):
    monkeypatch.delenv("OFFLOAD_FPGA", raising=False)
    monkeypatch.delenv("OFFLOAD_SMARTNIC", raising=False)
    rt = offload.Runtime()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rt.xxh64(KEYS)
    assert rt.stats()["fallbacks"] == []


# -- pickling: configuration travels, backends are rebuilt in the new process -------------------


def _hash_in_child(rt):
    return rt.xxh64(KEYS, seed=3).tolist(), rt.order, rt.verify, rt.stats()["calls"]


def test_a_runtime_pickles_with_its_configuration():
    import pickle

    rt = offload.Runtime(
        backends=["fpga", "cpu"],
        fpga="sim",
        verify="sample",
        fallback=True,
        sample_size=5,
        rng_seed=9,
        options={"fpga": {"chunk_records": 64, "engine": "reference"}},
    )
    rt.xxh64(KEYS)  # a used runtime: its backends, lock and stats stay behind
    copy = pickle.loads(pickle.dumps(rt))
    assert (copy.order, copy.verify, copy.fallback, copy.sample_size) == (("fpga", "cpu"), "sample", True, 5)
    assert copy._options == {"fpga": {"device": "sim", "chunk_records": 64, "engine": "reference"}}
    assert copy.stats()["calls"] == 0
    assert all(s.backend is None for s in copy._slots.values())


def test_a_runtime_runs_in_a_spawned_process():
    import multiprocessing as mp

    rt = offload.Runtime(backends=["cpu"], verify="full")
    with mp.get_context("spawn").Pool(1) as pool:
        got, order, verify, calls = pool.apply(_hash_in_child, (rt,))
    assert got == expected_xxh64(KEYS, 3).tolist()
    assert (order, verify, calls) == (("cpu",), "full", 1)


def test_a_runtime_with_an_unpicklable_backend_says_what_to_do():
    import pickle
    import threading

    be = Faulty("fpga", "ok")
    be.lock = threading.Lock()  # type: ignore[attr-defined]
    with pytest.raises(
        TypeError,
        match=r"^cannot pickle this Runtime: backend 'fpga' was given as a "
        r"Faulty instance, which cannot be pickled \(TypeError: .*\); "
        r"give its name and options instead$",
    ):
        pickle.dumps(offload.Runtime(backends=[be, "cpu"]))


def test_rng_seed_is_validated():
    with pytest.raises(TypeError, match=r"^rng_seed must be an int or None, got float$"):
        offload.Runtime(rng_seed=1.5)
