"""Deadlines that scale with the work (``offload.host.deadline``): the estimator's arithmetic, and a
hung device found in seconds, not after a fixed 30 s: a stalled DMA on a large chunk of the
simulated PYNQ device, a SIGSTOPped SmartNIC service. An explicit ``timeout_s=``/``timeout=`` is
honoured as given.

The elapsed-time bounds are generous correctness bounds of the deadline rule (a measured rate x 4
plus a 1 s floor, against the former 13 s and 30 s for these calls), not performance assertions.
"""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

import offload
from offload import wire
from offload.backend import BackendError
from offload.batch import as_records
from offload.host.deadline import DeadlineEstimator
from offload.ops import make_call

pytestmark = pytest.mark.timeout(120)

XXH64 = make_call("xxh64", seed=3)


# -- the estimator ------------------------------------------------------------------------------


def _est(**kw) -> DeadlineEstimator:
    opts = dict(
        prior_fixed_s=10.0,
        prior_byte_s=1e-6,
        prior_record_s=1e-5,
        margin=4.0,
        latency_s=0.05,
        floor_s=1.0,
        min_records=1000,
        min_bytes=10_000,
        decay=0.25,
    )
    opts.update(kw)
    return DeadlineEstimator(**opts)


def test_prior_before_any_measurement():
    e = _est()
    assert e.expected(10, 10) is None
    assert e.deadline(0, 0) == 10.0  # the fixed part
    assert e.deadline(1_000_000, 2_000_000) == 10.0 + 10.0  # records dominate: 1e6 x 1e-5
    assert e.deadline(1000, 30_000_000) == 10.0 + 30.0  # bytes dominate: 3e7 x 1e-6
    assert _est(prior_fixed_s=0.0, prior_byte_s=0.0, prior_record_s=0.0).deadline(5, 5) == 1.0
    assert "nothing measured yet" in e.explain(3, 4)


def test_measured_rate_times_margin_plus_latency_with_a_floor():
    e = _est()
    e.observe(100_000, 800_000, 0.5)  # 5e-6 s/record, 6.25e-7 s/byte
    assert e.expected(100_000, 800_000) == pytest.approx(0.5)
    assert e.deadline(100_000, 800_000) == pytest.approx(0.05 + 4 * 0.5)
    assert e.deadline(400_000, 800_000) == pytest.approx(0.05 + 4 * 2.0)  # 4x the records
    assert e.deadline(100_000, 8_000_000) == pytest.approx(0.05 + 4 * 5.0)  # 10x the bytes
    assert e.deadline(10, 80) == 1.0  # the floor
    assert e.explain(100_000, 800_000) == (
        "the deadline for 100000 records, 800000 bytes: 4 x their expected 0.5 s + 0.05 s, at least 1 s"
    )


def test_small_calls_are_charged_as_the_minimum_size():
    """A call below min_records/min_bytes is mostly latency: it must not make big calls look slow."""
    e = _est()
    e.observe(10, 80, 0.002)
    assert e.costs.record_s == pytest.approx(0.002 / 1000)
    assert e.costs.byte_s == pytest.approx(0.002 / 10_000)
    assert e.expected(1_000_000, 8_000_000) == pytest.approx(max(2.0, 1.6))


def test_up_at_once_down_slowly():
    e = _est()
    e.observe(1000, 10_000, 1.0)
    e.observe(1000, 10_000, 3.0)  # slower: taken at once
    assert e.expected(1000, 10_000) == pytest.approx(3.0)
    e.observe(1000, 10_000, 1.0)  # faster: a quarter of the way
    assert e.expected(1000, 10_000) == pytest.approx(3.0 - 0.25 * 2.0)
    assert e.observations == 3


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(prior_fixed_s=-1.0), r"^prior_fixed_s must be >= 0, got -1\.0$"),
        (dict(latency_s=float("nan")), r"^latency_s must be >= 0, got nan$"),
        (
            dict(margin=0.5),
            r"^margin must be >= 1, floor_s > 0 and decay in \(0, 1\], got 0\.5, "
            r"1\.0, 0\.25$",
        ),
        (dict(floor_s=0.0), r"floor_s > 0"),
        (dict(decay=0.0), r"decay in \(0, 1\]"),
        (dict(min_bytes=0), r"^min_records and min_bytes must be >= 1$"),
    ],
)
def test_bad_parameters(kw, message):
    with pytest.raises(ValueError, match=message):
        _est(**kw)


def test_bad_observation():
    with pytest.raises(
        ValueError,
        match=r"^an observation needs records, bytes >= 0 and "
        r"seconds >= 0, got 1, 2, -0\.5$",
    ):
        _est().observe(1, 2, -0.5)


# -- the fpga backend on the simulated PYNQ-Z2 ----------------------------------------------------

BIG = 1 << 15  # records per chunk: the former rule gave such a chunk 13.3 s on the simulated device


