"""The engine's framing parser: which unit of input is taken, and what it holds.

An elaboration helper of :class:`~offload.hw.engine.OffloadEngine` (it adds its logic to the
engine's module, see :class:`Parser`).
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, Value

from offload.engine_map import FORMATS

from .common import mux_index
from .opdecode import op_in
from .slicer import InputSlice, Serialiser

__all__ = ["Parser"]

FIXED8, SEQ = FORMATS["FIXED8"], FORMATS["SEQ"]


class Parser:
    """The accept decision and the record framing of the parser's unit.

    The unit is a fixed beat (``FIXED8``/``FIXED4``: up to ``lanes`` records, one per lane) or
    one word of a framed record (``VAR``/``SEQ``: a header, then the record's words). A unit is
    taken when the batch runs, the FIFO has credit and (for ``delta_varint_encode``) the
    encoder's input has room.

    Inputs: the :class:`InputSlice` and :class:`Serialiser` outputs; from the control, its
    ``state`` and :class:`~offload.hw.control.Control` values (``op``, ``fmt``, ``framed``,
    ``fixed``, ``rem_gt``: records left > j); the FIFO's ``level``; the varint path's ``room``.
    Outputs (signals created here, values set in :meth:`elaborate`): :attr:`tready` (the slice
    hands over its beat), :attr:`beat_acc` (a bus beat is accepted), :attr:`uacc` (the parser
    takes its unit), :attr:`hdr` / :attr:`bad_hdr` / :attr:`empty_rec` (the word is a header,
    a bad one, one of a 0-byte record), :attr:`send` (the unit goes into a core),
    :attr:`core_valid`, :attr:`needs_dv` (it goes into the varint encoder), :attr:`last_word`,
    :attr:`beat_first`, :attr:`beat_len` (the cores' framing of the word), :attr:`lane_on`
    (lane j takes word j), :attr:`n_in` (records completed by the unit), :attr:`fin` (the batch
    ends with it), :attr:`extra` (its beat carries words after the batch's end), and the record
    registers (:attr:`in_rec`, cleared by the control FSM at a batch's start and end).

    Latency: combinational from the slice's registers, except ``credit`` (the FIFO level a cycle
    ago, compared with the limit: safe with ``CREDIT_LAG`` words of margin, as a cycle adds at
    most that many). Reset (``rst``): not in a record.
    """

    def __init__(self, lanes: int, credit_limit: int):
        self.lanes, self.credit_limit = lanes, credit_limit
        self.in_rec = Signal(name="in_rec")
        self.first_word = Signal(name="first_word")
        self.remaining = Signal(32, name="remaining")
        self.rec_len = Signal(32, name="rec_len")
        # Registered: the record's next word is its last (remaining == 1), kept with remaining.
        self.rem_last = Signal(name="rem_last")
        self.tready = Signal(name="tready")
        self.beat_acc = Signal(name="beat_acc")  # a bus beat is accepted
        self.uacc = Signal(name="uacc")  # the parser takes a word / fixed beat

    def elaborate(
        self, m: Module, sl: InputSlice, ser: Serialiser, ctl, fifo_level: Value, dv_room: Value
    ) -> None:
        """Add the accept decision to ``m`` and set the parser's output values."""
        # Registered: the FIFO level is a subtraction of its pointers, and the credit gates the
        # whole input decision (tready, the cores' valid, the record counters).
        credit = Signal(name="credit")
        m.d.sync += credit.eq(fifo_level < self.credit_limit)
        is_delta = op_in(ctl.op, ctl.decode.users("varint"))
        framed, fmt = ctl.framed, ctl.fmt
        self.hdr = hdr = framed & ~self.in_rec
        self.hdr_len = ser.w[:32]
        self.bad_hdr = hdr & (ser.w_hi | ((fmt == SEQ) & ser.w_long))
        # A header of length 0 (an all-zero word: never bad, as seq_max >= 1).
        self.empty_rec = empty_rec = hdr & ser.w_zero
        self.send = send = ~hdr | empty_rec  # this word goes into a core
        self.needs_dv = needs_dv = is_delta & send
        unit_ready = Signal(name="unit_ready")
        m.d.comb += [
            unit_ready.eq(credit & (dv_room | ~needs_dv)),
            self.tready.eq(Mux(ctl.state == ctl.IDLE, 1, (ctl.state == ctl.RUN) & unit_ready & ~ser.hold)),
            sl.take.eq(self.tready),
            self.beat_acc.eq(sl.valid & self.tready),
            self.uacc.eq((ctl.state == ctl.RUN) & ser.wvalid & unit_ready),
        ]
        self._framing(sl, ctl)

    def _framing(self, sl: InputSlice, ctl) -> None:
        """The unit's framing, its lanes and what it completes."""
        N, framed, hdr, fmt = self.lanes, ctl.framed, self.hdr, ctl.fmt
        self.last_word = last_word = Mux(hdr, self.empty_rec, self.rem_last)
        self.complete = complete = self.uacc & self.send & (~framed | last_word)
        self.beat_first = Mux(framed, Mux(hdr, 1, self.first_word), 1)
        self.beat_len = Mux(framed, Mux(hdr, 0, self.rec_len), Mux(fmt == FIXED8, 8, 4))
        self.core_valid = self.uacc & self.send
        # Fixed formats: lane j takes word j when the beat carries it and a record is left
        # for it.
        rem_gt, nw = ctl.rem_gt, sl.nw
        self.lane_on = [Const(1)] + [ctl.fixed & (nw > j) & rem_gt[j] for j in range(1, N)]
        n_fixed = sum(self.lane_on[1:], Const(1, range(N + 1)))
        self.n_in = Mux(framed, complete, n_fixed)  # records completed by this unit
        # The batch ends with this unit (fin): the last record's word (framed) or the beat
        # holding the last record (fixed; extra: the beat carries words after it).
        rem_one = rem_gt[0] & ~rem_gt[1]
        rem_le_nw = ~mux_index(nw, [rem_gt[v] for v in range(N + 1)])
        self.fin = Mux(framed, complete & rem_one, rem_le_nw)
        # nw > rem, i.e. not rem > nw - 1 (nw >= 1)
        beyond = [Const(0)] + [~rem_gt[v - 1] for v in range(1, N + 1)]
        self.extra = ctl.fixed & mux_index(nw, beyond) if N > 1 else Const(0)

    def elaborate_records(self, m: Module, ser: Serialiser, ctl) -> None:
        """Add the record registers to ``m``. Between records they follow the parser's word,
        accepted or not, in any state: they are read only inside a record (in_rec), which starts
        with the cycle that accepts the header, so they then hold that header's values; their
        enable is one register (in_rec), not the accept decision (uacc) or the state."""
        fmt, hdr_len = ctl.fmt, self.hdr_len
        with m.If(~self.in_rec):
            m.d.sync += [
                self.first_word.eq(1),
                self.rec_len.eq(hdr_len),
                self.remaining.eq(Mux(fmt == SEQ, hdr_len, (hdr_len + 7) >> 3)),
                self.rem_last.eq(Mux(fmt == SEQ, ser.w_one, ser.w_le8)),
            ]
        # Inside a record (framed, so no header word) an accepted word is one of its words. Not
        # under SOFT_RESET or the control's state: uacc already implies RUN, and a reset clears
        # in_rec, after which these registers reload. (The reset's and the state's decode in
        # their enables was a routed critical path: 11.03 ns, 9.07 of it routing.)
        with m.Elif(self.uacc):
            m.d.sync += [
                self.first_word.eq(0),
                self.remaining.eq(self.remaining - 1),
                self.rem_last.eq(self.remaining == 2),
            ]

    def track_record(self, m: Module, framed: Value) -> None:
        """In the current context (RUN, a unit taken): enter a record at a good header of a
        non-empty one, leave it at its last word."""
        with m.If(self.hdr & ~self.bad_hdr & ~self.empty_rec):
            m.d.sync += self.in_rec.eq(1)
        with m.If(framed & ~self.hdr):
            with m.If(self.rem_last):
                m.d.sync += self.in_rec.eq(0)
