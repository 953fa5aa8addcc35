"""The ``fpga`` backend: the offload engine on a PYNQ board, driven through PYNQ itself.

``Overlay(bitfile)`` loads the engine's bitstream and its ``.hwh``; the engine IP is found by its
VLNV name (``offload_axi``) and driven over its AXI-Lite MMIO, the AXI DMA is the stock
``pynq.lib.dma.DMA`` driver, and the batch crosses in ``pynq.allocate``d buffers: one input
buffer packed by :func:`offload.wire.encode_request`, one output buffer unpacked by
:func:`offload.wire.decode_response` (trailer checked). Large batches are split into chunks of
whole records and double-buffered: two buffer pairs, chunk k+1 is packed while chunk k is in
flight, and chunk k is unpacked while chunk k+1 is in flight.

PYNQ's own ``wait()`` spins forever on a transfer that never ends (wrong length, missing TLAST),
so this driver never calls it on a busy channel: it polls the channels' status with a deadline,
and on timeout resets the DMA, soft-resets the engine and raises
``BackendError(cause="timeout")`` carrying the results of the chunks already completed.

Options (``Runtime(fpga=...)`` passes ``device``; the rest via ``options={"fpga": {...}}``):

* ``device``: ``"board"`` (a real PYNQ board) or ``"sim"`` (the simulated PYNQ-Z2 of
  ``offload.sim.pynq_device``); default ``$OFFLOAD_FPGA``, else ``"board"``. The simulated device
  is never picked on its own.
* ``bitfile``: the ``.bit`` (its ``.hwh`` beside it); default ``rtl/offload_engine.bit`` on a
  board, the stand-in ``sim/offload_engine.bit`` on the simulated device.
* ``engine`` (simulated device only): ``"verilator"`` (default, the RTL), ``"reference"``
  (pure Python, fast) or an engine-model instance; default ``$OFFLOAD_FPGA_ENGINE``; ``faults``: ``[offload.sim.faults.Fault(...)]`` injected into it.
* ``timeout_s``: a fixed deadline for one chunk's DMA transfer. By default each chunk's deadline
  scales with its size (:mod:`offload.host.deadline`): 4 x its expected time at the rate measured
  on the previous chunks, plus 10 ms, at least 1 s; before the first chunk completes, 10 s plus
  1e-7 s per word in and out (5e-5 s on the simulated device). ``chunk_records``: records per
  chunk.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from offload import extras, wire
from offload.backend import (Availability, Backend, BackendError, BackendUnavailable, Batch,
                             Capabilities, Result, concat_results, empty_result)
from offload.ops import OpCall

from .deadline import DeadlineEstimator
from .sim_backend import engine_capabilities, program_engine, supports_on_engine

__all__ = ["FpgaBackend", "ENGINE_IP_NAME", "NO_BOARD", "default_bitfile"]

ENGINE_IP_NAME = "offload_axi"  # VLNV name of the engine IP (rtl/package_ip.tcl)
DMA_VLNV = "xilinx.com:ip:axi_dma:"
NO_BOARD = "no PYNQ board found; set OFFLOAD_FPGA=sim for the simulated device"
_FPGA_MANAGER = "/sys/class/fpga_manager/fpga0/firmware"
_MODES = ("board", "sim")


def default_bitfile() -> Path:
    import offload.rtl
    return Path(offload.rtl.__file__).resolve().parent / "offload_engine.bit"


def _pynq_missing() -> str | None:
    # Named before any other reason (no board, OFFLOAD_FPGA=sim): without pynq nothing else helps.
    return extras.missing("", "pynq")


@dataclass
class _Pair:
    """One input and one output DMA buffer (uint64 words)."""
    inb: Any
    outb: Any
    started: float = 0.0  # when the chunk now in these buffers was started (time.monotonic)


class FpgaBackend(Backend):
    """The engine behind an AXI DMA on a PYNQ board (or on the simulated PYNQ-Z2)."""

    name = "fpga"

    def __init__(self, *, device: str | None = None, bitfile: str | os.PathLike[str] | None = None,
                 engine: str | Any | None = None, faults: list[Any] | None = None,
                 timeout_s: float | None = None, chunk_records: int = 1 << 18,
                 stall_cycles: int = 200_000) -> None:
        mode = device or os.environ.get("OFFLOAD_FPGA") or "board"
        if mode not in _MODES:
            raise ValueError(f"unknown fpga device {mode!r}: expected 'board' or 'sim'")
        if mode == "board" and (engine is not None or faults):
            raise ValueError("engine= and faults= apply only to the simulated device (device='sim')")
        if (timeout_s is not None and not timeout_s > 0) or chunk_records < 1:
            raise ValueError("timeout_s must be > 0 and chunk_records >= 1")
        self.mode = mode
        self.bitfile = Path(bitfile) if bitfile is not None else None
        self.engine = engine
        self.faults = list(faults or [])
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.chunk_records = int(chunk_records)
        self.stall_cycles = stall_cycles
        # a chunk's deadline from the rate measured on the chunks before it; the prior before
        # any: a board moves ~100 M words/s (1e-7 s/word is 10x slower), the simulated device's
        # Verilator engine ~20 k words/s on a loaded machine
        self.deadlines = DeadlineEstimator(
            prior_fixed_s=10.0, prior_byte_s=(5e-5 if mode == "sim" else 1e-7) / 8,
            latency_s=0.01, floor_s=1.0, margin=4.0)
        self.device: Any = None
        self.overlay: Any = None
        self._engine_ip: Any = None
        self._dma: Any = None
        self._pairs: list[_Pair | None] = [None, None]
        self._caps: Capabilities | None = None
        self._ops_mask = 0
        self._broken: str | None = None  # why the device can no longer be used
        self._lock = threading.RLock()
        self.transfers = 0

    # -- discovery --------------------------------------------------------------------------

    def _bitfile(self) -> Path:
        if self.bitfile is not None:
            return self.bitfile
        if self.mode == "sim":
            from offload.sim.pynq_device import standin_bitfile
            return standin_bitfile()
        return default_bitfile()

    def _bitfile_problem(self) -> str | None:
        bit = self._bitfile()
        if not bit.exists():
            return (f"bitstream {bit} not found: build it with Vivado (rtl/package_ip.tcl), "
                    "or pass options={'fpga': {'bitfile': ...}}")
        if not bit.with_suffix(".hwh").exists():
            return f"{bit.with_suffix('.hwh')} not found: PYNQ needs the .hwh beside the .bit"
        return None

    @staticmethod
    def _real_devices() -> list[Any]:
        # Cheap check first: no FPGA manager and no remote board means no board at all (and no
        # pynq import, which takes a second).
        if not Path(_FPGA_MANAGER).exists() and not os.environ.get("PYNQ_REMOTE_DEVICES"):
            return []
        import warnings

        from pynq import Device
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            devices = list(Device.devices)
        return [d for d in devices if type(d).__name__ != "SimulatedPynqDevice"]

    def availability(self) -> Availability:
        if self._broken:
            return Availability(False, self._broken)
        if self.overlay is not None:
            return Availability(True, f"{self._where()} loaded with {self._bitfile().name}")
        missing = _pynq_missing()
        if missing:
            return Availability(False, missing)
        if self.mode == "board":
            try:
                if not self._real_devices():
                    return Availability(False, NO_BOARD)
            except Exception as e:
                return Availability(False, f"probing PYNQ devices failed: {type(e).__name__}: {e}")
        why = self._bitfile_problem()
        if why:
            return Availability(False, why)
        if self.mode == "sim":
            kind = self.engine or os.environ.get("OFFLOAD_FPGA_ENGINE", "verilator")
            if not isinstance(kind, str):
                kind = type(kind).__name__
            elif kind not in ("verilator", "reference"):
                return Availability(False, f"unknown engine model {kind!r}: expected 'verilator' "
                                           "or 'reference'")
            if kind == "verilator":
                try:
                    from offload.sim import verilator as v
                    v.toolchain()
                    v.sources()
                except Exception as e:
                    why = extras.missing("", "verilator") or f"cannot be built ({e})"
                else:
                    why = extras.missing("", "pyverilator")  # loads the built model
                if why:
                    return Availability(False, f"simulated PYNQ device: the Verilator engine model "
                                               f"{why}; engine='reference' runs "
                                               "the pure-Python engine")
            return Availability(True, f"simulated PYNQ-Z2 ({kind} engine model), no board")
        return Availability(True, f"PYNQ board; {self._bitfile().name} loaded on first use")

    def _where(self) -> str:
        return "simulated PYNQ-Z2" if self.mode == "sim" else \
            f"PYNQ device {getattr(self.device, 'name', '?')}"

    # -- opening ----------------------------------------------------------------------------

    def _open(self) -> None:
        if self.overlay is not None:
            return
        if self._broken:
            raise BackendUnavailable(self._broken)
        av = self.availability()
        if not av.ok:
            raise BackendUnavailable(av.reason)
        import pynq
        from pynq.lib.dma import DMA
        if self.mode == "sim":
            from offload.sim import pynq_device
            dev = pynq_device.activate(engine=self.engine, stall_cycles=self.stall_cycles)
            if self.faults:
                dev.inject(self.faults)
        else:
            dev = self._real_devices()[0]
        # From here on the code is the same for the board and the simulated device.
        ol = pynq.Overlay(str(self._bitfile()), device=dev)
        engines = [k for k, v in ol.ip_dict.items()
                   if str(v.get("type", "")).split(":")[2:3] == [ENGINE_IP_NAME]]
        dmas = [k for k, v in ol.ip_dict.items() if str(v.get("type", "")).startswith(DMA_VLNV)]
        if len(engines) != 1 or len(dmas) != 1:
            raise BackendUnavailable(
                f"{self._bitfile().name}: expected one {ENGINE_IP_NAME} IP and one AXI DMA, found "
                f"{engines or 'no engine'} and {dmas or 'no DMA'} in {sorted(ol.ip_dict)}")
        dma = getattr(ol, dmas[0])
        if not isinstance(dma, DMA) or dma.sendchannel is None or dma.recvchannel is None:
            raise BackendUnavailable(f"{dmas[0]} is not a simple-mode AXI DMA with both channels")
        self.device, self.overlay = dev, ol
        self._engine_ip, self._dma = getattr(ol, engines[0]), dma
        try:
            self._caps, self._ops_mask = engine_capabilities(self._engine_ip.read, self.name)
        except BackendError as e:
            self._broken = str(e)
            raise BackendUnavailable(str(e)) from None
        self._engine_ip.write(wire.REGISTERS["CTRL"], wire.CTRL_SOFT_RESET)

    def capabilities(self) -> Capabilities:
        with self._lock:
            self._open()
            assert self._caps is not None
            return self._caps

    def supports(self, call: OpCall, batch: Batch) -> str | None:
        why = super().supports(call, batch)
        return why or supports_on_engine(self.capabilities(), self._ops_mask, call, batch)

    def close(self) -> None:
        with self._lock:
            for p in self._pairs:
                if p is not None:
                    p.inb.freebuffer()
                    p.outb.freebuffer()
            self._pairs = [None, None]
            if self.mode == "sim" and self.device is not None:
                from offload.sim import pynq_device
                pynq_device.deactivate(self.device)
            self.device = self.overlay = self._engine_ip = self._dma = None

    # -- running ----------------------------------------------------------------------------

    def _pair(self, slot: int, in_words: int, out_words: int) -> _Pair:
        import pynq
        p = self._pairs[slot]
        if p is None or p.inb.shape[0] < in_words or p.outb.shape[0] < out_words:
            if p is not None:
                p.inb.freebuffer()
                p.outb.freebuffer()
            # Grow with headroom so a run of similar chunks allocates once.
            ni = max(in_words, 1024, p.inb.shape[0] if p else 0) * 5 // 4
            no = max(out_words, 1024, p.outb.shape[0] if p else 0) * 5 // 4
            p = _Pair(pynq.allocate(ni, np.uint64, target=self.device),
                      pynq.allocate(no, np.uint64, target=self.device))
            self._pairs[slot] = p
        return p

    def _jobs(self, call: OpCall, batch: Batch) -> Any:
        """``(a, b, job)`` per chunk of whole records whose transfers fit the DMA's length."""
        max_words = (self._dma.buffer_max_size // 8) if self._dma is not None else 1 << 23
        a, n = 0, batch.n
        size = self.chunk_records
        while a < n:
            b = min(a + size, n)
            sub = batch if (a, b) == (0, n) else batch.slice(a, b)
            job = wire.encode_request(call, sub)
            if max(job.words.shape[0], job.out_words_max) > max_words:
                if b - a == 1:
                    raise BackendError(f"fpga: record {a} needs a transfer of "
                                       f"{max(job.words.shape[0], job.out_words_max) * 8} bytes, "
                                       f"more than the DMA's {max_words * 8}", cause="too_large",
                                       completed=a)
                size = max(1, (b - a) // 2)
                continue
            yield a, b, job
            a = b

    def run(self, call: OpCall, batch: Batch) -> Result:
        with self._lock:
            self._open()
            if batch.n == 0:
                return empty_result(call.op)
            parts: list[Result] = []
            done = 0
            inflight: tuple[int, int, wire.WireJob, _Pair] | None = None
            try:
                jobs = self._jobs(call, batch)
                nxt = self._prepare(next(jobs), 0)
                self._start(nxt)
                k = 0
                while nxt is not None:
                    cur, inflight = nxt, nxt
                    k += 1
                    following = next(jobs, None)
                    nxt = self._prepare(following, k) if following is not None else None
                    nwords = self._wait(cur)
                    inflight = None
                    out = np.array(cur[3].outb[:nwords])  # the buffer is reused two chunks on
                    if nxt is not None:
                        self._start(nxt)
                        inflight = nxt
                    parts.append(wire.decode_response(cur[2], out))
                    done = cur[1]
                return concat_results(call.op, parts)
            except BackendError as e:
                if inflight is not None:
                    self._abort()
                k = e.completed if e.partial is not None and e.cause != "timeout" else 0
                if k:
                    parts.append(e.partial)  # type: ignore[arg-type]
                raise BackendError(str(e), cause=e.cause, completed=done + k,
                                   partial=concat_results(call.op, parts) if parts else None) from e
            except OSError as e:  # the board's registers or memory went away
                self._broken = f"{self._where()} lost: {e}"
                raise BackendError(f"fpga: {self._broken}", cause="device_lost", completed=done,
                                   partial=concat_results(call.op, parts) if parts else None) from e

    def _prepare(self, item: tuple[int, int, wire.WireJob], k: int) -> tuple[int, int, wire.WireJob, _Pair]:
        a, b, job = item
        pair = self._pair(k % 2, job.words.shape[0], job.out_words_max)
        pair.inb[: job.words.shape[0]] = job.words
        return a, b, job, pair

    def _start(self, item: tuple[int, int, wire.WireJob, _Pair]) -> None:
        _, _, job, pair = item
        pair.started = time.monotonic()  # the chunk's deadline counts from here
        self._dma.recvchannel.transfer(pair.outb, nbytes=job.out_words_max * 8)
        program_engine(self._engine_ip.write, job)
        self._dma.sendchannel.transfer(pair.inb, nbytes=job.words.shape[0] * 8)
        self.transfers += 1

    @staticmethod
    def _size(job: wire.WireJob) -> tuple[int, int]:
        """A chunk's size for its deadline: records, and bytes moved in and (at most) out."""
        return job.n, 8 * (job.words.shape[0] + job.out_words_max)

    def _deadline_s(self, job: wire.WireJob) -> float:
        """One chunk's DMA deadline: ``timeout_s`` when given, else from its size and the rate
        measured on the chunks before it (``self.deadlines``)."""
        if self.timeout_s is not None:
            return self.timeout_s
        return self.deadlines.deadline(*self._size(job))

    def _wait(self, item: tuple[int, int, wire.WireJob, _Pair]) -> int:
        """Words received for a started chunk; polls with a deadline, never blocks forever.
        On an error or timeout it raises; the caller resets the DMA and the engine."""
        a, b, job, pair = item
        send, recv = self._dma.sendchannel, self._dma.recvchannel
        t0 = pair.started
        limit = self._deadline_s(job)
        deadline = t0 + limit
        pause = 0.0
        while True:
            if recv.idle and send.idle:
                break
            if send.error or recv.error:
                st = (self._dma.mmio.read(0x04), self._dma.mmio.read(0x34))
                raise BackendError(f"fpga: AXI DMA error on records {a}..{b - 1} (MM2S_DMASR "
                                   f"0x{st[0]:08x}, S2MM_DMASR 0x{st[1]:08x})", cause="dma_error")
            if time.monotonic() > deadline:
                state = (f"MM2S {'idle' if send.idle else 'busy'}, S2MM "
                         f"{'idle' if recv.idle else 'busy'}, engine STATUS "
                         f"0x{self._engine_ip.read(wire.REGISTERS['STATUS']):x} DONE_COUNT "
                         f"{self._engine_ip.read(wire.REGISTERS['DONE_COUNT'])}")
                why = "" if self.timeout_s is not None else \
                    f" ({self.deadlines.explain(*self._size(job))})"
                raise BackendError(f"fpga: DMA transfer of records {a}..{b - 1} timed out after "
                                   f"{limit:.3g} s ({state}); DMA and engine reset{why}",
                                   cause="timeout")
            if pause:
                time.sleep(pause)
            pause = min(1e-3, pause * 2 or 20e-6)
        self.deadlines.observe(*self._size(job), time.monotonic() - t0)
        send.wait()  # both idle: these return at once (PYNQ's bookkeeping, cache invalidate)
        recv.wait()
        return int(recv.transferred) // 8

    def _abort(self) -> None:
        """Reset the DMA (both channels), restart it and soft-reset the engine."""
        try:
            self._dma.mmio.write(0x00, 0x4)  # MM2S_DMACR.Reset resets the whole AXI DMA
            deadline = time.monotonic() + 1.0
            while self._dma.mmio.read(0x00) & 0x4 and time.monotonic() < deadline:
                time.sleep(1e-4)
            self._dma.sendchannel.start()
            self._dma.recvchannel.start()
            self._engine_ip.write(wire.REGISTERS["CTRL"], wire.CTRL_SOFT_RESET)
        except OSError as e:
            self._broken = f"{self._where()} lost: {e}"
