"""The sim backend (Verilator model of the engine): faults, fallback without loss, tracing, limits.

Every expected value comes from the golden model.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import offload
from offload import golden
from offload.backend import BackendError
from offload.sim.faults import Fault

pytestmark = [pytest.mark.xdist_group("verilator"), pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def available():
    from offload.host.sim_backend import SimBackend

    av = SimBackend().availability()
    if not av.ok:
        if os.environ.get("CI"):
            pytest.fail(f"the sim backend must be available in CI: {av.reason}")
        pytest.skip(reason=f"sim unavailable here: {av.reason}")


KEYS = np.arange(3000, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
EXPECTED = [golden.xxh64(k.tobytes(), 5) for k in KEYS]


def runtime(faults, *, fallback=True, verify="off", chunk=1000):
    from offload.host.sim_backend import SimBackend

    sim = SimBackend(faults=faults, chunk_records=chunk, stall_cycles=2000)
    return offload.Runtime(backends=[sim, "cpu"], fallback=fallback, verify=verify)


@pytest.mark.parametrize(
    "kind,cause",
    [
        ("stall", "stall"),
        ("drop_tlast", "trailer"),
        ("short_result", "framing"),
        ("disappear", "device_lost"),
    ],
)
def test_fault_mid_batch_falls_back_without_loss(available, kind, cause):
    rt = runtime([Fault(kind, at_record=1500)])
    out = rt.xxh64(KEYS, seed=5)
    assert out.tolist() == EXPECTED
    st = rt.stats()
    (fb,) = st["fallbacks"]
    assert (fb["from"], fb["cause"]) == ("sim", cause)
    segs = st["last_call"]["segments"]
    assert segs[0][0] == "sim" and segs[-1] == ("cpu", segs[-1][1], 3000)
    # Nothing lost, nothing twice: the segments tile [0, 3000) in order.
    assert [s[1] for s in segs] == [0] + [s[2] for s in segs[:-1]]
    if kind == "drop_tlast":  # every record came back; the flag still counts as a fault
        assert segs == [("sim", 0, 3000)] or segs[0][2] >= 1000
    rt.close()


@pytest.mark.parametrize(
    "kind,message",
    [
        ("stall", r"^sim: transfer stall after \d+ cycles \(\d+ of 1000 words accepted, \d+ out\)$"),
        ("disappear", r"^sim: the simulated device disappeared$"),
    ],
)
def test_fault_with_fallback_false_raises_the_documented_error(available, kind, message):
    rt = runtime([Fault(kind, at_record=10)], fallback=False)
    with pytest.raises(BackendError, match=message) as ei:
        rt.xxh64(KEYS, seed=5)
    assert ei.value.completed == 0  # the fault hit the first chunk
    rt.close()


def test_flipped_bit_is_caught_by_verify(available):
    rt = runtime([Fault("flip_bit", at_record=1234, bit=9)], verify="full")
    with pytest.raises(
        offload.BitExactError,
        match=r"^sim result differs from the golden model "
        r"for xxh64\(seed=5\) at index 1234: ",
    ) as ei:
        rt.xxh64(KEYS, seed=5)
    assert ei.value.expected ^ ei.value.got == 1 << 9
    rt.close()


def test_the_engine_recovers_after_a_fault(available):
    from offload.host.sim_backend import SimBackend

    sim = SimBackend(faults=[Fault("stall", at_record=0)], stall_cycles=2000)
    rt = offload.Runtime(backends=[sim, "cpu"])
    assert rt.xxh64(KEYS[:500], seed=5).tolist() == EXPECTED[:500]
    assert rt.stats()["last_call"]["segments"] == [("cpu", 0, 500)]
    # the fault fired once; the next batch runs on the (soft-reset) engine again
    assert rt.xxh64(KEYS[:500], seed=5).tolist() == EXPECTED[:500]
    assert rt.stats()["last_call"]["segments"] == [("sim", 0, 500)]
    rt.close()


def test_long_sequences_go_to_the_cpu(available):
    from offload.host.sim_backend import SimBackend

    sim = SimBackend()
    seqs = [np.arange(5, dtype=np.int64), np.arange(sim.info().seq_max + 1, dtype=np.int64)]
    rt = offload.Runtime(backends=[sim, "cpu"])
    off, data = rt.delta_varint_encode(seqs)
    for i, s in enumerate(seqs):
        assert data[off[i] : off[i + 1]].tobytes() == golden.delta_varint_encode_seq(s.tolist())
    assert rt.stats()["last_call"]["segments"] == [("cpu", 0, 2)]
    with pytest.raises(
        offload.BackendUnavailable,
        match=r"^backend 'sim' cannot run "
        r"delta_varint_encode: a sequence has 1025 values, the engine encodes at "
        r"most 1024$",
    ):
        rt.delta_varint_encode(seqs, backend="sim")
    rt.close()


def test_vcd_trace_of_a_batch(available, tmp_path):
    from offload.host.sim_backend import SimBackend

    vcd = tmp_path / "batch.vcd"
    sim = SimBackend(trace=str(vcd))
    rt = offload.Runtime(backends=[sim], fallback=False)
    assert rt.xxh64(KEYS[:16], seed=5).tolist() == EXPECTED[:16]
    rt.close()
    text = vcd.read_text(errors="replace")
    assert "$enddefinitions" in text and "s_axis_tdata" in text
