"""The engine's output FIFO: a block-RAM FIFO whose reader only sees *committed* words.

Why commit: ``delta_varint_encode`` must send a sequence's byte-count header *before* its data
words, but the count is known only after the last value. The writer reserves the header slot
when the sequence's first data word arrives, appends the data words behind it, and fills the
slot (and commits everything up to the write pointer) when the header comes; the reader never
passes the commit pointer, so it never reads an unfilled slot. ``rollback`` drops uncommitted
words (a sequence cut off by an early ``tlast``).

Write kinds (``w_kind``): 0 ``RESULT`` append+commit; 1 ``SEQ_DATA`` append (reserving the
header slot first if no sequence is open); 2 ``SEQ_HEADER`` fill the reserved slot (or append if
none) and commit; 3 ``TRAILER`` append+commit with ``last`` set. One write per cycle.

Ports: ``w_valid``, ``w_kind`` In(2), ``w_data`` In(64), ``rollback`` In(1), ``level`` Out
(words held incl. uncommitted and reserved: the writer must keep ``level < depth``),
``o`` Out(stream of {data, last}, valid/ready). Read latency 2 cycles from commit to ``o.valid``;
one word per cycle sustained (a 2-entry output queue hides the synchronous RAM read).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .common import check_pow2

__all__ = ["CommitFIFO", "FifoWord", "RESULT", "SEQ_DATA", "SEQ_HEADER", "TRAILER"]

RESULT, SEQ_DATA, SEQ_HEADER, TRAILER = 0, 1, 2, 3
FifoWord = data.StructLayout({"data": 64, "last": 1})


class CommitFIFO(wiring.Component):
    def __init__(self, depth: int = 2048):
        self._MustUse__silence = True      # no UnusedElaboratable warning if rejected
        self.depth = check_pow2("fifo_depth", depth, 16, 65536)
        self._MustUse__silence = False
        self.abits = depth.bit_length() - 1
        super().__init__({
            "w_valid": In(1),
            "w_kind": In(2),
            "w_data": In(64),
            "rollback": In(1),
            "level": Out(self.abits + 1),
            "o": Out(stream.Signature(FifoWord)),
        })

    def elaborate(self, platform):
        m = Module()
        pw = self.abits + 1
        m.submodules.mem = mem = Memory(shape=65, depth=self.depth, init=[])
        wr = mem.write_port()
        rd = mem.read_port(domain="sync")
        wp, cp, rp, hslot = (Signal(pw, name=n) for n in ("wp", "cp", "rp", "hslot"))
        open_ = Signal()
        m.d.comb += self.level.eq((wp - rp)[:pw])

        kind = self.w_kind
        m.d.comb += wr.data.eq(Cat(self.w_data, kind == TRAILER))
        with m.If(self.rollback):
            m.d.sync += [wp.eq(cp), open_.eq(0)]
        with m.Elif(self.w_valid):
            m.d.comb += wr.en.eq(1)
            with m.Switch(kind):
                with m.Case(RESULT, TRAILER):
                    m.d.comb += wr.addr.eq(wp)
                    m.d.sync += [wp.eq(wp + 1), cp.eq(wp + 1)]
                with m.Case(SEQ_DATA):
                    with m.If(open_):
                        m.d.comb += wr.addr.eq(wp)
                        m.d.sync += wp.eq(wp + 1)
                    with m.Else():
                        m.d.comb += wr.addr.eq(wp + 1)
                        m.d.sync += [hslot.eq(wp), wp.eq(wp + 2), open_.eq(1)]
                with m.Case(SEQ_HEADER):
                    with m.If(open_):
                        m.d.comb += wr.addr.eq(hslot)
                        m.d.sync += [cp.eq(wp), open_.eq(0)]
                    with m.Else():
                        m.d.comb += wr.addr.eq(wp)
                        m.d.sync += [wp.eq(wp + 1), cp.eq(wp + 1)]

        # Read side: issue a RAM read when a committed word exists and the 2-entry queue will
        # have room for it; the data lands one cycle later.
        q = [Signal(65, name=f"q{k}") for k in range(2)]
        cnt = Signal(2)
        inflight = Signal()
        pop = Signal()
        m.d.comb += [
            self.o.valid.eq(cnt != 0),
            self.o.payload.eq(q[0]),
            pop.eq(self.o.valid & self.o.ready),
        ]
        issue = (rp != cp) & ((cnt + inflight) < (pop + 2))
        m.d.comb += [rd.addr.eq(rp), rd.en.eq(1)]
        with m.If(issue):
            m.d.sync += rp.eq(rp + 1)
        m.d.sync += inflight.eq(issue)
        push = inflight
        with m.If(push & pop):
            with m.If(cnt == 1):
                m.d.sync += q[0].eq(rd.data)
            with m.Else():
                m.d.sync += [q[0].eq(q[1]), q[1].eq(rd.data)]
        with m.Elif(pop):
            m.d.sync += [q[0].eq(q[1]), cnt.eq(cnt - 1)]
        with m.Elif(push):
            with m.If(cnt == 0):
                m.d.sync += q[0].eq(rd.data)
            with m.Else():
                m.d.sync += q[1].eq(rd.data)
            m.d.sync += cnt.eq(cnt + 1)
        return m
