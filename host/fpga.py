"""The ``fpga`` backend: the offload engine on a PYNQ board, driven through PYNQ itself.

``Overlay(bitfile)`` loads the engine's bitstream and its ``.hwh``; the engine IP is found by its
VLNV name (``offload_axi``) and driven over its AXI-Lite MMIO, the AXI DMA is the stock
``pynq.lib.dma.DMA`` driver, and the batch crosses in ``pynq.allocate``d buffers. The engine
driver (:mod:`offload.host.engine_driver`, shared with the ``sim`` backend) reads the engine's
capabilities, splits a batch into chunks of whole records (smaller still when a chunk's transfer
would exceed the DMA's length), packs, programs and unpacks them; this module is its transport.
Chunks are double-buffered: two buffer pairs, chunk k+1 is packed into one while chunk k is in
flight from the other, and chunk k is unpacked while chunk k+1 is in flight.

PYNQ's own ``wait()`` spins forever on a transfer that never ends (wrong length, missing TLAST),
so the transport never calls it on a busy channel: it polls the channels' status with a deadline,
and on timeout raises ``BackendError(cause="timeout")``; the driver then has the DMA reset and the
engine soft-reset, and hands back the results of the chunks already completed.

Options (``Runtime(fpga=...)`` passes ``device``; the rest via ``options={"fpga": {...}}``):

* ``device``: ``"board"`` (a real PYNQ board) or ``"sim"`` (the simulated PYNQ-Z2 of
  ``offload.sim.pynq_device``); default ``$OFFLOAD_FPGA``, else ``"board"``. The simulated device
  is never picked on its own.
* ``bitfile``: the ``.bit`` (its ``.hwh`` beside it); default ``rtl/offload_engine.bit`` on a
  board, the stand-in ``sim/offload_engine.bit`` on the simulated device.
* ``engine`` (simulated device only): ``"verilator"`` (default, the RTL), ``"reference"``
  (pure Python, fast) or an engine-model instance; default ``$OFFLOAD_FPGA_ENGINE``;
  ``flavour``: the Verilator engine's, ``"behavioural"`` (default) or ``"lut"`` (the
  synthesised design itself, cycle-identical at the ports, several times slower to simulate);
  ``faults``: ``[offload.sim.faults.Fault(...)]`` injected into it.
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

from offload import extras
from offload.backend import (
    Availability,
    Backend,
    BackendError,
    BackendUnavailable,
    Batch,
    Capabilities,
    Result,
)
from offload.engine_map import REGISTERS
from offload.ops import OpCall
from offload.wire import WireJob

from .deadline import DeadlineEstimator
from .engine_driver import Chunk, EngineDriver, soft_reset

__all__ = ["FpgaBackend", "ENGINE_IP_NAME", "NO_BOARD", "default_bitfile"]

ENGINE_IP_NAME = "offload_axi"  # VLNV name of the engine IP (rtl/package_ip.tcl)
DMA_VLNV = "xilinx.com:ip:axi_dma:"
NO_BOARD = "no PYNQ board found; set OFFLOAD_FPGA=sim for the simulated device"
_FPGA_MANAGER = "/sys/class/fpga_manager/fpga0/firmware"
_MODES = ("board", "sim")
# AXI DMA (PG021) status registers and bits, as PYNQ's DMAChannel reads them
MM2S_DMASR, S2MM_DMASR = 0x04, 0x34
DMASR_IDLE, DMASR_ERRORS = 0x2, 0x70  # Idle; DMAIntErr | DMASlvErr | DMADecErr
_FLAVOURS = ("behavioural", "lut")  # the simulated device's (offload.sim.pynq_device.FLAVOURS)


def default_bitfile() -> Path:
    import offload.rtl

    return Path(offload.rtl.__file__).resolve().parent / "offload_engine.bit"


def _pynq_missing() -> str | None:
    # Named before any other reason (no board, OFFLOAD_FPGA=sim): without pynq nothing else helps.
    return extras.missing("", "pynq")


@dataclass
class _Pair:
    """One input and one output DMA buffer (uint64 words), and the chunk loaded into them."""

    inb: Any
    outb: Any
    chunk: Chunk | None = None
    started: float = 0.0  # when the chunk was started (time.monotonic)


class FpgaBackend(Backend):
    """The engine behind an AXI DMA on a PYNQ board (or on the simulated PYNQ-Z2)."""

    name = "fpga"

    def __init__(
        self,
        *,
        device: str | None = None,
        bitfile: str | os.PathLike[str] | None = None,
        engine: str | Any | None = None,
        flavour: str | None = None,
        faults: list[Any] | None = None,
        timeout_s: float | None = None,
        chunk_records: int = 1 << 18,
        stall_cycles: int = 200_000,
    ) -> None:
        mode = device or os.environ.get("OFFLOAD_FPGA") or "board"
        if mode not in _MODES:
            raise ValueError(f"unknown fpga device {mode!r}: expected 'board' or 'sim'")
        if mode == "board" and (engine is not None or flavour is not None or faults):
            raise ValueError(
                "engine=, flavour= and faults= apply only to the simulated device (device='sim')"
            )
        if flavour is not None and flavour not in _FLAVOURS:
            raise ValueError(f"unknown engine flavour {flavour!r}: expected 'behavioural' or 'lut'")
        if (timeout_s is not None and not timeout_s > 0) or chunk_records < 1:
            raise ValueError("timeout_s must be > 0 and chunk_records >= 1")
        self.mode = mode
        self.bitfile = Path(bitfile) if bitfile is not None else None
        self.engine = engine
        self.flavour = flavour or _FLAVOURS[0]
        self.faults = list(faults or [])
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.chunk_records = int(chunk_records)
        self.stall_cycles = stall_cycles
        # a chunk's deadline from the rate measured on the chunks before it; the prior before
        # any: a board moves ~100 M words/s (1e-7 s/word is 10x slower), the simulated device's
        # Verilator engine ~20 k words/s on a loaded machine
        self.deadlines = DeadlineEstimator(
            prior_fixed_s=10.0,
            prior_byte_s=(5e-5 if mode == "sim" else 1e-7) / 8,
            latency_s=0.01,
            floor_s=1.0,
            margin=4.0,
        )
        self.device: Any = None
        self.overlay: Any = None
        self._engine_ip: Any = None
        self._dma: Any = None
        self._transport: _DmaTransport | None = None
        self._driver: EngineDriver | None = None
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
            return (
                f"bitstream {bit} not found: build it with Vivado (rtl/package_ip.tcl), "
                "or pass options={'fpga': {'bitfile': ...}}"
            )
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
                return Availability(
                    False, f"unknown engine model {kind!r}: expected 'verilator' or 'reference'"
                )
            if kind == "verilator":
                try:
                    from offload.sim import verilator as v

                    v.toolchain()
                    v.sources(self.flavour)
                except Exception as e:
                    why = extras.missing("", "verilator") or f"cannot be built ({e})"
                else:
                    why = extras.missing("", "pyverilator")  # loads the built model
                if why:
                    return Availability(
                        False,
                        f"simulated PYNQ device: the Verilator engine model "
                        f"{why}; engine='reference' runs "
                        "the pure-Python engine",
                    )
            return Availability(True, f"simulated PYNQ-Z2 ({kind} engine model), no board")
        return Availability(True, f"PYNQ board; {self._bitfile().name} loaded on first use")

    def _where(self) -> str:
        return (
            "simulated PYNQ-Z2" if self.mode == "sim" else f"PYNQ device {getattr(self.device, 'name', '?')}"
        )

    # -- opening ----------------------------------------------------------------------------

    def _open(self) -> EngineDriver:
        """The engine driver over the loaded overlay (loaded, checked and reset on first use)."""
        if self._driver is not None:
            return self._driver
        if self._broken:
            raise BackendUnavailable(self._broken)
        av = self.availability()
        if not av.ok:
            raise BackendUnavailable(av.reason)
        import pynq
        from pynq.lib.dma import DMA

        if self.mode == "sim":
            from offload.sim import pynq_device

            dev = pynq_device.activate(
                engine=self.engine, flavour=self.flavour, stall_cycles=self.stall_cycles
            )
            if self.faults:
                dev.inject(self.faults)
        else:
            dev = self._real_devices()[0]
        # From here on the code is the same for the board and the simulated device.
        ol = pynq.Overlay(str(self._bitfile()), device=dev)
        engines = [
            k for k, v in ol.ip_dict.items() if str(v.get("type", "")).split(":")[2:3] == [ENGINE_IP_NAME]
        ]
        dmas = [k for k, v in ol.ip_dict.items() if str(v.get("type", "")).startswith(DMA_VLNV)]
        if len(engines) != 1 or len(dmas) != 1:
            raise BackendUnavailable(
                f"{self._bitfile().name}: expected one {ENGINE_IP_NAME} IP and one AXI DMA, found "
                f"{engines or 'no engine'} and {dmas or 'no DMA'} in {sorted(ol.ip_dict)}"
            )
        dma = getattr(ol, dmas[0])
        if not isinstance(dma, DMA) or dma.sendchannel is None or dma.recvchannel is None:
            raise BackendUnavailable(f"{dmas[0]} is not a simple-mode AXI DMA with both channels")
        self.device, self.overlay = dev, ol
        self._engine_ip, self._dma = getattr(ol, engines[0]), dma
        self._transport = _DmaTransport(self, self._engine_ip, dma)
        driver = EngineDriver(self._transport, self.name)
        try:
            driver.open()
        except BackendError as e:
            self._broken = str(e)
            raise BackendUnavailable(str(e)) from None
        self._driver = driver
        return driver

    def capabilities(self) -> Capabilities:
        with self._lock:
            return self._open().open().caps

    def supports(self, call: OpCall, batch: Batch) -> str | None:
        with self._lock:
            return super().supports(call, batch) or self._open().supports(call, batch)

    def close(self) -> None:
        with self._lock:
            if self._transport is not None:
                self._transport.free()
            if self.mode == "sim" and self.device is not None:
                from offload.sim import pynq_device

                pynq_device.deactivate(self.device)
            self.device = self.overlay = self._engine_ip = self._dma = None
            self._transport = self._driver = None

    # -- running ----------------------------------------------------------------------------

    def run(self, call: OpCall, batch: Batch) -> Result:
        with self._lock:
            driver = self._open()
            try:
                return driver.run(call, batch, self.chunk_records)
            finally:
                if driver.lost:  # every later use says why
                    self._broken = driver.lost

    @staticmethod
    def _size(job: WireJob) -> tuple[int, int]:
        """A chunk's size for its deadline: records, and bytes moved in and (at most) out."""
        return job.n, 8 * (job.words.shape[0] + job.out_words_max)

    def _deadline_s(self, job: WireJob) -> float:
        """One chunk's DMA deadline: ``timeout_s`` when given, else from its size and the rate
        measured on the chunks before it (``self.deadlines``)."""
        if self.timeout_s is not None:
            return self.timeout_s
        return self.deadlines.deadline(*self._size(job))