def _fpga(**kw):
    pytest.importorskip("pynq", reason="pynq is not installed (pip install 'offload[fpga]')")
    from offload.host.fpga import FpgaBackend

    return FpgaBackend(device="sim", engine="reference", chunk_records=BIG, **kw)


def _stalled_run(be, batch) -> tuple[BackendError, float]:
    from offload.sim.faults import Fault

    be.device.inject([Fault("stall", at_record=0)])
    t0 = time.monotonic()
    with pytest.raises(BackendError) as ei:
        be.run(XXH64, batch)
    return ei.value, time.monotonic() - t0


def test_fpga_stalled_dma_on_a_big_chunk_is_found_in_seconds():
    be = _fpga()
    batch = as_records(np.arange(BIG, dtype=np.uint64))
    job = wire.encode_request(XXH64, batch)
    assert be._deadline_s(job) == pytest.approx(10.0 + 5e-5 * (BIG + BIG + 1))  # the prior
    for _ in range(2):  # measured: the rate of this device
        assert (
            be.run(XXH64, batch).tolist()
            == offload.xxh64(np.arange(BIG, dtype=np.uint64), seed=3, backend="cpu").tolist()
        )
    limit = be._deadline_s(job)
    assert 1.0 <= limit < 5.0
    e, elapsed = _stalled_run(be, batch)
    assert e.cause == "timeout" and e.completed == 0
    assert f"timed out after {limit:.3g} s" in str(e)
    assert f"(the deadline for {BIG} records, " in str(e)
    assert limit <= elapsed < 5.0
    be.close()


def test_fpga_explicit_timeout_is_honoured():
    be = _fpga(timeout_s=2.5)  # longer than the scaled deadline would be (the 1 s floor)
    batch = as_records(np.arange(1000, dtype=np.uint64))
    be.run(XXH64, batch)
    assert be.deadlines.deadline(1000, 16_016) == 1.0
    e, elapsed = _stalled_run(be, batch)
    assert e.cause == "timeout" and 2.5 <= elapsed < 8.0
    assert str(e).endswith(
        "timed out after 2.5 s (MM2S busy, S2MM busy, engine STATUS 0x1 DONE_COUNT 0); DMA and engine reset"
    )
    be.close()


# -- the smartnic backend against a stopped service ----------------------------------------------


@pytest.fixture
def service():
    from offload.host.smartnic.testing import ServerProcess

    with ServerProcess(backend="cpu") as srv:
        yield srv
        srv.signal(signal.SIGCONT)
        srv.kill()


def _stopped_run(be, batch, srv) -> tuple[BackendError, float]:
    srv.signal(signal.SIGSTOP)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as ei:
        be.run(XXH64, batch)
    elapsed = time.monotonic() - t0
    srv.signal(signal.SIGCONT)
    return ei.value, elapsed


def test_smartnic_stopped_service_is_found_in_seconds(service):
    from offload.host.smartnic import SmartNicBackend

    keys = np.arange(1 << 20, dtype=np.uint64)
    be = SmartNicBackend(service.address)
    expected = offload.xxh64(keys, seed=3, backend="cpu")
    assert np.array_equal(be.run(XXH64, as_records(keys)), expected)  # measured: 4 chunks
    assert be.deadlines is not None and be.deadlines.observations == 4
    e, elapsed = _stopped_run(be, as_records(keys), service)
    assert e.cause == "timeout" and e.completed == 0
    assert "no answer for records 0..262143 within " in str(e)
    assert "(the deadline for 262144 records, " in str(e)
    assert elapsed < 5.0
    # through a runtime: the stopped service's part runs on the CPU, the result is exact
    rt = offload.Runtime(backends=[SmartNicBackend(service.address, availability_ttl=60), "cpu"])
    assert np.array_equal(rt.xxh64(keys, seed=3), expected)
    service.signal(signal.SIGSTOP)
    t0 = time.monotonic()
    assert np.array_equal(rt.xxh64(keys, seed=3), expected)
    assert time.monotonic() - t0 < 5.0
    (fb,) = rt.stats()["fallbacks"]
    assert (fb["from"], fb["to"], fb["cause"]) == ("smartnic", "cpu", "timeout")
    rt.close()
    be.close()


def test_smartnic_explicit_timeout_is_honoured(service):
    from offload.host.smartnic import SmartNicBackend

    be = SmartNicBackend(service.address, timeout=2.5)
    batch = as_records(np.arange(1000, dtype=np.uint64))
    be.run(XXH64, batch)
    assert be.deadlines.deadline(1000, 16_016) == 1.0  # what the scaled rule would give
    e, elapsed = _stopped_run(be, batch, service)
    assert e.cause == "timeout" and 2.5 <= elapsed < 8.0
    assert "no answer for records 0..999 within 2.5 s (the given timeout)" in str(e)
    with pytest.raises(
        ValueError,
        match=r"^timeout must be > 0 seconds \(or None: scaled to "
        r"each chunk\), got 0$",
    ):
        SmartNicBackend(service.address, timeout=0)
    be.close()
