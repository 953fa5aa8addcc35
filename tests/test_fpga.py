"""The fpga backend (PYNQ driver) on the simulated PYNQ-Z2, with the pure-Python engine model.

Every operator bit-exact against the golden model through ``Runtime(backends=["fpga", "cpu"],
fpga="sim")``; device faults (stall, dropped TLAST, short result, flipped bit, device lost) end in
complete, correct, in-order results with the fallback recorded, or in the documented error with
``fallback=False``; availability messages. The same driver runs on the Verilator engine in
``test_fpga_verilator.py``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import offload
from offload.backend import Availability, BackendError, BackendUnavailable, BitExactError
from offload.batch import as_numbers, as_records, as_sequences
from offload.engine_map import ENGINE_VERSION, REGISTERS
from offload.ops import golden_result, make_call
from offload.sim.faults import Fault

pynq = pytest.importorskip("pynq", reason="pynq is not installed (pip install 'offload[fpga]')")

from offload.host.fpga import NO_BOARD, FpgaBackend  # noqa: E402
from offload.sim import pynq_device  # noqa: E402
from offload.sim.refmodel import ReferenceEngineModel  # noqa: E402

CHUNK = 8  # small chunks: several transfers per batch, both buffer pairs in use


def runtime(*, faults=None, fallback=True, verify="off", chunk=CHUNK, timeout_s=10.0, engine="reference"):
    opts = {"engine": engine, "chunk_records": chunk, "timeout_s": timeout_s}
    if faults:
        opts["faults"] = faults
    return offload.Runtime(
        backends=["fpga", "cpu"], fpga="sim", fallback=fallback, verify=verify, options={"fpga": opts}
    )


@pytest.fixture
def rt():
    r = runtime()
    yield r
    r.close()


def golden(call, batch):
    return [golden_result(call, batch.record(i)) for i in range(batch.n)]


def ran_on_fpga_only(r):
    st = r.stats()
    assert st["fallbacks"] == []
    assert [s[0] for s in st["last_call"]["segments"]] == ["fpga"]


KEYS64 = (np.arange(37, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(0xFFFF0000)
KEYS32 = np.array([0, 1, 0xFFFFFFFF, 0x80000000, 12345, 7, 99, 2**31 - 1, 3, 4, 5], np.uint32)
STRINGS = [
    b"",
    b"a",
    b"abc",
    b"0123456789abcdef" * 3,
    b"x" * 33,
    "h\u00e9llo".encode(),
    bytes(range(256)),
    b"\x00" * 7,
    b"tail",
] * 2


# -- every operator, bit-exact ------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [KEYS64, KEYS32, KEYS64.view(np.int64).reshape(37, 1), STRINGS],
    ids=["u64", "u32", "i64-2d", "var"],
)
@pytest.mark.parametrize("seed", [0, 0xFFFFFFFF])
def test_xxh32_xxh64(rt, values, seed):
    b = as_records(values)
    got32 = rt.xxh32(values, seed=seed)
    assert got32.dtype == np.uint32 and got32.shape == np.asarray(values).shape[: got32.ndim]
    assert got32.ravel().tolist() == golden(make_call("xxh32", seed=seed), b)
    ran_on_fpga_only(rt)
    seed64 = seed | (0xDEADBEEF << 32)
    got64 = rt.xxh64(values, seed=seed64)
    assert got64.dtype == np.uint64
    assert got64.ravel().tolist() == golden(make_call("xxh64", seed=seed64), b)
    ran_on_fpga_only(rt)


@pytest.mark.parametrize("method", ["mod", "fastrange"])
@pytest.mark.parametrize("num_buckets", [1, 1000, 2**63])
def test_hash_bucket(rt, method, num_buckets):
    for values in (KEYS64, STRINGS):
        got = rt.hash_bucket(values, num_buckets, seed=11, method=method)
        call = make_call("hash_bucket", num_buckets=num_buckets, seed=11, method=method)
        assert got.dtype == np.int64 and got.tolist() == golden(call, as_records(values))
        ran_on_fpga_only(rt)


@pytest.mark.parametrize("version,slot", [(1, 0), (1, 1023), (2, 0), (2, 32767)])
def test_fid(rt, version, slot):
    for values in (KEYS64, KEYS32, STRINGS):
        got = rt.fid(values, slot, version=version, seed=5)
        call = make_call("fid", slot=slot, version=version, seed=5)
        assert got.dtype == np.uint64 and got.tolist() == golden(call, as_records(values))
        ran_on_fpga_only(rt)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize("right", [True, False])
def test_bucketize(rt, dtype, right):
    if np.dtype(dtype).kind == "f":
        x = np.array([-np.inf, -1.5, -0.0, 0.0, 0.5, 1.0, 2.0, np.nan, np.inf, 3.0, 1e30], dtype)
        bounds = np.array([-1.0, 0.0, 1.0, 2.0], dtype)
    else:
        info = np.iinfo(dtype)
        x = np.array([info.min, -5, -1, 0, 1, 2, 3, 100, info.max, 7, 8, 9], dtype)
        bounds = np.array([info.min, -1, 0, 2, 8, info.max], dtype)
    got = rt.bucketize(x, bounds, right=right)
    call = make_call("bucketize", boundaries=bounds, dtype=np.dtype(dtype), right=right)
    assert got.dtype == np.int32 and got.tolist() == golden(call, as_numbers(x))
    ran_on_fpga_only(rt)


def test_bucketize_full_table(rt):
    bounds = np.arange(256, dtype=np.int64) * 3
    x = np.arange(-5, 800, 37, dtype=np.int64)
    got = rt.bucketize(x, bounds)
    assert got.tolist() == np.digitize(x, bounds, right=False).tolist()  # count of b <= x
    ran_on_fpga_only(rt)


def test_delta_varint_encode_and_decode(rt):
    seqs = [
        np.array([1, 2, 300, -5, 2**62, -(2**63), 2**63 - 1], np.int64),
        np.zeros(0, np.int64),
        np.arange(20, dtype=np.int64) * -1000,
    ] * 4
    offs, data = rt.delta_varint_encode(seqs)
    ran_on_fpga_only(rt)
    call = make_call("delta_varint_encode")
    b = as_sequences(seqs)
    for i in range(b.n):
        assert data[offs[i] : offs[i + 1]].tobytes() == golden_result(call, b.record(i))
    vo, vals = rt.delta_varint_decode(offs, data)  # a host operator: runs on the CPU backend
    assert rt.stats()["last_call"]["segments"] == [("cpu", 0, len(seqs))]
    assert np.array_equal(vals, np.concatenate(seqs))


def test_large_batch_many_chunks_in_order():
    r = runtime(chunk=64)
    keys = np.arange(1000, dtype=np.uint64) * np.uint64(2654435761)
    got = r.xxh64(keys, seed=9)
    assert got.tolist() == golden(make_call("xxh64", seed=9), as_records(keys))
    assert r.backend("fpga").transfers == 16
    ran_on_fpga_only(r)
    r.close()


def test_capabilities_come_from_the_engine_registers():
    small = ReferenceEngineModel(table_depth=4, ops=sum(1 << k for k in range(1, 9)))  # no OP 9
    r = runtime(engine=small)
    be = r.backend("fpga")
    caps = be.capabilities()
    assert caps.max_boundaries == 4 and "delta_varint_encode" not in caps.ops
    x = np.arange(10, dtype=np.int64)
    assert r.bucketize(x, [1, 2, 3, 4]).tolist() == np.digitize(x, [1, 2, 3, 4]).tolist()
    assert r.stats()["last_call"]["segments"] == [("fpga", 0, 10)]
    assert r.bucketize(x, [1, 2, 3, 4, 5]).tolist() == np.digitize(x, [1, 2, 3, 4, 5]).tolist()
    assert r.stats()["last_call"]["segments"] == [("cpu", 0, 10)]
    with pytest.raises(
        BackendUnavailable,
        match=r"backend 'fpga' cannot run bucketize: fpga holds "
        r"at most 4 boundaries, the call has 5",
    ):
        r.bucketize(x, [1, 2, 3, 4, 5], backend="fpga")
    r.delta_varint_encode([x])
    assert r.stats()["last_call"]["segments"] == [("cpu", 0, 1)]
    r.close()


class _Engine(ReferenceEngineModel):
    """The reference engine with some read-only registers replaced (another build's)."""

    def __init__(self, **regs):
        super().__init__()
        self.over = {REGISTERS[k]: v for k, v in regs.items()}

    def read(self, addr):
        return self.over.get(addr, super().read(addr))


def test_an_engine_of_another_wire_format_major_is_refused():
    be = FpgaBackend(device="sim", engine=_Engine(VERSION=0x00020000))
    minor = ENGINE_VERSION & 0xFFFF
    message = f"fpga: engine wire format 2.0 is not compatible with the host's 1.{minor}"
    with pytest.raises(BackendUnavailable, match=f"^{re.escape(message)}$"):
        be.capabilities()
    assert be.availability() == Availability(False, message)
    be.close()


def test_sequences_longer_than_the_engines_seq_max_go_to_the_cpu():
    r = runtime(engine=_Engine(SEQ_MAX=4))
    seqs = [np.arange(4, dtype=np.int64), np.arange(5, dtype=np.int64)]
    off, data = r.delta_varint_encode(seqs[:1])
    ran_on_fpga_only(r)
    off, data = r.delta_varint_encode(seqs)
    assert r.stats()["last_call"]["segments"] == [("cpu", 0, 2)]
    assert data.tobytes() == b"".join(golden(make_call("delta_varint_encode"), as_sequences(seqs)))
    with pytest.raises(
        BackendUnavailable,
        match=r"^backend 'fpga' cannot run delta_varint_encode: "
        r"a sequence has 5 values, the engine encodes at "
        r"most 4$",
    ):
        r.delta_varint_encode(seqs, backend="fpga")
    r.close()


# -- the PYNQ stack really is in the loop ---------------------------------------------------------


def test_driver_uses_pynq_overlay_dma_and_buffers(rt):
    from pynq.lib.dma import DMA

    rt.xxh64(KEYS64)
    be = rt.backend("fpga")
    assert isinstance(be.device, pynq_device.SimulatedPynqDevice)
    assert isinstance(be.overlay, pynq.Overlay) and be.overlay.is_loaded()
    assert isinstance(be._dma, DMA) and be._dma.buffer_max_size == (1 << 23) - 1
    assert be.overlay.ip_dict["offload"]["type"] == "offload.dev:user:offload_axi:1.0"
    assert be.overlay.ip_dict["offload"]["phys_addr"] == pynq_device.ENGINE_BASE
    assert be.overlay.offload.register_map.ID.ID == 0x0FF10AD0
    assert all(
        isinstance(b, pynq.buffer.PynqBuffer) for p in be._transport.pairs if p for b in (p.inb, p.outb)
    )
    assert pynq.Device.active_device is be.device


def test_simulated_device_is_probed_only_when_asked(monkeypatch):
    monkeypatch.delenv("OFFLOAD_FPGA", raising=False)
    assert pynq_device.SimulatedPynqDevice._probe_priority_ > 200  # after all of pynq's devices
    pynq_device.deactivate()
    assert pynq_device.SimulatedPynqDevice._probe_() == []
    monkeypatch.setenv("OFFLOAD_FPGA", "sim")
    (dev,) = pynq_device.SimulatedPynqDevice._probe_()
    assert isinstance(dev, pynq_device.SimulatedPynqDevice)


def test_dma_model_flags_a_bad_address():
    dev = pynq_device.activate(engine="reference")
    try:
        ol = pynq.Overlay(str(pynq_device.standin_bitfile()), device=dev)
        buf = pynq.allocate(16, np.uint64, target=dev)
        dma = ol.dma
        dma.recvchannel.transfer(buf)
        dma.mmio.write(0x18, 0x0800_0000)  # MM2S source outside every buffer
        dma.mmio.write(0x28, 64)
        assert dma.sendchannel.error and not dma.sendchannel.running  # PG021: DMADecErr halts
        assert dma.mmio.read(0x04) & 0x4041 == 0x4041  # DMADecErr, Err_Irq, Halted
        with pytest.raises(RuntimeError, match="DMA channel not started"):
            dma.sendchannel.wait()
    finally:
        pynq_device.deactivate(dev)


# -- faults: fallback without loss, documented errors, no hangs --------------------------------

N = 50
KEYS = np.arange(N, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
EXPECTED = golden(make_call("xxh64", seed=3), as_records(KEYS))


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "kind,cause,fpga_upto",
    [
        ("stall", "timeout", 16),  # chunks 0 and 1 done, chunk 2 (records 16..23) never ends
        ("short_result", "framing", 16),  # the trailer of chunk 2 is lost
        ("drop_tlast", "trailer", 24),  # MISSING_TLAST: chunk 2's results are complete and kept
        ("disappear", "device_lost", 16),
    ],
)
def test_fault_falls_back_complete_and_in_order(kind, cause, fpga_upto):
    r = runtime(faults=[Fault(kind, at_record=20)], timeout_s=0.5)
    got = r.xxh64(KEYS, seed=3)
    assert got.tolist() == EXPECTED
    st = r.stats()
    (fb,) = st["fallbacks"]
    assert (fb["from"], fb["to"], fb["cause"]) == ("fpga", "cpu", cause)
    assert (fb["at_record"], fb["records_redone"]) == (fpga_upto, N - fpga_upto)
    assert st["last_call"]["segments"] == [("fpga", 0, fpga_upto), ("cpu", fpga_upto, N)]
    if kind == "disappear":
        # unavailable at once: the next call goes straight to the cpu, recorded as unavailable
        r.reset_stats()
        with pytest.warns(
            RuntimeWarning, match="backend 'fpga' is unavailable: fpga: simulated PYNQ-Z2 lost"
        ):
            assert r.xxh64(KEYS, seed=3).tolist() == EXPECTED
        (fb,) = r.stats()["fallbacks"]
        assert (fb["from"], fb["cause"], fb["at_record"]) == ("fpga", "unavailable", 0)
        av = r.availability("fpga", refresh=True)
        assert not av.ok and "simulated PYNQ-Z2 lost" in av.reason
    else:  # the DMA and engine were reset: the next batch runs on the device again
        r.reset_stats()
        assert r.xxh64(KEYS, seed=3).tolist() == EXPECTED
        ran_on_fpga_only(r)
    r.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "kind,message",
    [
        (
            "stall",
            r"fpga: DMA transfer of records 16\.\.23 timed out after 0\.5 s \(MM2S busy, S2MM "
            r"busy, engine STATUS 0x1 DONE_COUNT 0\); DMA and engine reset",
        ),
        ("short_result", r"engine output does not end with a trailer"),
        (
            "drop_tlast",
            r"engine reported an error for xxh64\(.*\) after 8 of 8 records "
            r"\(flags MISSING_TLAST\)",
        ),
        (
            "disappear",
            r"fpga: simulated PYNQ-Z2 lost: \[Errno 19\] simulated PYNQ device lost "
            r"\(fault 'disappear'\)",
        ),
    ],
)
def test_fault_without_fallback_raises_documented_error(kind, message):
    r = runtime(faults=[Fault(kind, at_record=20)], fallback=False, timeout_s=0.5)
    with pytest.raises(BackendError, match=message) as ei:
        r.xxh64(KEYS, seed=3)
    e = ei.value
    assert (
        e.cause
        == {
            "stall": "timeout",
            "short_result": "framing",
            "drop_tlast": "trailer",
            "disappear": "device_lost",
        }[kind]
    )
    k = e.completed
    assert k in (16, 24)
    assert np.asarray(e.partial).tolist() == EXPECTED[:k]
    r.close()


