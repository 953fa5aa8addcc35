"""The engine's output side: the results and the trailer into the FIFO, the FIFO to ``m_axis``
(:class:`Collector`, a submodule of :class:`~offload.hw.engine.OffloadEngine`)."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Shape, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from offload.engine_map import ERR_BITS, TRAILER_MAGIC

from .control import Control
from .fifo import SEQ_DATA, TRAILER, CommitFIFO

__all__ = ["Collector", "axis_out"]


def axis_out(lanes: int) -> dict:
    """The ``m_axis`` ports of a ``64*lanes``-bit bus, in the engine's port order."""
    bus = 64 * lanes
    return {
        "m_axis_tdata": Out(bus),
        "m_axis_tkeep": Out(bus // 8),
        "m_axis_tlast": Out(1),
        "m_axis_tvalid": Out(1),
        "m_axis_tready": In(1),
    }


class Collector(wiring.Component):
    """The batch operator's results into the :class:`~offload.hw.fifo.CommitFIFO` (a
    submodule), then the trailer; the FIFO drives ``m_axis``.

    Ports: the :func:`axis_out` ports (``tkeep``: every byte of a result or the trailer, none
    of a pad word); In ``res_valid`` (bit j: lane j has a result), ``res_data`` (64 bits per
    lane), ``res_kind`` (the FIFO's word kind: a result, or a sequence's data or header word),
    the lanes' operator mux (:meth:`~offload.hw.lanebank.LaneBank.select`); from the control
    ``state``, ``err``, ``core_clr``, ``soft_reset`` and ``batch_start`` (START in IDLE), the
    lanes' ``core_rst`` (results from before a reset are dropped). Out ``level`` (the FIFO's:
    the parser's credit), ``resq_valid`` (results in the register in front of the FIFO),
    ``resq_any`` (any of them: a register of its own, the control's), ``write_trailer`` (the
    trailer is written this cycle), ``done_count`` (``DONE_COUNT``: records whose result was
    written), ``done_flag`` and ``busy_out`` (set when the trailer leaves ``m_axis``, cleared /
    set at ``batch_start``).

    Latency: one register between the operator's mux and the FIFO, then the FIFO's 2 cycles to
    ``m_axis``; a beat of results per cycle. ``DONE_COUNT`` lags the FIFO write by a cycle.
    ``state`` reaches the FIFO through registers, a cycle late: ROLLBACK's drop happens in
    TRAIL's first cycle, the trailer is written from TRAIL's second (once it has room).
    Reset: ``rst`` clears every register; ``soft_reset`` empties the FIFO and clears
    ``done_flag``/``busy_out``; ``core_clr`` (and a cycle of ``core_rst``) clears the result
    register.
    """

    def __init__(self, lanes: int, fifo_depth: int):
        self.lanes, self.fifo_depth = lanes, fifo_depth
        self.fifo = CommitFIFO(fifo_depth, lanes)
        super().__init__(
            {
                **axis_out(lanes),
                "res_valid": In(lanes),
                "res_data": In(64 * lanes),
                "res_kind": In(2),
                "state": In(3),
                "err": In(len(ERR_BITS)),
                "core_clr": In(1),
                "core_rst": In(1),
                "soft_reset": In(1),
                "batch_start": In(1),
                "level": Out(Shape.cast(self.fifo.level.shape()).width),
                "resq_valid": Out(lanes),
                "resq_any": Out(1),
                "write_trailer": Out(1),
                "done_count": Out(32),
                "done_flag": Out(1),
                "busy_out": Out(1),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.fifo = ResetInserter(self.soft_reset)(self.fifo)
        N = self.lanes
        # The results go through one register on their way to the FIFO (the operator mux and
        # the FIFO's write side are apart from the cores that produce them).
        resq_valid = self.resq_valid
        resq_data = Signal(64 * N, name="resq_data", reset_less=True)
        resq_kind = Signal(2, name="resq_kind", reset_less=True)
        # The control's copy of "a result in the register" (DRAIN's condition), kept apart: read
        # by the control too, the result register's valid bits were placed between it and the
        # FIFO, 2.76 ns of routing from the FIFO's write pointer (10.96 ns, nextpnr seed 3).
        resq_any = Signal(name="resq_any_reg", attrs={"keep": 1})
        m.d.comb += self.resq_any.eq(resq_any)
        m.d.sync += [
            resq_any.eq(Mux(self.core_clr | self.core_rst, 0, self.res_valid.any())),
            resq_valid.eq(Mux(self.core_clr | self.core_rst, 0, self.res_valid)),
            resq_data.eq(self.res_data),
            resq_kind.eq(self.res_kind),
        ]
        # Records whose result was written, counted from the result register (not from the
        # operator's mux of the cores' valid bits: op -> mux -> the 32-bit counter's carry chain
        # was a routed critical path, 10.50 ns, 7.05 of it routing). DONE_COUNT lags the FIFO
        # write by a cycle; DRAIN waits for the result register to empty, so the trailer's
        # count is complete.
        n_res = sum(resq_valid[1:], Cat(resq_valid[0], Const(0, (N + 1).bit_length() - 1)))
        n_done = Mux(resq_kind == SEQ_DATA, 0, n_res)
        self._write(m, resq_data, resq_kind)
        with m.If(resq_valid.any()):
            m.d.sync += self.done_count.eq(self.done_count + n_done)
        with m.If(self.m_axis_tvalid & self.m_axis_tready & self.m_axis_tlast):
            m.d.sync += [self.done_flag.eq(1), self.busy_out.eq(0)]
        with m.If(self.batch_start):
            m.d.sync += [self.done_count.eq(0), self.done_flag.eq(0), self.busy_out.eq(1)]
        with m.If(self.soft_reset):
            m.d.sync += [self.done_flag.eq(0), self.busy_out.eq(0)]
        return m

    def _write(self, m: Module, resq_data: Signal, resq_kind: Signal) -> None:
        """The FIFO's write side (the results, or the trailer in TRAIL) and ``m_axis``."""
        N, fifo, err, state = self.lanes, self.fifo, self.err, self.state
        trailer = Cat(self.done_count, err, Const(0, 16 - len(err)), Const(TRAILER_MAGIC, 16))
        # The control's state is decoded into registers here, a cycle late, and only those
        # registers reach the FIFO's write side: `state == TRAIL` decoded in front of the write
        # mask was the engine's critical path (control's state to the FIFO's write pointer,
        # 10.92 ns at 91.6 MHz on ECP5, 4.47 ns of it the one net from the control to the
        # collector). `trail`: TRAIL for a cycle and the trailer not written yet (so the
        # trailer is written from TRAIL's second cycle and the control leaves TRAIL a cycle
        # later); `rollback`: ROLLBACK's cycle (or a core clear) a cycle late, in TRAIL's
        # first cycle, so always before the trailer's write.
        trail = Signal(name="trail")
        rollback = Signal(name="rollback")
        m.d.sync += [
            trail.eq((state == Control.TRAIL) & ~self.write_trailer & ~self.soft_reset),
            rollback.eq((state == Control.ROLLBACK) | self.core_clr),
        ]
        # Room for the trailer's row, from a cycle-old level: in TRAIL nothing else writes, so
        # the level can only have gone down since (registered for the same reason as the
        # credit).
        trailer_room = Signal(name="trailer_room")
        m.d.sync += trailer_room.eq(fifo.level <= self.fifo_depth - N)
        m.d.comb += [
            self.level.eq(fifo.level),
            self.write_trailer.eq(trail & trailer_room),
            fifo.w_valid.eq(Mux(trail, self.write_trailer, self.resq_valid)),
            fifo.w_kind.eq(Mux(trail, TRAILER, resq_kind)),
            fifo.w_data.eq(Mux(trail, trailer, resq_data)),
            fifo.rollback.eq(rollback),
            self.m_axis_tdata.eq(fifo.o.payload.data),
            self.m_axis_tlast.eq(fifo.o.payload.last),
            self.m_axis_tvalid.eq(fifo.o.valid),
            fifo.o.ready.eq(self.m_axis_tready),
        ]
        if N == 1:
            m.d.comb += self.m_axis_tkeep.eq(0xFF)
        else:
            m.d.comb += self.m_axis_tkeep.eq(Cat(*(fifo.o.payload.keep[j].replicate(8) for j in range(N))))
