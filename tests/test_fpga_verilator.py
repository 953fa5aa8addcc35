"""The fpga backend on the simulated PYNQ-Z2 with the Verilator model of the RTL as its engine.

A smaller set than ``test_fpga.py`` (which uses the pure-Python engine): each engine path once,
chunking with both buffer pairs, and the faults that involve the hardware's own behaviour
(MISSING_TLAST from a dropped TLAST, a stalled transfer timing out and recovering).
"""

from __future__ import annotations

import numpy as np
import pytest

import offload
from offload.batch import as_numbers, as_records, as_sequences
from offload.ops import golden_result, make_call
from offload.sim.faults import Fault

pytest.importorskip("pynq", reason="pynq is not installed (pip install 'offload[fpga]')")

from offload.host.fpga import FpgaBackend  # noqa: E402

pytestmark = [pytest.mark.verilator, pytest.mark.xdist_group("verilator")]


def _skip_reason() -> str | None:
    from pathlib import Path

    import offload.rtl

    rtl = Path(offload.rtl.__file__).resolve().parent
    if not (rtl / "offload_axi.v").exists():
        return "rtl/offload_axi.v does not exist yet (the engine's Verilog is not exported)"
    av = FpgaBackend(device="sim", engine="verilator").availability()
    return None if av.ok else av.reason


_WHY = _skip_reason()
if _WHY:
    pytest.skip(reason=f"Verilator engine unavailable: {_WHY}", allow_module_level=True)


def runtime(**kw):
    opts = {"engine": "verilator", "chunk_records": 16, "timeout_s": 5.0}
    opts.update(kw)
    return offload.Runtime(backends=["fpga", "cpu"], fpga="sim", options={"fpga": opts})


@pytest.fixture(scope="module")
def rt():
    r = runtime()
    yield r
    r.close()


def golden(call, batch):
    return [golden_result(call, batch.record(i)) for i in range(batch.n)]


def only_fpga(r):
    st = r.stats()
    assert st["fallbacks"] == [] and [s[0] for s in st["last_call"]["segments"]] == ["fpga"]


KEYS = np.arange(40, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
STRINGS = [b"", b"a", b"abcd", b"0123456789abcdef" * 3, b"x" * 33, bytes(range(200))] * 3


@pytest.mark.timeout(300)
def test_hash_ops_bit_exact(rt):
    for values in (KEYS, KEYS.astype(np.uint32), STRINGS):
        b = as_records(values)
        for op, kw in [
            ("xxh32", {"seed": 7}),
            ("xxh64", {"seed": 2**64 - 1}),
            ("hash_bucket", {"num_buckets": 1000, "method": "mod"}),
            ("hash_bucket", {"num_buckets": 2**63, "method": "fastrange"}),
            ("fid", {"slot": 1023, "version": 1}),
            ("fid", {"slot": 32767, "version": 2}),
        ]:
            got = getattr(rt, op)(values, **kw)
            assert got.tolist() == golden(make_call(op, **kw), b), (op, kw)
            only_fpga(rt)


@pytest.mark.timeout(300)
def test_bucketize_and_varint_bit_exact(rt):
    x = np.array([-np.inf, -1.0, -0.0, 0.0, 0.5, 2.0, np.nan, np.inf], np.float32)
    for right in (True, False):
        call = make_call("bucketize", boundaries=[-1.0, 0.0, 2.0], dtype=x.dtype, right=right)
        assert rt.bucketize(x, [-1.0, 0.0, 2.0], right=right).tolist() == golden(call, as_numbers(x))
        only_fpga(rt)
    seqs = [np.array([1, 300, -5, 2**62, -(2**63)], np.int64), np.zeros(0, np.int64)] * 10
    offs, data = rt.delta_varint_encode(seqs)
    only_fpga(rt)
    call = make_call("delta_varint_encode")
    b = as_sequences(seqs)
    assert [data[offs[i] : offs[i + 1]].tobytes() for i in range(b.n)] == golden(call, b)


@pytest.mark.timeout(300)
def test_many_chunks_in_order(rt):
    keys = np.arange(5000, dtype=np.uint64)
    got = rt.xxh64(keys, seed=1)
    assert np.array_equal(got, offload.xxh64(keys, seed=1, backend="cpu"))
    only_fpga(rt)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind,cause", [("drop_tlast", "trailer"), ("stall", "timeout")])
def test_fault_fallback_and_recovery(kind, cause):
    r = runtime(faults=[Fault(kind, at_record=20)], timeout_s=1.0)
    expected = offload.xxh64(KEYS, seed=3, backend="cpu")
    assert np.array_equal(r.xxh64(KEYS, seed=3), expected)
    (fb,) = r.stats()["fallbacks"]
    assert fb["cause"] == cause
    r.reset_stats()
    assert np.array_equal(r.xxh64(KEYS, seed=3), expected)
    only_fpga(r)
    r.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("flavour", ["behavioural", "lut"])
def test_each_flavour_of_the_pynq_z2_build_through_the_pynq_stack(flavour):
    """The default engine is the behavioural flavour of the PYNQ-Z2 build; ``flavour="lut"``
    runs the synthesised design itself: both bit-exact over several chunks, both with the
    op codes of that build (OPS/OPS_HI)."""
    from offload import engine_map as em

    r = runtime(flavour=flavour) if flavour == "lut" else runtime()
    try:
        keys = np.arange(300, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        assert np.array_equal(r.xxh64(keys, seed=5), offload.xxh64(keys, seed=5, backend="cpu"))
        only_fpga(r)
        be = r.backend("fpga")
        assert (be.device.flavour, be.device.engine.flavour) == (flavour, flavour)
        pynq_z2 = em.ops_mask(em.OP_CODES[k] for k in em.BUILDS["pynq-z2"])
        assert be._driver.info.ops_mask == pynq_z2
    finally:
        r.close()