@pytest.mark.timeout(60)
def test_flipped_bit_is_caught_by_full_verification():
    r = runtime(faults=[Fault("flip_bit", at_record=21, bit=7)], verify="full")
    with pytest.raises(
        BitExactError,
        match=re.escape("fpga result differs from the golden model for xxh64(seed=3) at index 21"),
    ) as ei:
        r.xxh64(KEYS, seed=3)
    assert ei.value.got ^ ei.value.expected == 1 << 7
    assert r.stats()["mismatches"][0]["index"] == 21
    r.close()


@pytest.mark.timeout(60)
def test_flipped_bit_goes_unseen_without_verification():
    r = runtime(faults=[Fault("flip_bit", at_record=21, bit=0)])
    got = r.xxh64(KEYS, seed=3)
    assert [i for i in range(N) if got[i] != EXPECTED[i]] == [21]
    r.close()


# -- availability ------------------------------------------------------------------------------


def test_no_board_is_unavailable_with_a_reason(monkeypatch):
    monkeypatch.delenv("OFFLOAD_FPGA", raising=False)
    monkeypatch.delenv("PYNQ_REMOTE_DEVICES", raising=False)
    r = offload.Runtime(backends=["fpga", "cpu"])
    av = r.availability("fpga")
    assert not av.ok and av.reason == NO_BOARD
    assert NO_BOARD == "no PYNQ board found; set OFFLOAD_FPGA=sim for the simulated device"
    with pytest.raises(BackendUnavailable, match=re.escape(f"backend 'fpga' is unavailable: {NO_BOARD}")):
        r.xxh64(KEYS, backend="fpga")
    assert r.xxh64(KEYS, seed=3).tolist() == EXPECTED  # auto: never the simulated device
    assert r.stats()["last_call"]["segments"] == [("cpu", 0, N)]
    assert not any(
        isinstance(d, pynq_device.SimulatedPynqDevice) for d in [pynq.Device.__dict__.get("_active_device")]
    )


