"""A simulated PYNQ-Z2 for the fpga backend: a ``pynq.Device`` whose programmable logic is the
offload engine behind a model of the Xilinx AXI DMA (PG021, direct register mode).

What is modelled, so that the unchanged PYNQ stack runs on it:

* **the device**: a ``pynq.Device`` subclass, probed after every real PYNQ device
  (``_probe_priority_`` 1000; pynq's own are 40..200) and only when ``OFFLOAD_FPGA=sim`` is set
  or :func:`activate` was called, with the ``REGISTER_RW`` capability so that ``pynq.MMIO``
  routes every register access through :meth:`SimulatedPynqDevice.read_registers` /
  :meth:`~SimulatedPynqDevice.write_registers`;
* **the bitstream**: ``Overlay("offload_engine.bit")`` parses the ``.hwh`` next to it with
  pynq's own metadata parser (``sim/offload_engine.hwh``: PS7 + axi_dma + ``offload_axi`` as
  ``rtl/package_ip.tcl``'s block design places them) and :meth:`download` checks the ``.bit``
  header names a Zynq-7020;
* **memory**: ``pynq.allocate`` returns ``PynqBuffer`` views of numpy arrays placed at fake
  physical addresses in the PS DDR window; the DMA model finds a buffer from its address;
* **the AXI DMA at 0x40400000**: MM2S/S2MM DMACR, DMASR, address and length registers with
  PG021 semantics (RS/halted, idle, IOC, error bits, soft reset, S2MM length = bytes received),
  so ``pynq.lib.dma.DMA`` drives it unchanged. When both channels are armed, the MM2S buffer's
  words stream through the engine (as one numpy view, in a worker thread) and the output lands in
  the S2MM buffer;
* **the engine at 0x43C00000**: its AXI-Lite registers are the engine model's: the Verilator
  :class:`~offload.sim.verilator.EngineModel` of the PYNQ-Z2 build (``engine="verilator"``,
  default; ``flavour="behavioural"``, default, or ``"lut"``, the synthesised design itself,
  cycle-identical at the ports and several times slower to simulate: ``docs/fpga.md``) or the
  pure-Python :class:`~offload.sim.refmodel.ReferenceEngineModel` (``engine="reference"``);
* **the SLCR clock registers at 0xF8000000**, initialised as a PYNQ-Z2 boots (50 MHz reference,
  IO PLL 1000 MHz, FCLK0 100 MHz), so ``pynq.ps.Clocks`` works during ``Overlay.download``.

Faults (``offload.sim.faults.Fault``) are injected with :meth:`SimulatedPynqDevice.inject`; a
fault's ``at_record`` counts the records the engine was started on since the injection:
``stall`` (the DMA never goes idle), ``drop_tlast`` (the last input word leaves without TLAST),
``short_result`` (the S2MM transfer loses its last 3 words), ``flip_bit`` (one result bit flips)
and ``disappear`` (the device vanishes: every later register access raises ``OSError``).
"""

from __future__ import annotations

import errno
import os
import queue
import struct
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from pynq.buffer import PynqBuffer
from pynq.pl_server.device import Device

from offload import wire
from offload.sim.faults import damage, firing

__all__ = [
    "SimulatedPynqDevice",
    "activate",
    "deactivate",
    "standin_bitfile",
    "DMA_BASE",
    "ENGINE_BASE",
    "SLCR_BASE",
    "PRIORITY",
    "FLAVOURS",
]

PRIORITY = 1000  # after every real pynq device (Versal 40, Embedded 50, Remote 100, XRT 200)
ENGINE_BASE, ENGINE_RANGE = 0x43C00000, 0x1000
DMA_BASE, DMA_RANGE = 0x40400000, 0x10000
SLCR_BASE, SLCR_RANGE = 0xF8000000, 0x1000
DDR_BASE, DDR_TOP = 0x10000000, 0x20000000  # where buffers are placed (PS DDR, above the kernel)
ZYNQ_ARCH = "armv7l"
#: The Verilator engine's flavours of the PYNQ-Z2 build (``offload.engine_map.RTL_FLAVOURS``):
#: ``"behavioural"``, cycle-identical at the ports to ``"lut"`` (the synthesised design) and
#: several times faster to simulate, is the default.
FLAVOURS = ("behavioural", "lut")

