"""A pure-Python engine with the interface of :class:`offload.sim.verilator.EngineModel`.

:class:`ReferenceEngineModel` is the register file of ``docs/wire_format.md`` (ID, VERSION, CAPS,
OPS, START latching, STATUS/ERR/DONE_COUNT, the boundary table with ``TABLE_ADDR``
auto-increment) whose :meth:`~ReferenceEngineModel.stream` runs the batch through
:func:`offload.wire.reference_engine`, the golden-model statement of the engine's behaviour.

It needs no Verilator and no RTL, so it stands in for the engine wherever the hardware is not the
thing under test: the simulated PYNQ device's fast mode, host-driver tests, and as a double in
other tests. It is slow per record (golden models, record by record): keep batches small.
"""

from __future__ import annotations

import threading

import numpy as np

from offload import engine_map as em
from offload import wire

__all__ = ["ReferenceEngineModel", "DEFAULT_OPS", "TABLE_DEPTH"]

TABLE_DEPTH = 256
DEFAULT_OPS = em.ops_mask()  # every op code of the engine map
_R = em.REGISTERS
_RW = set(em.RW_REGISTERS)
_PARAMS = em.PARAM_REGISTERS
_NAME = {v: k for k, v in _R.items()}
# Status codes of EngineModel.stream (offload.sim.verilator.STATUS_NAMES).
_OK, _TIMEOUT, _OVERFLOW, _STALL = 0, 1, 2, 3


class ReferenceEngineModel:
    """The engine's register file and stream behaviour on the golden models.

    ``table_depth``, ``ops`` (bit k = OP k built in), ``lanes``, ``bus_bytes`` and
    ``record_max`` shape what ``CAPS``/``OPS``/``RECORD_MAX`` report, so capability handling can
    be tested against other builds.
    """

    def __init__(
        self,
        *,
        table_depth: int = TABLE_DEPTH,
        ops: int = DEFAULT_OPS,
        lanes: int = 1,
        bus_bytes: int = 8,
        record_max: int | None = None,
    ) -> None:
        self.table_depth = table_depth
        self.ops = ops
        limited = any(ops >> em.OP_CODES[k] & 1 for k in em.RECORD_LIMITED)
        #: ``RECORD_MAX`` (default: the engine's, if an op code with a record limit is built)
        default = em.DEFAULT_RECORD_MAX if limited else em.NO_RECORD_MAX
        self.record_max = default if record_max is None else record_max
        self.caps = (table_depth & 0xFFFF) | (lanes & 0xFF) << 16 | (bus_bytes & 0xFF) << 24
        self.lock = threading.RLock()
        self.closed = False
        self.reset()

    # -- EngineModel interface --------------------------------------------------------------

    def reset(self, cycles: int = 8) -> None:
        with self.lock:
            self.regs = {name: 0 for name in _RW}
            self.table = np.zeros(self.table_depth, np.uint64)
            self._lo = 0
            self.latched: dict[str, int] | None = None
            self.busy = self.done = False
            self.err = 0
            self.done_count = 0
            self.cycles = 0
            self.time = 0

    def write(self, addr: int, value: int) -> None:
        value &= 0xFFFFFFFF
        with self.lock:
            self.time += 2
            name = _NAME.get(addr)
            if name in _RW:
                self.regs[name] = value
            elif name == "CTRL":
                if value & em.CTRL_SOFT_RESET:
                    self.busy = self.done = False
                    self.err = 0
                    self.latched = None
                elif value & em.CTRL_START:
                    self.latched = {k: self.regs[k] for k in _PARAMS}
                    self.busy, self.done = True, False
                    self.err = 0
                    self.done_count = 0
                    self.cycles = 0
            elif name == "TABLE_DATA_LO":
                self._lo = value
            elif name == "TABLE_DATA_HI":
                addr_ = self.regs["TABLE_ADDR"]
                if addr_ < self.table_depth:
                    self.table[addr_] = np.uint64(value << 32 | self._lo)
                self.regs["TABLE_ADDR"] = (addr_ + 1) & 0xFFFFFFFF
            # writes to read-only or unmapped addresses are ignored, as on the AXI-Lite slave

    def read(self, addr: int) -> int:
        with self.lock:
            self.time += 2
            name = _NAME.get(addr, "")  # "": unmapped, reads as 0
            if name in _RW:
                return self.regs[name]
            return {
                "ID": em.ENGINE_ID,
                "VERSION": em.ENGINE_VERSION,
                "STATUS": (em.STATUS_BUSY if self.busy else 0)
                | (em.STATUS_DONE if self.done else 0)
                | (em.STATUS_ERROR if self.err else 0),
                "ERR": self.err,
                "DONE_COUNT": self.done_count,
                "CAPS": self.caps,
                "CYCLES_LO": self.cycles & 0xFFFFFFFF,
                "CYCLES_HI": self.cycles >> 32 & 0xFFFFFFFF,
                "OPS": self.ops & 0xFFFFFFFF,
                "OPS_HI": self.ops >> 32,
                "SEQ_MAX": em.DEFAULT_SEQ_MAX,
                "RECORD_MAX": self.record_max,
            }.get(name, 0)

    def stream(
        self,
        words: np.ndarray,
        out_cap: int,
        *,
        idle_pct: int = 0,
        backpressure_pct: int = 0,
        drop_tlast: bool = False,
        max_cycles: int | None = None,
        stall_cycles: int = 100_000,
    ) -> tuple[np.ndarray, int, int, int]:
        """Send ``words`` (TLAST on the last unless ``drop_tlast``); ``(out, status, accepted,
        cycles)`` with the status codes of ``EngineModel.stream``."""
        words = np.ascontiguousarray(words, dtype=np.uint64)
        n = int(words.shape[0])
        with self.lock:
            if backpressure_pct >= 100:  # output never ready: the engine stalls mid-batch
                self.time += stall_cycles
                return np.zeros(0, np.uint64), _STALL, min(n, 2), stall_cycles
            if not self.busy or self.latched is None:
                # idle engine: everything is consumed and discarded, nothing comes out
                if n:
                    self.err |= em.ERR_FLAGS["EXTRA_DATA"]
                cyc = n + (max_cycles or 64 * n + 1_000_000)
                self.time += cyc
                return np.zeros(0, np.uint64), _TIMEOUT, n, cyc
            regs = dict(self.latched)
            if drop_tlast:
                # The engine sees no TLAST on the last word: a batch that ends exactly there is
                # flagged MISSING_TLAST (it is what the engine reports for "record COUNT had no
                # TLAST"); one word of padding stands for "no TLAST yet" in the golden statement.
                out, err = wire.reference_engine(
                    regs,
                    self.table,
                    np.append(words, np.uint64(0)),
                    table_depth=self.table_depth,
                    record_max=self.record_max,
                )
                err &= ~em.ERR_FLAGS["EXTRA_DATA"]
            else:
                out, err = wire.reference_engine(
                    regs, self.table, words, table_depth=self.table_depth, record_max=self.record_max
                )
            cycles = n + int(out.shape[0]) + 8
            self.cycles, self.time = cycles, self.time + cycles
            self.busy, self.done = False, True
            self.err = err
            self.done_count = wire.parse_trailer(out[-1])[2]
            if out.shape[0] > out_cap:
                return out[:out_cap].copy(), _OVERFLOW, n, cycles
            return out, _OK, n, cycles

    def idle(self, cycles: int, ready: bool = True) -> None:
        with self.lock:
            self.time += cycles

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> ReferenceEngineModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
