"""The engine's framing parser: which unit of input is taken, and what it holds
(:class:`Parser`, a submodule of :class:`~offload.hw.engine.OffloadEngine`)."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from offload.engine_map import FORMATS

from .common import keep_copies, mux_index
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

    The decision is made three times, from copies of the state and the credit kept apart in
    synthesis, one per consumer group so each can be placed by its loads: the data path's
    (``take``, ``uacc``: the slice's held beat, the cores' input), the slice flags'
    (``take_flags``) and the records' (``rec_uacc``, ``beat_acc``: the record registers and the
    control). Likewise the cores' framing reads copies of ``in_rec`` and ``rem_last`` of its own.

    Ports: In, from the control, ``state``, ``slice_state`` and ``rec_state`` (equal: the
    state's copies for the three decisions), ``fmt`` and ``fmt_rec`` (the batch's format: the
    framing's copy and the record registers' copy, equal), ``is_delta`` (the batch's operator is the
    varint encoder's), ``is_limited`` (its ``VAR`` records must fit ``RECORD_MAX``: a longer
    header is bad), ``rem_gt`` (bit j: records left > j) and ``rec_clear`` (a batch starts
    or ends, or ``SOFT_RESET``: not in a record); from the slice, ``valid`` and ``nw`` (words of
    its beat); from the :class:`~offload.hw.slicer.Serialiser`, ``hold``, ``xw`` (the word and
    its checks) and ``wvalid``; the FIFO's ``fifo_level``; the varint input's ``dv_room``. Out
    ``take`` (the slice hands over its beat: ``s_axis``'s tready behind the slice) and
    ``take_flags`` (the same, for the slice's valid flags, from registers of its own),
    ``beat_acc`` (a bus beat is accepted), ``uacc`` and ``rec_uacc`` (the parser takes its unit,
    the cores' and the records' copy), ``hdr`` / ``bad_hdr`` / ``empty_rec`` (the word is a
    header, a bad one, one of a 0-byte record),
    ``core_valid`` (the unit goes into a core), ``needs_dv`` (it goes into the varint encoder),
    ``dv_first`` (the varint encoder's ``beat_first``: a varint batch is ``SEQ``),
    ``last_word``, ``beat_first``, ``beat_len`` (the cores' framing of the word), ``lane_on``
    (bit j: lane j takes word j), ``ends`` (the unit, if taken, completes records), ``n_rec``
    (how many: 1 framed, the beat's lanes fixed; from registers only, so the record counters'
    candidates are ready before the accept decision), ``fin`` (the batch ends with it),
    ``extra`` (its beat carries words after the batch's end).

    Latency: combinational from its inputs, except ``credit`` and its copies (the FIFO level a
    cycle ago, compared with ``credit_limit``: safe with ``CREDIT_LAG`` words
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
                "rec_state": In(3),
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
                "rec_uacc": Out(1),
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
        # The cores' copies of in_rec and rem_last, kept apart in synthesis: the cores' framing
        # (``last_word``, ``core_valid``) and the batch's end (``fin``, ``ends``) then share no
        # LUT. Shared, ``last_word``'s LUT sat by the cores, 46 rows from the registers and 59
        # from the batch FSM (12.37 ns, 10.41 of it routing, nextpnr seed 1 of round 15).
        self._in_rec_cores = Signal(name="in_rec_cores", attrs={"keep": 1})
        self._rem_last_cores = Signal(name="rem_last_cores", attrs={"keep": 1})

    def elaborate(self, platform) -> Module:
        m = Module()
        w = self.xw[:64]
        w_zero, w_hi, w_long = (self.xw[64 + k] for k in range(3))
        w_rec_long = self.xw[64 + 5]
        # Registered: the FIFO level is a subtraction of its pointers, and the credit gates the
        # whole input decision (tready, the cores' valid, the record counters). One copy per
        # accept decision (the data path's, the slice flags', the records'), kept apart like
        # the state's copies (see :class:`~offload.hw.control.Control`): one LUT computed the
        # data path's and the flags' decision, and as the enable of the slice's held beat it
        # was placed among those bits, far from the slice's valid flags (11.92 and 11.28 ns,
        # about 10 of them routing, nextpnr seeds 1 and 2 of round 13).
        credit, credit_flags, credit_rec = keep_copies(m, "credit", self.fifo_level < self.credit_limit, 3)
        framed = self.fmt[1]
        # The varint encoder's operators take SEQ only (a batch of another format never runs,
        # BAD_PARAM), so for them a word is sent when in a record or a 0-length header: the same
        # as ``send`` without the format, which kept the format register on the path from the
        # accept decision to the input slice's enables (11.26 ns, nextpnr seed 2).
        needs_dv = self.is_delta & (self._in_rec_cores | w_zero)
        # A varint batch waits for the encoder's room at every unit, header or not: the accept
        # decision then reads registers only. Waiting on needs_dv carried the word's checks
        # (w_zero) into it and on to the input slice's valid (10.70 ns) and the varint skid's
        # enable (10.52 ns, 9.05 of it routing, nextpnr seeds 2 and 3). A header waits only
        # while the encoder is behind, which then sets the pace anyway.
        dv_ok = self.dv_room | ~self.is_delta

        def take(state: Value, credit: Value) -> Value:
            return Mux(state == IDLE, 1, (state == RUN) & credit & dv_ok & ~self.hold)

        def uacc(state: Value, credit: Value) -> Value:
            return (state == RUN) & self.wvalid & credit & dv_ok

        # The cores' view of the word, from their copies of the record registers.
        hdr_c = framed & ~self._in_rec_cores
        empty_c = hdr_c & w_zero  # a header of length 0 (an all-zero word: never bad)
        m.d.comb += [
            self.take.eq(take(self.state, credit)),
            self.take_flags.eq(take(self.slice_state, credit_flags)),
            self.uacc.eq(uacc(self.state, credit)),
            self.rec_uacc.eq(uacc(self.rec_state, credit_rec)),
            # The control's: from the records' copy of the decision.
            self.beat_acc.eq(self.valid & take(self.rec_state, credit_rec)),
            self.empty_rec.eq(empty_c),
            self.needs_dv.eq(needs_dv),
            # beat_first without the format, a LUT of its own: shared with the cores, it placed
            # away from both the record registers and the varint input (10.67 ns, 9.67 of it
            # routing, nextpnr seed 3).
            self.dv_first.eq(~self._in_rec_cores | self._first_word),
            self.core_valid.eq(self.uacc & (~hdr_c | empty_c)),
            self.last_word.eq(Mux(hdr_c, empty_c, self._rem_last_cores)),
            self.beat_first.eq(Mux(framed, Mux(hdr_c, 1, self._first_word), 1)),
            self.beat_len.eq(Mux(framed, Mux(hdr_c, 0, self._rec_len), Mux(self.fmt == FIXED8, 8, 4))),
        ]
        # The records' and the control's view of the word.
        hdr = framed & ~self._in_rec
        empty_rec = hdr & w_zero
        m.d.comb += [
            self.hdr.eq(hdr),
            self.bad_hdr.eq(
                hdr
                & (w_hi | ((self.fmt == SEQ) & w_long) | ((self.fmt == VAR) & self.is_limited & w_rec_long))
            ),
        ]
        self._framing(m, framed, hdr, empty_rec)
        self._records(m, framed, empty_rec, w[:32])
        return m

    def _framing(self, m: Module, framed: Value, hdr: Value, empty_rec: Value) -> None:
        """The unit's lanes and the records it completes, as the control reads them."""
        N, rem_gt, nw = self.lanes, self.rem_gt, self.nw
        last_word = Mux(hdr, empty_rec, self._rem_last)
        ends = (~hdr | empty_rec) & (~framed | last_word)
        complete = self.rec_uacc & ends
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
            self.lane_on.eq(Cat(*lane_on)),
            # Records the unit completes: ``n_rec`` if ``uacc & ends`` (the control's ``uacc``
            # is the records' copy, ``rec_uacc``). The count reads
            # registers only; one signal (uacc & ends) enables the counters. A count that
            # included uacc let Yosys fold "0 records: keep" into the counters' enable, which then
            # carried the whole accept decision (10.42 ns, nextpnr seed 3).
            self.ends.eq(ends),
            self.n_rec.eq(Mux(framed, 1, n_fixed)),
            self.fin.eq(Mux(framed, complete & rem_one, rem_le_nw)),
            self.extra.eq(~framed & mux_index(nw, beyond) if N > 1 else 0),
        ]

    def _records(self, m: Module, framed: Value, empty_rec: Value, hdr_len: Value) -> None:
        """The record registers. Between records they follow the parser's word, accepted or
        not, in any state: they are read only inside a record (in_rec), which starts with the
        cycle that accepts the header, so they then hold that header's values; their enable is
        one register (in_rec), not the accept decision (rec_uacc) or the state. ``in_rec`` and
        ``rem_last`` load their cores' copies with the same values."""
        fmt, in_rec, remaining = self.fmt_rec, self._in_rec, self._remaining
        in_recs, rem_lasts = (in_rec, self._in_rec_cores), (self._rem_last, self._rem_last_cores)
        w_one, w_le8 = self.xw[64 + 3], self.xw[64 + 4]
        with m.If(~in_rec):
            m.d.sync += [
                self._rec_len.eq(hdr_len),
                remaining.eq(Mux(fmt == SEQ, hdr_len, (hdr_len + 7) >> 3)),
                *(r.eq(Mux(fmt == SEQ, w_one, w_le8)) for r in rem_lasts),
            ]
        # Inside a record (framed, so no header word) an accepted word is one of its words. Not
        # under SOFT_RESET or the control's state: rec_uacc already implies RUN, and a reset clears
        # in_rec, after which these registers reload. (The reset's and the state's decode in
        # their enables was a routed critical path: 11.03 ns, 9.07 of it routing.)
        with m.Elif(self.rec_uacc):
            m.d.sync += [
                remaining.eq(remaining - 1),
                *(r.eq(remaining == 2) for r in rem_lasts),
            ]
        # first_word's enable from the cores' copy of in_rec (equal to in_rec every cycle), a
        # LUT of its own: shared with the wide registers above, it was placed among them, 49
        # columns from first_word, which sits by its readers, the cores' beat_first and the
        # varint encoder's dv_first (10.32 ns, nextpnr seed 2 of round 17).
        with m.If(~self._in_rec_cores):
            m.d.sync += self._first_word.eq(1)
        with m.Elif(self.rec_uacc):
            m.d.sync += self._first_word.eq(0)
        # in_rec: entered at a good header of a non-empty record, left at its last word.
        with m.If(self.rec_clear):
            m.d.sync += [r.eq(0) for r in in_recs]
        with m.Elif(self.rec_uacc):
            with m.If(self.hdr & ~self.bad_hdr & ~empty_rec):
                m.d.sync += [r.eq(1) for r in in_recs]
            with m.If(framed & ~self.hdr):
                with m.If(self._rem_last):
                    m.d.sync += [r.eq(0) for r in in_recs]
