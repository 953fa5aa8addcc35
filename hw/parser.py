"""The engine's framing parser: which unit of input is taken, and what it holds
(:class:`Parser`, a submodule of :class:`~offload.hw.engine.OffloadEngine`)."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from offload.engine_map import FORMATS

from .common import mux_index
from .control import Control
from .slicer import XW

__all__ = ["Parser"]

FIXED8, VAR, SEQ = FORMATS["FIXED8"], FORMATS["VAR"], FORMATS["SEQ"]
IDLE, RUN = Control.IDLE, Control.RUN


class Parser(wiring.Component):
    """The accept decision and the record framing of the parser's unit.

    The unit is a fixed beat (``FIXED8``/``FIXED4``: up to ``lanes`` records, one per lane) or
    one word of a framed record (``VAR``/``SEQ``: a header, then the record's words). A unit is
    taken when the batch runs, the FIFO has credit and (in a ``delta_varint_encode`` batch) the
    encoder's input has room, whether or not the unit goes into it.

    Ports: In, from the control, ``state`` and ``slice_state`` (equal: the copies of the state
    for ``take`` and ``take_flags``), ``fmt`` and ``fmt_rec`` (the batch's format: the
    framing's copy and the record registers' copy, equal), ``is_delta`` (the batch's operator is the
    varint encoder's), ``is_limited`` (its ``VAR`` records must fit ``RECORD_MAX``: a longer
    header is bad), ``rem_gt`` (bit j: records left > j) and ``rec_clear`` (a batch starts
    or ends, or ``SOFT_RESET``: not in a record); from the slice, ``valid`` and ``nw`` (words of
    its beat); from the :class:`~offload.hw.slicer.Serialiser`, ``hold``, ``xw`` (the word and
    its checks) and ``wvalid``; the FIFO's ``fifo_level``; the varint input's ``dv_room``. Out
    ``take`` (the slice hands over its beat: ``s_axis``'s tready behind the slice) and
    ``take_flags`` (the same, for the slice's valid flags, from registers of its own),
    ``beat_acc`` (a bus beat is accepted), ``uacc`` (the parser takes its unit), ``hdr`` /
    ``bad_hdr`` / ``empty_rec`` (the word is a header, a bad one, one of a 0-byte record),
    ``core_valid`` (the unit goes into a core), ``needs_dv`` (it goes into the varint encoder),
    ``dv_first`` (the varint encoder's ``beat_first``: a varint batch is ``SEQ``),
    ``last_word``, ``beat_first``, ``beat_len`` (the cores' framing of the word), ``lane_on``
    (bit j: lane j takes word j), ``ends`` (the unit, if taken, completes records), ``n_rec``
    (how many: 1 framed, the beat's lanes fixed; from registers only, so the record counters'
    candidates are ready before the accept decision), ``fin`` (the batch ends with it),
    ``extra`` (its beat carries words after the batch's end).

    Latency: combinational from its inputs, except ``credit`` and its copy for ``take_flags``
    (the FIFO level a cycle ago, compared with ``credit_limit``: safe with ``CREDIT_LAG`` words
    of margin, as a cycle adds at most that many); throughput a unit per cycle. Reset (``rst``
    or ``rec_clear``): not in a record; the record registers reload from the next header.
    """

    def __init__(self, lanes: int, credit_limit: int, *, fifo_level_width: int, nw_width: int):
        N = self.lanes = lanes
        self.credit_limit = credit_limit
        super().__init__(
            {
                "state": In(3),
                "slice_state": In(3),
                "fmt": In(Shape.cast(range(max(FORMATS.values()) + 1)).width),
                "fmt_rec": In(Shape.cast(range(max(FORMATS.values()) + 1)).width),
                "is_delta": In(1),
                "is_limited": In(1),
                "rem_gt": In(N + 1),
                "rec_clear": In(1),
                "valid": In(1),
                "nw": In(nw_width),
                "hold": In(1),
                "xw": In(XW),
                "wvalid": In(1),
                "fifo_level": In(fifo_level_width),
                "dv_room": In(1),
                "take": Out(1),
                "take_flags": Out(1),
                "beat_acc": Out(1),
                "uacc": Out(1),
                "hdr": Out(1),
                "bad_hdr": Out(1),
                "empty_rec": Out(1),
                "core_valid": Out(1),
                "needs_dv": Out(1),
                "dv_first": Out(1),
                "last_word": Out(1),
                "beat_first": Out(1),
                "beat_len": Out(32),
                "lane_on": Out(N),
                "ends": Out(1),
                "n_rec": Out(range(N + 1)),
                "fin": Out(1),
                "extra": Out(1),
            }
        )
        # The record registers.
        self._in_rec = Signal(name="in_rec")
        self._first_word = Signal(name="first_word")
        self._remaining = Signal(32, name="remaining")
        self._rec_len = Signal(32, name="rec_len")
        # Registered: the record's next word is its last (remaining == 1), kept with remaining.
        self._rem_last = Signal(name="rem_last")

    def elaborate(self, platform) -> Module:
        m = Module()
        w = self.xw[:64]
        w_zero, w_hi, w_long = (self.xw[64 + k] for k in range(3))
        w_rec_long = self.xw[64 + 5]
        in_rec = self._in_rec
        # Registered: the FIFO level is a subtraction of its pointers, and the credit gates the
        # whole input decision (tready, the cores' valid, the record counters).
        credit = Signal(name="credit")
        # ``take_flags`` is ``take`` from copies of the registers it reads (the state, the
        # credit), kept apart in synthesis: one LUT computed both, and as the enable of the
        # slice's held beat it was placed among those bits, far from the slice's valid flags
        # (11.92 and 11.28 ns, about 10 of them routing, nextpnr seeds 1 and 2 of round 13).
        credit_f = Signal(name="credit_flags", attrs={"keep": 1})
        below = self.fifo_level < self.credit_limit
        m.d.sync += [credit.eq(below), credit_f.eq(below)]
        framed = self.fmt[1]
        hdr = framed & ~in_rec
        hdr_len = w[:32]
        empty_rec = hdr & w_zero  # a header of length 0 (an all-zero word: never bad)
        send = ~hdr | empty_rec  # this word goes into a core
        # The varint encoder's operators take SEQ only (a batch of another format never runs,
        # BAD_PARAM), so for them a word is sent when in a record or a 0-length header: the same
        # as ``send`` without the format, which kept the format register on the path from the
        # accept decision to the input slice's enables (11.26 ns, nextpnr seed 2).
        needs_dv = self.is_delta & (in_rec | w_zero)
        # A varint batch waits for the encoder's room at every unit, header or not: the accept
        # decision then reads registers only. Waiting on needs_dv carried the word's checks
        # (w_zero) into it and on to the input slice's valid (10.70 ns) and the varint skid's
        # enable (10.52 ns, 9.05 of it routing, nextpnr seeds 2 and 3). A header waits only
        # while the encoder is behind, which then sets the pace anyway.
        unit_ready = Signal(name="unit_ready")
        dv_ok = self.dv_room | ~self.is_delta

        def take(state: Value, credit: Value) -> Value:
            return Mux(state == IDLE, 1, (state == RUN) & credit & dv_ok & ~self.hold)

        m.d.comb += [
            unit_ready.eq(credit & dv_ok),
            self.take.eq(take(self.state, credit)),
            self.take_flags.eq(take(self.slice_state, credit_f)),
            self.beat_acc.eq(self.valid & self.take),
            self.uacc.eq((self.state == RUN) & self.wvalid & unit_ready),
            self.hdr.eq(hdr),
            self.bad_hdr.eq(
                hdr
                & (w_hi | ((self.fmt == SEQ) & w_long) | ((self.fmt == VAR) & self.is_limited & w_rec_long))
            ),
            self.empty_rec.eq(empty_rec),
            self.needs_dv.eq(needs_dv),
            # beat_first without the format, a LUT of its own: shared with the cores, it placed
            # away from both the record registers and the varint input (10.67 ns, 9.67 of it
            # routing, nextpnr seed 3).
            self.dv_first.eq(~in_rec | self._first_word),
            self.core_valid.eq(self.uacc & send),
        ]
        self._framing(m, framed, hdr, send)
        self._records(m, framed, hdr_len)
        return m

    def _framing(self, m: Module, framed: Value, hdr: Value, send: Value) -> None:
        """The unit's framing, its lanes and what it completes."""
        N, fmt, rem_gt, nw = self.lanes, self.fmt, self.rem_gt, self.nw
        first_word, rec_len, rem_last = self._first_word, self._rec_len, self._rem_last
        last_word = Mux(hdr, self.empty_rec, rem_last)
        ends = send & (~framed | last_word)
        complete = self.uacc & ends
        # Fixed formats: lane j takes word j when the beat carries it and a record is left
        # for it.
        lane_on = [Const(1)] + [~framed & (nw > j) & rem_gt[j] for j in range(1, N)]
        n_fixed = sum(lane_on[1:], Const(1, range(N + 1)))
        # The batch ends with this unit (fin): the last record's word (framed) or the beat
        # holding the last record (fixed; extra: the beat carries words after it).
        rem_one = rem_gt[0] & ~rem_gt[1]
        rem_le_nw = ~mux_index(nw, [rem_gt[v] for v in range(N + 1)])
        # nw > rem, i.e. not rem > nw - 1 (nw >= 1)
        beyond = [Const(0)] + [~rem_gt[v - 1] for v in range(1, N + 1)]
        m.d.comb += [
            self.last_word.eq(last_word),
            self.beat_first.eq(Mux(framed, Mux(hdr, 1, first_word), 1)),
            self.beat_len.eq(Mux(framed, Mux(hdr, 0, rec_len), Mux(fmt == FIXED8, 8, 4))),
            self.lane_on.eq(Cat(*lane_on)),
            # Records the unit completes: ``n_rec`` if ``uacc & ends``. The count reads
            # registers only; one signal (uacc & ends) enables the counters. A count that
            # included uacc let Yosys fold "0 records: keep" into the counters' enable, which then
            # carried the whole accept decision (10.42 ns, nextpnr seed 3).
            self.ends.eq(ends),
            self.n_rec.eq(Mux(framed, 1, n_fixed)),
            self.fin.eq(Mux(framed, complete & rem_one, rem_le_nw)),
            self.extra.eq(~framed & mux_index(nw, beyond) if N > 1 else 0),
        ]

    def _records(self, m: Module, framed: Value, hdr_len: Value) -> None:
        """The record registers. Between records they follow the parser's word, accepted or
        not, in any state: they are read only inside a record (in_rec), which starts with the
        cycle that accepts the header, so they then hold that header's values; their enable is
        one register (in_rec), not the accept decision (uacc) or the state."""
        fmt, in_rec, remaining, rem_last = self.fmt_rec, self._in_rec, self._remaining, self._rem_last
        w_one, w_le8 = self.xw[64 + 3], self.xw[64 + 4]
        with m.If(~in_rec):
            m.d.sync += [
                self._first_word.eq(1),
                self._rec_len.eq(hdr_len),
                remaining.eq(Mux(fmt == SEQ, hdr_len, (hdr_len + 7) >> 3)),
                rem_last.eq(Mux(fmt == SEQ, w_one, w_le8)),
            ]
        # Inside a record (framed, so no header word) an accepted word is one of its words. Not
        # under SOFT_RESET or the control's state: uacc already implies RUN, and a reset clears
        # in_rec, after which these registers reload. (The reset's and the state's decode in
        # their enables was a routed critical path: 11.03 ns, 9.07 of it routing.)
        with m.Elif(self.uacc):
            m.d.sync += [self._first_word.eq(0), remaining.eq(remaining - 1), rem_last.eq(remaining == 2)]
        # in_rec: entered at a good header of a non-empty record, left at its last word.
        with m.If(self.rec_clear):
            m.d.sync += in_rec.eq(0)
        with m.Elif(self.uacc):
            with m.If(self.hdr & ~self.bad_hdr & ~self.empty_rec):
                m.d.sync += in_rec.eq(1)
            with m.If(framed & ~self.hdr):
                with m.If(rem_last):
                    m.d.sync += in_rec.eq(0)