def _poll_pause(elapsed: float) -> float:
    """The sleep between two polls of a transfer running for ``elapsed`` seconds: a 16th of
    that, from 20 µs to 1 ms, so a transfer is seen done at most ~6 % (or 1 ms) after it ends
    with a bounded number of register reads; a pause doubling up to 1 ms could see a 3 ms
    transfer done 1 ms late."""
    return min(1e-3, max(20e-6, elapsed / 16))


class _DmaTransport:
    """The driver's transport on PYNQ: the engine IP's MMIO for registers; the AXI DMA and two
    ``pynq.allocate``d buffer pairs (used in turn) for a chunk's words. A transfer is waited for by
    polling with a deadline, never in PYNQ's ``wait()`` on a busy channel."""

    link = "DMA"

    def __init__(self, backend: FpgaBackend, engine_ip: Any, dma: Any) -> None:
        self.backend = backend
        self.dma = dma
        self.read = engine_ip.read
        self.write = engine_ip.write
        self.max_words = dma.buffer_max_size // 8
        self.pairs: list[_Pair | None] = [None, None]
        self._next = 0  # the pair the next chunk is loaded into

    @property
    def where(self) -> str:
        return self.backend._where()

    def _pair(self, slot: int, in_words: int, out_words: int) -> _Pair:
        import pynq

        p = self.pairs[slot]
        if p is None or p.inb.shape[0] < in_words or p.outb.shape[0] < out_words:
            if p is not None:
                p.inb.freebuffer()
                p.outb.freebuffer()
            # Grow with headroom so a run of similar chunks allocates once.
            ni = max(in_words, 1024, p.inb.shape[0] if p else 0) * 5 // 4
            no = max(out_words, 1024, p.outb.shape[0] if p else 0) * 5 // 4
            p = _Pair(
                pynq.allocate(ni, np.uint64, target=self.backend.device),
                pynq.allocate(no, np.uint64, target=self.backend.device),
            )
            self.pairs[slot] = p
        return p

    def _loaded(self, chunk: Chunk) -> _Pair:
        return next(p for p in self.pairs if p is not None and p.chunk is chunk)

    def load(self, chunk: Chunk) -> None:
        job = chunk.job
        pair = self._pair(self._next, job.words.shape[0], job.out_words_max)
        self._next ^= 1
        pair.inb[: job.words.shape[0]] = job.words
        pair.chunk = chunk

    def start(self, chunk: Chunk) -> None:
        pair, job = self._loaded(chunk), chunk.job
        pair.started = time.monotonic()  # the chunk's deadline counts from here
        self.dma.recvchannel.transfer(pair.outb, nbytes=job.out_words_max * 8)
        self.dma.sendchannel.transfer(pair.inb, nbytes=job.words.shape[0] * 8)
        self.backend.transfers += 1

    def collect(self, chunk: Chunk) -> np.ndarray:
        pair = self._loaded(chunk)
        nwords = self._wait(chunk, pair)
        return np.array(pair.outb[:nwords])  # the buffer is reused two chunks on

    def _wait(self, chunk: Chunk, pair: _Pair) -> int:
        """Words received for a started chunk; polls with a deadline, never blocks forever.
        On an error or timeout it raises; the driver then aborts (:meth:`abort`)."""
        be, job = self.backend, chunk.job
        send, recv, mmio = self.dma.sendchannel, self.dma.recvchannel, self.dma.mmio
        t0 = pair.started
        limit = be._deadline_s(job)
        deadline = t0 + limit
        while True:
            # One read of each status register per poll (PYNQ's idle and error properties read
            # them once each: four register reads)
            st = (mmio.read(MM2S_DMASR), mmio.read(S2MM_DMASR))
            if st[0] & st[1] & DMASR_IDLE:
                break
            if (st[0] | st[1]) & DMASR_ERRORS:
                raise BackendError(
                    f"fpga: AXI DMA error on records {chunk.start}..{chunk.stop - 1}"
                    f" (MM2S_DMASR 0x{st[0]:08x}, S2MM_DMASR 0x{st[1]:08x})",
                    cause="dma_error",
                )
            now = time.monotonic()
            if now > deadline:
                raise self._timeout(chunk, limit)
            time.sleep(_poll_pause(now - t0))
        be.deadlines.observe(*be._size(job), time.monotonic() - t0)
        send.wait()  # both idle: these return at once (PYNQ's bookkeeping, cache invalidate)
        recv.wait()
        return int(recv.transferred) // 8

    def _timeout(self, chunk: Chunk, limit: float) -> BackendError:
        send, recv = self.dma.sendchannel, self.dma.recvchannel
        state = (
            f"MM2S {'idle' if send.idle else 'busy'}, S2MM "
            f"{'idle' if recv.idle else 'busy'}, engine STATUS "
            f"0x{self.read(REGISTERS['STATUS']):x} DONE_COUNT "
            f"{self.read(REGISTERS['DONE_COUNT'])}"
        )
        be = self.backend
        why = "" if be.timeout_s is not None else f" ({be.deadlines.explain(*be._size(chunk.job))})"
        return BackendError(
            f"fpga: DMA transfer of records {chunk.start}..{chunk.stop - 1} timed "
            f"out after {limit:.3g} s ({state}); DMA and engine reset{why}",
            cause="timeout",
        )

    def abort(self) -> None:
        """Reset the DMA (both channels) and restart it, then soft-reset the engine: no word
        reaches the engine after its reset."""
        mmio = self.dma.mmio
        mmio.write(0x00, 0x4)  # MM2S_DMACR.Reset resets the whole AXI DMA
        deadline = time.monotonic() + 1.0
        while mmio.read(0x00) & 0x4 and time.monotonic() < deadline:
            time.sleep(1e-4)
        self.dma.sendchannel.start()
        self.dma.recvchannel.start()
        soft_reset(self.write)

    def free(self) -> None:
        for p in self.pairs:
            if p is not None:
                p.inb.freebuffer()
                p.outb.freebuffer()
        self.pairs = [None, None]
