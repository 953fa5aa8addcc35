"""The engine's input side: the ``s_axis`` register slice (:class:`InputSlice`) and the
serialiser of framed beats (:class:`Serialiser`), submodules of
:class:`~offload.hw.engine.OffloadEngine`."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["InputSlice", "Serialiser", "axis_in", "beat_fields", "XW"]

#: Bits per word in the slice: the 64-bit word and its five header checks (see
#: :meth:`InputSlice.checks`).
XW = 64 + 6


def axis_in(lanes: int) -> dict:
    """The ``s_axis`` ports of a ``64*lanes``-bit bus, in the engine's port order."""
    bus = 64 * lanes
    return {
        "s_axis_tdata": In(bus),
        "s_axis_tkeep": In(bus // 8),
        "s_axis_tlast": In(1),
        "s_axis_tvalid": In(1),
        "s_axis_tready": Out(1),
    }


def beat_fields(beat: Value, lanes: int) -> tuple[list[Value], Value, Value]:
    """A beat as :class:`InputSlice` holds it: its words with their checks (:data:`XW` bits
    each), ``tlast`` and the word count (``tkeep``'s check is the bit after ``tlast``)."""
    return [beat.word_select(j, XW) for j in range(lanes)], beat[XW * lanes], beat[XW * lanes + 2 :]


class InputSlice(wiring.Component):
    """A register slice between ``s_axis`` and the parser: an input register, a checks register,
    then a two-entry skid buffer.

    ``s_axis_tready`` comes from two registers through one LUT (no path from the bus, nor
    from the parser's accept decision). The bus goes into the input register as it is, with no
    logic in front (the bus's source may be placed anywhere); the header checks of every word
    are computed from that register into the checks register, and the skid buffer loads only
    from registers, so neither the parser's accept decision, which fans out to the cores and
    every counter, nor the buffer's ``main`` entry, placed by the parser, starts at a check's
    LUTs. Each of the two registers moves on unless it holds a beat the next stage cannot take
    (the buffer's two entries full); ``s_axis_tready`` is low while the input register holds a
    beat and the skid is full (even if the checks register could take it then: a cycle of
    waiting under backpressure only). Three cycles of latency, not throughput (a beat per
    cycle).

    Ports: the :func:`axis_in` ports; In ``take`` (the parser takes the held beat this cycle:
    the held beat's enable) and ``take_flags`` (equal to ``take``, from registers of its own:
    the valid flags'), ``soft_reset``; Out ``valid`` (a beat is held) and ``beat`` (the held
    beat), read through :attr:`xwords` (per word: the word and its checks, :data:`XW` bits),
    :attr:`words` (the 64-bit words), :attr:`tlast`, :attr:`bad_tkeep` (``tkeep`` is not exactly
    the bytes of the words carried) and :attr:`nw` (words carried: up to the highest word whose
    ``tkeep`` bits are not all clear, at least 1). :attr:`skid_v` and :attr:`skid_v_main`: the
    skid's valid flag and its copy for ``main``'s select (equal every cycle).

    Latency 3 cycles (a beat accepted in cycle t is held from t+3). Reset (``rst`` or
    ``soft_reset``): the input register, the checks register and both entries empty, so beats
    already taken from the bus are dropped with the batch; their data is not reset.
    """

    def __init__(self, lanes: int, seq_max: int, record_max: int = 0xFFFFFFFF):
        N = self.lanes = lanes
        self.seq_max = seq_max
        self.record_max = record_max
        nw_bits = Shape.cast(range(N + 1)).width
        super().__init__(
            {
                **axis_in(lanes),
                "take": In(1),
                "take_flags": In(1),
                "soft_reset": In(1),
                "valid": Out(1),
                "beat": Out(XW * N + 2 + nw_bits),
            }
        )
        self.xwords, self.tlast, self.nw = beat_fields(self.beat, N)
        self.words = [x[:64] for x in self.xwords]
        self.bad_tkeep = self.beat[XW * N + 1]
        # The skid's valid flag and a copy for ``main``'s select (the same next state, both
        # kept), so the skid's hold is a clock enable of its own: with one flag, ``main``'s
        # select and the hold were one mux after synthesis, the skid had no clock enable and
        # the flag went into the header checks' LUT trees, placed by the input register
        # across the device (11.39 ns, 9.92 of it routing, at one placement).
        self.skid_v = Signal(name="slice_skid_valid", attrs={"keep": 1})
        self.skid_v_main = Signal(name="slice_skid_valid_main", attrs={"keep": 1})

    def checks(self, x: Value) -> Value:
        """A word ``x`` and the checks the parser makes when it is a header."""
        ln = x[:32]
        return Cat(
            x,
            x == 0,  # zero: a 0-byte record
            x[32:] != 0,  # bad header (upper half)
            ln > self.seq_max,  # bad SEQ header (too long)
            ln == 1,  # SEQ: one word
            (ln != 0) & (ln <= 8),  # VAR: one word
            ln > self.record_max,  # bad VAR header of an operator with a record limit (too long)
        )

    def _beat(self, tdata: Value, tkeep_in: Value, tlast: Value) -> Value:
        """A bus beat as the skid buffer stores it: the words with their checks, ``tlast``,
        ``tkeep``'s check and the word count."""
        N = self.lanes
        bus_words = [tdata.word_select(j, 64) for j in range(N)]
        nw_in = Const(1, range(N + 1))
        canon = Const(0xFF, 8 * N)
        for j in range(1, N):
            grp = tkeep_in[8 * j : 8 * j + 8].any()
            nw_in = Mux(grp, j + 1, nw_in)
            canon = Mux(grp, (1 << 8 * (j + 1)) - 1, canon)
        return Cat(*(self.checks(x) for x in bus_words), tlast, tkeep_in != canon, nw_in)

    def elaborate(self, platform) -> Module:
        m = Module()
        bus = Cat(self.s_axis_tdata, self.s_axis_tkeep, self.s_axis_tlast)
        ireg = Signal(len(bus), name="slice_in", reset_less=True)
        in_v = Signal(name="slice_in_valid")
        N = self.lanes
        in_beat = self._beat(ireg[: 64 * N], ireg[64 * N : 72 * N], ireg[72 * N])
        assert len(in_beat) == len(self.beat)
        main = Signal(len(in_beat), name="slice_main", reset_less=True)
        skid = Signal(len(in_beat), name="slice_skid", reset_less=True)
        main_v, skid_v = Signal(name="slice_main_valid"), self.skid_v
        # The checks register: the skid buffer loads registers only. With ``main`` loading the
        # input register's checks directly when the skid was empty, the checks' LUTs (placed by
        # the input register) drove ``main`` (placed by the parser) across the device (10.56 ns,
        # 5.73 of it one route, at one placement).
        creg = Signal(len(in_beat), name="slice_checked", reset_less=True)
        c_v = Signal(name="slice_checked_valid")
        # Not registers of their own: as one, ``ready`` was the parser's accept decision (the
        # buffer's next state) carried across the device to the input side, the engine's
        # critical path at two placements (10.90 ns, 9.26 of it routing).
        c_ready = ~(c_v & skid_v)
        # ``tready`` leaves the checks register's flag out: with it (the input register moves
        # on when the checks register does), the flag, placed by the registers it enables, was
        # 63 columns from the input register, on the way to ``tready``'s consumer (10.93 ns,
        # 9.69 of it routing, nextpnr seed 2 of round 23). Without it the bus waits a cycle
        # more when the skid is full: never while the parser takes a beat per cycle.
        ready = ~(in_v & skid_v)
        m.d.comb += [self.s_axis_tready.eq(ready), self.beat.eq(main), self.valid.eq(main_v)]
        # The input register loads the bus whenever it does not hold a beat the checks register
        # cannot take; the checks register likewise with the buffer.
        with m.If(ready):
            m.d.sync += ireg.eq(bus)
        with m.If(c_ready):
            m.d.sync += creg.eq(in_beat)
        c_fire = c_v & ~skid_v
        # The data registers' enables leave the soft reset out (their data is not reset; the
        # valid flags are): one LUT less behind the parser's accept decision (``take``), which
        # reaches every bit of ``main`` across the device.
        with m.If(self.take | ~main_v):
            m.d.sync += main.eq(Mux(self.skid_v_main, skid, creg))
        # The skid follows the checks register while it is empty, so it holds the beat of the
        # cycle that fills it; its enable is its valid flag alone, not ``take``.
        with m.If(~skid_v):
            m.d.sync += skid.eq(creg)
        # The flags read ``take_flags``, not ``take``: sharing the beat's enable LUT, which is
        # placed among the beat's bits, they were the engine's critical path.
        move_f = self.take_flags | ~main_v
        with m.If(self.soft_reset):
            # Abort: beats already taken from the bus are dropped with the batch.
            m.d.sync += [main_v.eq(0), in_v.eq(0), c_v.eq(0)]
            m.d.sync += [v.eq(0) for v in (skid_v, self.skid_v_main)]
        with m.Else():
            m.d.sync += in_v.eq((in_v & ~c_ready) | (self.s_axis_tvalid & ready))
            m.d.sync += c_v.eq((c_v & ~c_ready) | (in_v & c_ready))
            m.d.sync += [v.eq(Mux(move_f, 0, skid_v | c_fire)) for v in (skid_v, self.skid_v_main)]
            with m.If(move_f):
                m.d.sync += main_v.eq(skid_v | c_fire)
        return m


class Serialiser(wiring.Component):
    """Hands a framed (``VAR``/``SEQ``) beat's words to the parser one per cycle.

    A beat's word 0 goes to the parser straight from the slice; with ``lanes > 1`` its words
    1..nw-1 are held and handed over one per cycle (the slice waits: ``hold``). Fixed beats pass
    through whole. With ``lanes == 1`` this is wiring only.

    Ports: In ``beat``, ``valid`` (the :class:`InputSlice`'s), ``framed`` (the batch's format
    is ``VAR``/``SEQ``), and the control's strobes ``load`` (a beat is accepted in RUN: hold a
    framed beat's words 1..nw-1), ``advance`` (the parser takes a word: hand over the next held
    one) and ``clear`` (``SOFT_RESET``, the trailer sent: drop the held words); Out ``hold``
    (words are held: the slice must not hand over a beat), ``xw`` (the word the parser sees,
    with its checks, :data:`XW` bits, read through :attr:`w`, :attr:`w_zero`, :attr:`w_hi`,
    :attr:`w_long`, :attr:`w_one`, :attr:`w_le8`), ``wlast`` (the word ends its beat and the
    beat has ``tlast``), ``wvalid`` (a word is there), ``ulast`` (``tlast`` of the unit the
    parser takes: the word framed, the beat fixed).

    Latency 0: a held word is offered in the cycle after its beat was accepted, a word per cycle.
    Reset (``rst``, or ``clear``): nothing held; the held words' data is kept.
    """

    def __init__(self, lanes: int, beat_width: int):
        self.lanes = lanes
        super().__init__(
            {
                "beat": In(beat_width),
                "valid": In(1),
                "framed": In(1),
                "load": In(1),
                "advance": In(1),
                "clear": In(1),
                "hold": Out(1),
                "xw": Out(XW),
                "wlast": Out(1),
                "wvalid": Out(1),
                "ulast": Out(1),
            }
        )
        self.w = self.xw[:64]
        self.w_zero, self.w_hi, self.w_long, self.w_one, self.w_le8 = (self.xw[64 + k] for k in range(5))

    def elaborate(self, platform) -> Module:
        m = Module()
        N = self.lanes
        xwords, tlast, nw = beat_fields(self.beat, N)
        m.d.comb += self.ulast.eq(Mux(self.framed, self.wlast, tlast))
        if N == 1:
            m.d.comb += [
                self.hold.eq(0),
                self.xw.eq(xwords[0]),
                self.wlast.eq(tlast),
                self.wvalid.eq(self.valid),
            ]
            return m
        left = Signal(range(N), name="left")  # held words still to hand over
        buf = Signal(XW * (N - 1), name="buf")
        btl = Signal(name="btl")
        m.d.comb += [
            self.xw.eq(Mux(self.hold, buf[:XW], xwords[0])),
            self.wlast.eq(Mux(self.hold, btl & (left == 1), tlast & (nw == 1))),
            self.wvalid.eq(self.hold | self.valid),
        ]
        with m.If(self.load & self.framed & (nw > 1)):
            m.d.sync += [self.hold.eq(1), buf.eq(Cat(*xwords[1:])), left.eq(nw - 1), btl.eq(tlast)]
        with m.If(self.advance & self.hold):
            m.d.sync += [buf.eq(buf >> XW), left.eq(left - 1)]
            with m.If(left == 1):
                m.d.sync += self.hold.eq(0)
        with m.If(self.clear):
            m.d.sync += self.hold.eq(0)
        return m
