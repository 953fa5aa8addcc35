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

``lanes`` (1, 2 or 4): the read side delivers *rows* of ``lanes`` consecutive words (one output
beat of a ``64*lanes``-bit bus), and a ``RESULT`` write may append up to ``lanes`` words at once
(``w_valid`` is then a mask of ``w_data``'s words, which must be a prefix: lanes ``0..k-1``).
The other kinds write word 0 only. Words are stored in ``lanes`` banks (word position ``p`` in
bank ``p % lanes``, row ``p // lanes``) so a write of ``k`` words is one write per bank. A row is
read only when all its words are committed; a ``TRAILER`` write also fills the rest of its row
with *pad* words (zero data, ``keep`` clear) and moves the pointers to the next row, so the
trailer ends its output beat and the next batch starts on a new row.

Ports: ``w_valid`` In(lanes), ``w_kind`` In(2), ``w_data`` In(64*lanes), ``rollback`` In(1),
``level`` Out (words held incl. uncommitted, reserved and pad words: a ``RESULT`` writer must
keep ``level + k <= depth``, a ``TRAILER`` writer ``level + lanes <= depth``), ``o`` Out(stream
of :data:`FifoWord` ``{data, last}`` for ``lanes == 1``, of :func:`fifo_row` ``{data, keep,
last}`` otherwise; valid/ready). Read latency 2 cycles from commit to ``o.valid``; one row per
cycle sustained (a 2-entry output queue hides the synchronous RAM read).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .common import check_choice, check_pow2

__all__ = ["CommitFIFO", "FifoWord", "fifo_row", "RESULT", "SEQ_DATA", "SEQ_HEADER", "TRAILER"]

RESULT, SEQ_DATA, SEQ_HEADER, TRAILER = 0, 1, 2, 3
FifoWord = data.StructLayout({"data": 64, "last": 1})


def fifo_row(lanes: int) -> data.StructLayout:
    """Output row of a ``lanes``-wide FIFO: ``keep`` bit ``j`` is set when word ``j`` is a result
    or the trailer (clear for pad words, whose data is zero); ``last`` when the row holds the
    trailer."""
    return data.StructLayout({"data": 64 * lanes, "keep": lanes, "last": 1})


class CommitFIFO(wiring.Component):
    def __init__(self, depth: int = 2048, lanes: int = 1):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        self.depth = check_pow2("fifo_depth", depth, 16, 65536)
        self.lanes = check_choice("lanes", lanes, (1, 2, 4))
        self._MustUse__silence = False
        self.abits = depth.bit_length() - 1
        self.lbits = lanes.bit_length() - 1
        super().__init__(
            {
                "w_valid": In(lanes),
                "w_kind": In(2),
                "w_data": In(64 * lanes),
                "rollback": In(1),
                "level": Out(self.abits + 1),
                "o": Out(stream.Signature(FifoWord if lanes == 1 else fifo_row(lanes))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        N, lg = self.lanes, self.lbits
        pw = self.abits + 1
        rbits = self.abits - lg  # row address bits of a bank
        wbits = 65 if N == 1 else 66  # {data, last} (+ keep for lanes > 1)
        banks = []
        for b in range(N):
            mem = Memory(shape=wbits, depth=self.depth >> lg, init=[])
            m.submodules["mem" if N == 1 else f"mem{b}"] = mem
            banks.append((mem.write_port(), mem.read_port(domain="sync")))
        wp, cp, hslot = (Signal(pw, name=n) for n in ("wp", "cp", "hslot"))
        rp = Signal(pw - lg, name="rp")  # row pointer
        open_ = Signal()
        m.d.comb += self.level.eq((wp - Cat(Const(0, lg), rp))[:pw])

        kind = self.w_kind
        is_tr = kind == TRAILER
        # Position of word 0 of this write.
        pos0 = Signal(pw)
        with m.Switch(kind):
            with m.Case(SEQ_DATA):
                m.d.comb += pos0.eq(Mux(open_, wp, wp + 1))
            with m.Case(SEQ_HEADER):
                m.d.comb += pos0.eq(Mux(open_, hslot, wp))
            with m.Default():
                m.d.comb += pos0.eq(wp)
        write = self.w_valid.any() & ~self.rollback
        if N == 1:
            wr, _ = banks[0]
            m.d.comb += [wr.addr.eq(pos0[:rbits]), wr.data.eq(Cat(self.w_data, is_tr)), wr.en.eq(write)]
        else:
            off = pos0[:lg]
            prow = pos0[lg:]
            for b, (wr, _) in enumerate(banks):
                i_b = (b - off)[:lg]  # which word of this write lands in bank b
                pad = is_tr & (b > off)  # the rest of the trailer's row
                m.d.comb += [
                    wr.addr.eq((prow + (b < off))[:rbits]),
                    wr.data.eq(Cat(Mux(pad, 0, self.w_data.word_select(i_b, 64)), is_tr & (i_b == 0), ~pad)),
                    wr.en.eq(write & (self.w_valid.bit_select(i_b, 1) | pad)),
                ]
        count = sum((self.w_valid[j] for j in range(N)), Const(0, lg + 1))
        next_row = Cat(Const(0, lg), wp[lg:] + 1)[:pw]
        with m.If(self.rollback):
            m.d.sync += [wp.eq(cp), open_.eq(0)]
        with m.Elif(write):
            with m.Switch(kind):
                with m.Case(RESULT):
                    m.d.sync += [wp.eq(wp + count), cp.eq(wp + count)]
                with m.Case(TRAILER):
                    m.d.sync += [wp.eq(next_row), cp.eq(next_row)]
                with m.Case(SEQ_DATA):
                    with m.If(open_):
                        m.d.sync += wp.eq(wp + 1)
                    with m.Else():
                        m.d.sync += [hslot.eq(wp), wp.eq(wp + 2), open_.eq(1)]
                with m.Case(SEQ_HEADER):
                    with m.If(open_):
                        m.d.sync += [cp.eq(wp), open_.eq(0)]
                    with m.Else():
                        m.d.sync += [wp.eq(wp + 1), cp.eq(wp + 1)]

        # Read side: issue a RAM read when a committed row exists and the 2-entry queue will
        # have room for it; the data lands one cycle later. The queue is a ring of two entries:
        # the RAM's data goes straight into the entry `wsel` names (a flip-flop's enable, no
        # mux: the block RAM's clock-to-output, 5.8 ns on ECP5, leaves no room for logic behind
        # it; RAM data -> the shifting queue's muxes was the engine's critical path, 10.25 ns at
        # 97.6 MHz), the payload is the entry `rsel` names.
        qw = wbits * N
        q = [Signal(qw, name=f"q{k}") for k in range(2)]
        cnt = Signal(2)
        wsel, rsel = Signal(name="wsel"), Signal(name="rsel")
        inflight = Signal()
        pop = Signal()
        rdata = Cat(*(rd.data for _, rd in banks))
        head = Mux(rsel, q[1], q[0])
        if N == 1:
            payload = head
        else:
            words = [head.word_select(b, wbits) for b in range(N)]
            payload = Cat(
                Cat(*(w[:64] for w in words)),
                Cat(*(w[65] for w in words)),
                Cat(*(w[64] for w in words)).any(),
            )
        m.d.comb += [
            self.o.valid.eq(cnt != 0),
            self.o.payload.eq(payload),
            pop.eq(self.o.valid & self.o.ready),
        ]
        issue = (rp != cp[lg:]) & ((cnt + inflight) < (pop + 2))
        for _, rd in banks:
            m.d.comb += [rd.addr.eq(rp[:rbits]), rd.en.eq(1)]
        with m.If(issue):
            m.d.sync += rp.eq(rp + 1)
        m.d.sync += inflight.eq(issue)
        push = inflight
        with m.If(push):
            m.d.sync += wsel.eq(~wsel)
            with m.If(wsel):
                m.d.sync += q[1].eq(rdata)
            with m.Else():
                m.d.sync += q[0].eq(rdata)
        with m.If(pop):
            m.d.sync += rsel.eq(~rsel)
        with m.If(push & ~pop):
            m.d.sync += cnt.eq(cnt + 1)
        with m.Elif(pop & ~push):
            m.d.sync += cnt.eq(cnt - 1)
        return m