def test_offload_fpga_sim_selects_the_simulated_device(monkeypatch):
    monkeypatch.setenv("OFFLOAD_FPGA", "sim")
    monkeypatch.setenv("OFFLOAD_FPGA_ENGINE", "reference")
    r = offload.Runtime(backends=["fpga", "cpu"])
    av = r.availability("fpga")
    assert av.ok and av.reason == "simulated PYNQ-Z2 (reference engine model), no board"
    assert r.xxh64(KEYS, seed=3).tolist() == EXPECTED
    ran_on_fpga_only(r)
    r.close()


def test_board_without_bitstream_says_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(FpgaBackend, "_real_devices", staticmethod(lambda: [object()]))
    be = FpgaBackend(device="board", bitfile=tmp_path / "offload_engine.bit")
    av = be.availability()
    assert not av.ok and av.reason == (
        f"bitstream {tmp_path / 'offload_engine.bit'} not found: build it with Vivado "
        "(rtl/package_ip.tcl), or pass options={'fpga': {'bitfile': ...}}"
    )
    (tmp_path / "offload_engine.bit").write_bytes(b"")
    assert (
        be.availability().reason
        == f"{tmp_path / 'offload_engine.hwh'} not found: PYNQ needs the .hwh beside the .bit"
    )


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match=r"unknown fpga device 'usb': expected 'board' or 'sim'"):
        FpgaBackend(device="usb")
    board_only = r"engine=, flavour= and faults= apply only to the simulated device \(device='sim'\)"
    with pytest.raises(ValueError, match=board_only):
        FpgaBackend(device="board", engine="reference")
    with pytest.raises(ValueError, match=board_only):
        FpgaBackend(device="board", flavour="lut")
    with pytest.raises(ValueError, match=r"unknown engine flavour 'full': expected 'behavioural' or 'lut'"):
        FpgaBackend(device="sim", flavour="full")
    av = FpgaBackend(device="sim", engine="gates").availability()
    assert not av.ok and av.reason == "unknown engine model 'gates': expected 'verilator' or 'reference'"