_HERE = Path(__file__).resolve().parent
_ACTIVATED = False
_WORKER_IDLE_S = 1.0  # the DMA worker thread leaves after this long without a transfer

# PG021 register bits (direct register mode)
CR_RS, CR_RESET, CR_IOC_IRQ_EN, CR_ERR_IRQ_EN = 0x1, 0x4, 0x1000, 0x4000
SR_HALTED, SR_IDLE, SR_INT_ERR, SR_SLV_ERR, SR_DEC_ERR = 0x1, 0x2, 0x10, 0x20, 0x40
SR_IOC_IRQ, SR_DLY_IRQ, SR_ERR_IRQ = 0x1000, 0x2000, 0x4000
_IRQ_BITS = SR_IOC_IRQ | SR_DLY_IRQ | SR_ERR_IRQ

# PYNQ-Z2 SLCR at boot: PS_CLK 50 MHz; ARM PLL x26, DDR PLL x21, IO PLL x20; FCLK0 = IO/5/2.
_SLCR_BOOT = {
    0x100: 26 << 12,
    0x104: 21 << 12,
    0x108: 20 << 12,
    0x120: 2 << 8,
    0x170: 2 << 20 | 5 << 8,
    0x180: 1 << 20 | 10 << 8,
    0x190: 1 << 20 | 10 << 8,
    0x1A0: 1 << 20 | 10 << 8,
}


def standin_bitfile() -> Path:
    """The stand-in bitstream (``sim/offload_engine.bit``) with its ``.hwh`` beside it."""
    return _HERE / "offload_engine.bit"


