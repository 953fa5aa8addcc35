"""The engine's output side: the operator's results, the trailer, the FIFO and ``m_axis``.

An elaboration helper of :class:`~offload.hw.engine.OffloadEngine` (it adds its logic and the
FIFO, as a submodule, to the engine's module, see :class:`Collector`).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, Value
from amaranth.lib.wiring import In, Out

from offload.engine_map import TRAILER_MAGIC

from .fifo import SEQ_DATA, SEQ_HEADER, TRAILER, CommitFIFO

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


class Collector:
    """The batch operator's results into the :class:`~offload.hw.fifo.CommitFIFO`, then the
    trailer; the FIFO drives ``m_axis``.

    Inputs: the lanes' cores (:meth:`~offload.hw.lanebank.LaneBank.results` and the varint
    encoder), the control's ``op``, ``state``, ``err``, ``core_clr`` and the lanes'
    ``core_rst`` (results from before a reset are dropped). Outputs: the :func:`axis_out` ports
    of the component passed to :meth:`elaborate` (``tkeep``: every byte of a result or the
    trailer, none of a pad word), :attr:`fifo` (its ``level`` is the parser's credit),
    :attr:`any_res` (a core has a result this cycle), :attr:`resq_valid` (results in the
    register in front of the FIFO), :attr:`write_trailer` (the trailer is written this cycle);
    it counts ``DONE_COUNT`` (the control's ``done_count``) and sets ``done_flag``/clears
    ``busy_out`` when the trailer leaves ``m_axis``.

    Latency: one register between the operator's mux and the FIFO, then the FIFO's 2 cycles to
    ``m_axis``. ``DONE_COUNT`` lags the FIFO write by a cycle. Reset: ``SOFT_RESET`` empties the
    FIFO; ``core_clr`` (and a cycle of ``core_rst``) clears the result register.
    """

    def __init__(self, lanes: int, fifo_depth: int):
        self.lanes, self.fifo_depth = lanes, fifo_depth
        self.fifo = CommitFIFO(fifo_depth, lanes)

    def elaborate(self, m: Module, bus, ctl, lanes, soft_reset: Value) -> None:
        m.submodules.fifo = ResetInserter(soft_reset)(self.fifo)
        N = self.lanes
        res_valid = [Signal(name="res_valid" if j == 0 else f"res_valid_l{j}") for j in range(N)]
        res_data = [Signal(64, name="res_data" if j == 0 else f"res_data_l{j}") for j in range(N)]
        res_kind = Signal(2, name="res_kind")
        self._select(m, ctl.op, lanes, res_valid, res_data, res_kind)
        self.any_res = Cat(*res_valid).any()
        # The results go through one register on their way to the FIFO (the operator mux and
        # the FIFO's write side are apart from the cores that produce them).
        resq_valid = self.resq_valid = Signal(N, name="resq_valid")
        resq_data = Signal(64 * N, name="resq_data", reset_less=True)
        resq_kind = Signal(2, name="resq_kind", reset_less=True)
        m.d.sync += [
            resq_valid.eq(Mux(ctl.core_clr | lanes.core_rst, 0, Cat(*res_valid))),
            resq_data.eq(Cat(*res_data)),
            resq_kind.eq(res_kind),
        ]
        # Records whose result was written, counted from the result register (not from the
        # operator's mux of the cores' valid bits: op -> mux -> the 32-bit counter's carry chain
        # was a routed critical path, 10.50 ns, 7.05 of it routing). DONE_COUNT lags the FIFO
        # write by a cycle; DRAIN waits for the result register to empty, so the trailer's
        # count is complete.
        n_res = sum(resq_valid[1:], Cat(resq_valid[0], Const(0, (N + 1).bit_length() - 1)))
        n_done = Mux(resq_kind == SEQ_DATA, 0, n_res)
        self._write(m, bus, ctl, resq_valid, resq_data, resq_kind)
        with m.If(resq_valid.any()):
            m.d.sync += ctl.done_count.eq(ctl.done_count + n_done)
        with m.If(bus.m_axis_tvalid & bus.m_axis_tready & bus.m_axis_tlast):
            m.d.sync += [ctl.done_flag.eq(1), ctl.busy_out.eq(0)]

    def _select(self, m: Module, op: Value, lanes, res_valid: list, res_data: list, res_kind: Signal) -> None:
        """The batch operator's results: its cores' outputs (``delta_varint_encode``: the
        encoder's words, kind ``SEQ_DATA`` or ``SEQ_HEADER``)."""
        dv = lanes.dv
        with m.Switch(op):
            for case, cores in lanes.results():
                with m.Case(*case):
                    for j in range(self.lanes):
                        m.d.comb += [res_valid[j].eq(cores[j].o.valid), res_data[j].eq(cores[j].o.payload)]
            with m.Case(*lanes.ctl.decode.users("varint")):
                m.d.comb += [
                    res_valid[0].eq(dv.o.valid),
                    res_data[0].eq(dv.o.payload.data),
                    res_kind.eq(Mux(dv.o.payload.header, SEQ_HEADER, SEQ_DATA)),
                ]

    def _write(self, m: Module, bus, ctl, resq_valid: Signal, resq_data: Signal, resq_kind: Signal) -> None:
        """The FIFO's write side (the results, or the trailer in TRAIL) and ``m_axis``."""
        N, fifo, err = self.lanes, self.fifo, ctl.err
        trailer = Cat(ctl.done_count, err, Const(0, 16 - len(err)), Const(TRAILER_MAGIC, 16))
        # Room for the trailer's row, from a cycle-old level: in TRAIL nothing else writes, so
        # the level can only have gone down since (registered for the same reason as the
        # credit).
        trailer_room = Signal(name="trailer_room")
        m.d.sync += trailer_room.eq(fifo.level <= self.fifo_depth - N)
        self.write_trailer = (ctl.state == ctl.TRAIL) & trailer_room
        m.d.comb += [
            fifo.w_valid.eq(Mux(ctl.state == ctl.TRAIL, self.write_trailer, resq_valid)),
            fifo.w_kind.eq(Mux(ctl.state == ctl.TRAIL, TRAILER, resq_kind)),
            fifo.w_data.eq(Mux(ctl.state == ctl.TRAIL, trailer, resq_data)),
            fifo.rollback.eq((ctl.state == ctl.ROLLBACK) | ctl.core_clr),
            bus.m_axis_tdata.eq(fifo.o.payload.data),
            bus.m_axis_tlast.eq(fifo.o.payload.last),
            bus.m_axis_tvalid.eq(fifo.o.valid),
            fifo.o.ready.eq(bus.m_axis_tready),
        ]
        if N == 1:
            m.d.comb += bus.m_axis_tkeep.eq(0xFF)
        else:
            m.d.comb += bus.m_axis_tkeep.eq(Cat(*(fifo.o.payload.keep[j].replicate(8) for j in range(N))))