# -- the simulated device's engine flavour -----------------------------------------------------


def test_the_simulated_device_runs_the_behavioural_flavour_unless_told_lut():
    """The Verilator engine of the simulated PYNQ-Z2 is the PYNQ-Z2 build's behavioural flavour
    (cycle-identical at the ports to the synthesised LUT one, tests/test_hw_flavours.py);
    ``flavour="lut"`` runs the synthesised design itself."""
    from offload.host import fpga

    assert fpga._FLAVOURS == pynq_device.FLAVOURS == ("behavioural", "lut")
    assert FpgaBackend(device="sim").flavour == "behavioural"
    assert FpgaBackend(device="sim", flavour="lut").flavour == "lut"
    assert pynq_device.SimulatedPynqDevice().flavour == "behavioural"
    with pytest.raises(
        ValueError,
        match=r"unknown engine flavour 'full' for the simulated PYNQ-Z2: expected 'behavioural' or 'lut'",
    ):
        pynq_device.SimulatedPynqDevice(flavour="full")


@pytest.mark.parametrize("flavour, expected", [(None, "behavioural"), ("lut", "lut")])
def test_the_backend_hands_its_flavour_to_the_device(flavour, expected):
    be = FpgaBackend(device="sim", flavour=flavour, engine="reference")
    try:
        be.capabilities()
        assert be.device.flavour == expected
    finally:
        be.close()