class _Channel:
    """One direction of the AXI DMA (MM2S at 0x00, S2MM at 0x30)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.reset()

    def reset(self) -> None:
        self.cr = 0x00010000  # IRQThreshold 1 as after reset
        self.sr = SR_HALTED
        self.addr = 0
        self.length = 0
        self.armed = False

    def status(self) -> int:
        return self.sr

    def start_transfer(self, length: int) -> None:
        self.length = length
        if not self.cr & CR_RS or self.sr & SR_HALTED:
            return  # PG021: a length written to a halted channel does nothing
        if length == 0:
            self.sr |= SR_INT_ERR | SR_HALTED | SR_ERR_IRQ
            return
        self.sr &= ~SR_IDLE
        self.armed = True

    def complete(self, length: int | None = None) -> None:
        if length is not None:
            self.length = length
        self.armed = False
        self.sr |= SR_IDLE | SR_IOC_IRQ

    def fail(self, bit: int) -> None:
        self.armed = False
        self.sr |= bit | SR_HALTED | SR_ERR_IRQ


class SimulatedPynqDevice(Device):
    """A PYNQ-Z2 whose PL is the offload engine behind an AXI DMA model (see module docs)."""

    _probe_priority_ = PRIORITY

    @classmethod
    def _probe_(cls) -> list[SimulatedPynqDevice]:
        if _ACTIVATED or os.environ.get("OFFLOAD_FPGA") == "sim":
            return [cls()]
        return []

    def __init__(
        self,
        index: int = 0,
        *,
        engine: str | Any | None = None,
        flavour: str = "behavioural",
        stall_cycles: int = 200_000,
    ) -> None:
        super().__init__(f"offload_sim{index}")
        self.name = "pynq-z2-sim"
        self.arch = ZYNQ_ARCH
        self.capabilities = {"REGISTER_RW": True, "MEMORY_MAPPED": False, "CALLABLE": False}
        self.engine_kind = (
            engine if engine is not None else os.environ.get("OFFLOAD_FPGA_ENGINE", "verilator")
        )
        if isinstance(self.engine_kind, str) and self.engine_kind not in ("verilator", "reference"):
            raise ValueError(
                f"unknown engine model {self.engine_kind!r}: expected 'verilator' or 'reference'"
            )
        if flavour not in FLAVOURS:
            raise ValueError(
                f"unknown engine flavour {flavour!r} for the simulated PYNQ-Z2: "
                "expected 'behavioural' or 'lut'"
            )
        self.flavour = flavour
        self.stall_cycles = stall_cycles
        self._engine: Any = None if isinstance(self.engine_kind, str) else self.engine_kind
        self._lock = threading.RLock()
        self._mm2s, self._s2mm = _Channel("MM2S"), _Channel("S2MM")
        self._generation = 0  # bumped by a DMA reset: results of aborted transfers are dropped
        # The DMA's worker thread and the transfers queued for it (gen, src, dst, plan, first
        # record): one thread kept across transfers, as starting one per transfer blocks the
        # host until the new thread runs.
        self._worker: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[tuple[int, np.ndarray, np.ndarray, dict[str, Any], int]] = (
            queue.SimpleQueue()
        )
        self._slcr = dict(_SLCR_BOOT)
        self._buffers: dict[int, tuple[weakref.ref, int]] = {}  # phys addr -> (array, nbytes)
        self.faults: list[Any] = []
        self.records_started = 0  # records the engine was started on since inject()
        self.lost = False
        self.bitfile_name = ""
        self.timestamp = ""
        self.transfers = 0
        self.engine_cycles = 0

    # -- engine model ---------------------------------------------------------------------

    @property
    def engine(self) -> Any:
        with self._lock:
            if self._engine is None:
                if self.engine_kind == "reference":
                    from offload.sim.refmodel import ReferenceEngineModel

                    self._engine = ReferenceEngineModel()
                else:
                    from offload.sim.verilator import EngineModel

                    self._engine = EngineModel(flavour=self.flavour)
            return self._engine

    def inject(self, faults: list[Any]) -> None:
        """Arm device faults; ``at_record`` counts records started from now on."""
        with self._lock:
            self.faults = list(faults)
            self.records_started = 0

    def close(self) -> None:  # pynq's Device.close only warns; this releases the engine model
        with self._lock:
            self._generation += 1
            if self._engine is not None and isinstance(self.engine_kind, str):
                self._engine.close()
            self._engine = None

    # -- pynq.Device interface ------------------------------------------------------------

    def get_bitfile_metadata(self, bitfile_name: str, partial: bool = False) -> Any:
        from pynqmetadata.frontends import Metadata
        from pynqmetadata.views.runtime import RuntimeMetadataParser

        hwh = Path(bitfile_name).with_suffix(".hwh")
        if not hwh.exists():
            raise RuntimeError(f"Unable to find metadata for bitstream: {hwh} is missing")
        return RuntimeMetadataParser(Metadata(input=hwh))

    def download(self, bitstream: Any, parser: Any = None) -> None:
        from pynq.pl_server.embedded_device import parse_bit_header

        self._check_alive()
        data = Path(bitstream.bitfile_name).read_bytes()
        try:
            header = parse_bit_header(data)
        except Exception as e:
            raise RuntimeError(f"{bitstream.bitfile_name} is not a Xilinx .bit file: {e}") from None
        if not str(header.get("part", "")).startswith("7z020"):
            raise RuntimeError(
                f"{bitstream.bitfile_name} targets {header.get('part')!r}, not the PYNQ-Z2's 7z020"
            )
        with self._lock:
            self._dma_reset()
            if self._engine is not None:
                self._engine.reset()
        self.post_download(bitstream, parser, self.name)

    def gen_cache(self, bitstream: Any, parser: Any = None) -> None:
        pass

    def allocate(self, shape: Any, dtype: Any, **kwargs: Any) -> PynqBuffer:
        self._check_alive()
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = max(count * dtype.itemsize, 1)
        backing = np.zeros(nbytes, np.uint8)
        with self._lock:
            addr = self._place(nbytes)
            self._buffers[addr] = (weakref.ref(backing), nbytes)
        return PynqBuffer(
            shape, dtype, buffer=backing, device=self, device_address=addr, bo=addr, coherent=False
        )

    def _place(self, nbytes: int) -> int:
        """First fit in the DDR window, 4 KiB aligned, among the buffers still alive."""
        live = sorted((a, n) for a, (ref, n) in list(self._buffers.items()) if ref() is not None)
        self._buffers = {a: self._buffers[a] for a, _ in live}
        size = (nbytes + 0xFFF) & ~0xFFF
        pos = DDR_BASE
        for a, n in live:
            if a - pos >= size:
                break
            pos = max(pos, (a + n + 0xFFF) & ~0xFFF)
        if pos + size > DDR_TOP:
            raise MemoryError(f"simulated PYNQ-Z2: no {nbytes} bytes of contiguous memory left")
        return pos

    def flush(self, bo: Any, offset: int, ptr: int, size: int) -> None:
        pass  # the simulated memory is coherent; on the board this cleans the cache lines

    def invalidate(self, bo: Any, offset: int, ptr: int, size: int) -> None:
        pass

    def _view(self, addr: int, nbytes: int) -> np.ndarray | None:
        """The bytes [addr, addr+nbytes) of one live buffer, or None (a decode error)."""
        for base, (ref, n) in list(self._buffers.items()):
            arr = ref()
            if arr is not None and base <= addr and addr + nbytes <= base + n:
                return arr[addr - base : addr - base + nbytes]
        return None

    # -- register access (REGISTER_RW) ------------------------------------------------------

    def _check_alive(self) -> None:
        if self.lost:
            raise OSError(errno.ENODEV, "simulated PYNQ device lost (fault 'disappear')")

    def read_registers(self, address: int, length: int) -> bytes:
        self._check_alive()
        out = b""
        for a in range(address, address + length, 4):
            out += struct.pack("<I", self._read32(a))
        return out[:length]

    def write_registers(self, address: int, data: bytes) -> None:
        self._check_alive()
        data = bytes(data) + b"\0" * (-len(data) % 4)
        for i in range(0, len(data), 4):
            self._write32(address + i, struct.unpack_from("<I", data, i)[0])

    def _read32(self, a: int) -> int:
        if ENGINE_BASE <= a < ENGINE_BASE + ENGINE_RANGE:
            return self.engine.read(a - ENGINE_BASE) & 0xFFFFFFFF
        if DMA_BASE <= a < DMA_BASE + DMA_RANGE:
            return self._dma_read(a - DMA_BASE)
        if SLCR_BASE <= a < SLCR_BASE + SLCR_RANGE:
            return self._slcr.get(a - SLCR_BASE, 0)
        raise OSError(errno.EFAULT, f"simulated PYNQ-Z2: no slave at 0x{a:08x} (bus error)")

    def _write32(self, a: int, v: int) -> None:
        if ENGINE_BASE <= a < ENGINE_BASE + ENGINE_RANGE:
            self.engine.write(a - ENGINE_BASE, v)
        elif DMA_BASE <= a < DMA_BASE + DMA_RANGE:
            self._dma_write(a - DMA_BASE, v)
        elif SLCR_BASE <= a < SLCR_BASE + SLCR_RANGE:
            self._slcr[a - SLCR_BASE] = v
        else:
            raise OSError(errno.EFAULT, f"simulated PYNQ-Z2: no slave at 0x{a:08x} (bus error)")

    # -- AXI DMA register model -------------------------------------------------------------

    def _dma_reset(self) -> None:
        self._generation += 1
        self._mm2s.reset()
        self._s2mm.reset()

    def _dma_read(self, off: int) -> int:
        with self._lock:
            ch = self._mm2s if off < 0x30 else self._s2mm
            reg = off if off < 0x30 else off - 0x30
            if reg == 0x00:
                return ch.cr
            if reg == 0x04:
                return ch.status()
            if reg == 0x18:
                return ch.addr & 0xFFFFFFFF
            if reg == 0x1C:
                return ch.addr >> 32
            if reg == 0x28:
                return ch.length
            return 0

    def _dma_write(self, off: int, v: int) -> None:
        with self._lock:
            ch = self._mm2s if off < 0x30 else self._s2mm
            reg = off if off < 0x30 else off - 0x30
            if reg == 0x00:
                if v & CR_RESET:  # PG021: a soft reset on either channel resets the whole core
                    self._dma_reset()
                    return
                ch.cr = v
                if v & CR_RS:
                    ch.sr &= ~SR_HALTED
                elif not ch.armed:
                    ch.sr |= SR_HALTED
            elif reg == 0x04:
                ch.sr &= ~(v & _IRQ_BITS)  # interrupt bits are write-1-to-clear
            elif reg == 0x18:
                ch.addr = ch.addr & ~0xFFFFFFFF | v
            elif reg == 0x1C:
                ch.addr = ch.addr & 0xFFFFFFFF | v << 32
            elif reg == 0x28:
                ch.start_transfer(v & 0x3FFFFFF)
                if self._mm2s.armed and self._s2mm.armed:
                    self._launch()

    def _launch(self) -> None:
        """Both channels armed: stream the MM2S buffer through the engine in a worker."""
        src = self._view(self._mm2s.addr, self._mm2s.length)
        dst = self._view(self._s2mm.addr, self._s2mm.length)
        if src is None:
            self._mm2s.fail(SR_DEC_ERR)
            return
        if dst is None:
            self._s2mm.fail(SR_DEC_ERR)
            return
        count = int(self.engine.read(wire.REGISTERS["COUNT"]))
        a = self.records_started
        b = a + max(count, 1)
        self.records_started = b
        plan = {
            kind: firing(self.faults, kind, a, b)
            for kind in ("disappear", "stall", "drop_tlast", "short_result", "flip_bit")
        }
        self.transfers += 1
        if plan["disappear"] is not None:
            self.lost = True  # the board is gone: nothing completes, every access fails
            return
        if plan["stall"] is not None:
            return  # the engine never takes or gives a word: neither channel goes idle
        self._jobs.put((self._generation, src, dst, plan, a))
        if self._worker is None:
            self._worker = threading.Thread(target=self._serve, name="offload-sim-dma", daemon=True)
            self._worker.start()

    def _serve(self) -> None:
        """The DMA worker: runs the queued transfers in order; leaves after ``_WORKER_IDLE_S``
        without one, so a device that is dropped without :meth:`close` keeps no thread."""
        while True:
            try:
                job = self._jobs.get(timeout=_WORKER_IDLE_S)
            except queue.Empty:
                with self._lock:  # _launch queues under this lock: no transfer is left behind
                    if self._jobs.empty():
                        self._worker = None
                        return
                continue
            self._run_transfer(*job)

    def _run_transfer(self, gen: int, src: np.ndarray, dst: np.ndarray, plan: dict[str, Any], a: int) -> None:
        words = src[: src.shape[0] // 8 * 8].view(np.uint64)
        out_cap = dst.shape[0] // 8
        engine = self.engine
        try:
            with engine.lock:
                # A DMA reset between the launch and now aborted this transfer: its words must
                # not reach the engine (they would meet the next batch's START).
                if gen != self._generation:
                    return
                out, status, accepted, cycles = engine.stream(
                    words, out_cap, drop_tlast=plan["drop_tlast"] is not None, stall_cycles=self.stall_cycles
                )
        except Exception:  # a broken model is a broken board: the transfer never completes
            return
        with self._lock:
            if gen != self._generation or self.lost:
                return
            self.engine_cycles += cycles
            if accepted >= words.shape[0]:
                self._mm2s.complete()
            if status == 2:  # the packet is longer than the S2MM buffer: PG021 DMAIntErr
                self._s2mm.fail(SR_INT_ERR)
                return
            if status != 0:  # no TLAST came out: the S2MM transfer stays busy
                return
            out = damage(out, a, plan["short_result"], plan["flip_bit"])
            n = int(out.shape[0])
            dst[: n * 8].view(np.uint64)[:] = out
            self._s2mm.complete(n * 8)


def activate(
    *, engine: str | Any | None = None, flavour: str = "behavioural", stall_cycles: int = 200_000
) -> SimulatedPynqDevice:
    """A new simulated device, made pynq's active device (and listed in ``Device.devices``)."""
    global _ACTIVATED
    dev = SimulatedPynqDevice(engine=engine, flavour=flavour, stall_cycles=stall_cycles)
    _ACTIVATED = True
    probed = Device.__dict__.get("_devices")
    if probed is not None:
        probed[:] = [d for d in probed if not isinstance(d, SimulatedPynqDevice)] + [dev]
    Device.active_device = dev
    _reset_clocks(dev)
    return dev


def deactivate(dev: SimulatedPynqDevice | None = None) -> None:
    """Undo :func:`activate`: drop simulated devices from pynq's list and active device."""
    global _ACTIVATED
    _ACTIVATED = False
    probed = Device.__dict__.get("_devices")
    if probed is not None:
        probed[:] = [d for d in probed if not isinstance(d, SimulatedPynqDevice)]
    active = Device.__dict__.get("_active_device")
    if isinstance(active, SimulatedPynqDevice) and (dev is None or active is dev):
        del Device._active_device
    _reset_clocks(None)
    if dev is not None:
        dev.close()


def _reset_clocks(dev: SimulatedPynqDevice | None) -> None:
    # pynq.ps.Clocks caches the clock driver of the first device it saw; point it at this one.
    from pynq.ps import Clocks

    Clocks.device = dev
    if "_real_instance" in Clocks.__dict__:
        del Clocks._real_instance