# -- waiting for a transfer ------------------------------------------------------------------


@pytest.mark.parametrize(
    "elapsed, pause",
    [(0.0, 20e-6), (160e-6, 20e-6), (1.6e-3, 100e-6), (8e-3, 0.5e-3), (16e-3, 1e-3), (5.0, 1e-3)],
)
def test_the_poll_pause_is_a_16th_of_the_time_waited_from_20us_to_1ms(elapsed, pause):
    from offload.host.fpga import _poll_pause

    assert _poll_pause(elapsed) == pytest.approx(pause)


class _Overflowing(ReferenceEngineModel):
    """An engine whose output from record ``at`` on is longer than the S2MM buffer (PG021:
    the S2MM channel halts with DMAIntErr)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.started = at, 0

    def stream(self, words, out_cap, **kw):
        self.started += 8  # CHUNK records per transfer
        if self.started > self.at:
            return np.zeros(0, np.uint64), 2, words.shape[0], 10
        return super().stream(words, out_cap, **kw)


def test_a_dma_error_raises_dma_error_with_both_status_registers():
    # MM2S: Idle | IOC_Irq (its words were all taken); S2MM: DMAIntErr | Halted | Err_Irq, and
    # IOC_Irq from the chunk before (PYNQ's simple-mode wait never clears it)
    r = runtime(engine=_Overflowing(at=16), fallback=False)
    with pytest.raises(
        BackendError,
        match=r"^fpga: AXI DMA error on records 16\.\.23 \(MM2S_DMASR 0x00001002, "
        r"S2MM_DMASR 0x00005011\)$",
    ) as ei:
        r.xxh64(KEYS, seed=3)
    assert (ei.value.cause, ei.value.completed) == ("dma_error", 16)
    assert ei.value.partial.tolist() == EXPECTED[:16]
    r.close()


def test_a_dma_error_falls_back_complete_and_in_order():
    r = runtime(engine=_Overflowing(at=16))
    assert r.xxh64(KEYS, seed=3).tolist() == EXPECTED
    (fb,) = r.stats()["fallbacks"]
    assert (fb["cause"], fb["at_record"]) == ("dma_error", 16)
    r.close()


def test_one_dma_worker_thread_serves_the_transfers_and_leaves_when_idle(monkeypatch):
    """The simulated DMA keeps one worker thread across transfers (starting one per transfer
    blocks the host until it runs) and lets it go after _WORKER_IDLE_S without work."""
    import threading

    monkeypatch.setattr(pynq_device, "_WORKER_IDLE_S", 0.5)
    threads = set()

    class _Seen(ReferenceEngineModel):
        def stream(self, words, out_cap, **kw):
            threads.add(threading.current_thread())
            return super().stream(words, out_cap, **kw)

    r = runtime(engine=_Seen())
    assert r.xxh64(KEYS, seed=3).tolist() == EXPECTED
    assert r.backend("fpga").transfers == 7 and len(threads) == 1
    dev = r.backend("fpga").device
    (worker,) = threads
    worker.join(timeout=10)
    assert not worker.is_alive() and dev._worker is None
    assert r.xxh64(KEYS, seed=3).tolist() == EXPECTED  # a new worker after the idle one left
    assert len(threads) == 2
    r.close()
