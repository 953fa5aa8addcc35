"""The engine's input side: the ``s_axis`` register slice (:class:`InputSlice`, a submodule of
:class:`~offload.hw.engine.OffloadEngine`) and the serialiser of framed beats
(:class:`Serialiser`, an elaboration helper: the engine's control FSM drives its registers)."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["InputSlice", "Serialiser", "axis_in", "XW"]

#: Bits per word in the slice: the 64-bit word and its five header checks (see
#: :meth:`InputSlice.checks`).
XW = 64 + 5


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


class InputSlice(wiring.Component):
    """A register slice (two-entry skid buffer) between ``s_axis`` and the parser.

    ``s_axis_tready`` is a register (no path from the bus through the parser back to the bus),
    and the header checks of every word are computed on the way in and registered with it, so
    the parser's accept decision, which fans out to the cores and every counter, starts at
    registers. It costs one cycle of latency, not throughput (a beat per cycle).

    Ports: the :func:`axis_in` ports; In ``take`` (the parser takes the held beat this cycle),
    ``soft_reset``; Out ``valid`` (a beat is held) and ``beat`` (the held beat), read through
    :attr:`xwords` (per word: the word and its checks, :data:`XW` bits), :attr:`words` (the
    64-bit words), :attr:`tlast`, :attr:`bad_tkeep` (``tkeep`` is not exactly the bytes of the
    words carried) and :attr:`nw` (words carried: up to the highest word whose ``tkeep`` bits
    are not all clear, at least 1).

    Latency 1 cycle (a beat accepted in cycle t is held from t+1). Reset (``rst`` or
    ``soft_reset``): both entries empty, so beats already taken from the bus are dropped with
    the batch; the entries' data is not reset.
    """

    def __init__(self, lanes: int, seq_max: int):
        N = self.lanes = lanes
        self.seq_max = seq_max
        nw_bits = Shape.cast(range(N + 1)).width
        super().__init__(
            {
                **axis_in(lanes),
                "take": In(1),
                "soft_reset": In(1),
                "valid": Out(1),
                "beat": Out(XW * N + 2 + nw_bits),
            }
        )
        beat = self.beat
        self.xwords = [beat.word_select(j, XW) for j in range(N)]
        self.words = [x[:64] for x in self.xwords]
        self.tlast = beat[XW * N]
        self.bad_tkeep = beat[XW * N + 1]
        self.nw = beat[XW * N + 2 :]

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
        )

    def _beat(self) -> Value:
        """The bus beat as the slice stores it: the words with their checks, ``tlast``,
        ``tkeep``'s check and the word count."""
        N = self.lanes
        bus_words = [self.s_axis_tdata.word_select(j, 64) for j in range(N)]
        tkeep_in = self.s_axis_tkeep
        nw_in = Const(1, range(N + 1))
        canon = Const(0xFF, 8 * N)
        for j in range(1, N):
            grp = tkeep_in[8 * j : 8 * j + 8].any()
            nw_in = Mux(grp, j + 1, nw_in)
            canon = Mux(grp, (1 << 8 * (j + 1)) - 1, canon)
        return Cat(*(self.checks(x) for x in bus_words), self.s_axis_tlast, tkeep_in != canon, nw_in)

    def elaborate(self, platform) -> Module:
        m = Module()
        in_beat = self._beat()
        assert len(in_beat) == len(self.beat)
        main = Signal(len(in_beat), name="slice_main", reset_less=True)
        skid = Signal(len(in_beat), name="slice_skid", reset_less=True)
        main_v, skid_v = Signal(name="slice_main_valid"), Signal(name="slice_skid_valid")
        m.d.comb += [self.s_axis_tready.eq(~skid_v), self.beat.eq(main), self.valid.eq(main_v)]
        in_fire = self.s_axis_tvalid & ~skid_v
        with m.If(self.soft_reset):
            # Abort: beats already taken from the bus are dropped with the batch.
            m.d.sync += [main_v.eq(0), skid_v.eq(0)]
        with m.Elif(self.take | ~main_v):
            m.d.sync += [main.eq(Mux(skid_v, skid, in_beat)), main_v.eq(skid_v | in_fire), skid_v.eq(0)]
        with m.Elif(in_fire):
            m.d.sync += [skid.eq(in_beat), skid_v.eq(1)]
        return m


class Serialiser:
    """Hands a framed (``VAR``/``SEQ``) beat's words to the parser one per cycle.

    A beat's word 0 goes to the parser straight from the slice; with ``lanes > 1`` its words
    1..nw-1 are held and handed over one per cycle (the slice waits: :attr:`hold`). Fixed beats
    pass through whole. With ``lanes == 1`` this is wiring only.

    Inputs: the :class:`InputSlice`'s outputs and the batch's ``framed`` bit. Outputs (values):
    :attr:`hold` (words are held: the slice must not hand over a beat), :attr:`xw` (the word the
    parser sees, with its checks), :attr:`w` (its 64 bits), :attr:`w_zero`, :attr:`w_hi`,
    :attr:`w_long`, :attr:`w_one`, :attr:`w_le8` (its checks), :attr:`wlast` (the word ends
    its beat and the beat has ``tlast``), :attr:`wvalid` (a word is there), :attr:`ulast`
    (``tlast`` of the unit the parser takes: the word framed, the beat fixed).

    The control FSM drives the held words (registers ``hold``, ``left``, ``buf``, ``btl``):
    :meth:`load` when a beat is accepted, :meth:`advance` when the parser takes a word,
    :meth:`clear` on ``SOFT_RESET`` and when the trailer is sent. Zero latency: a held word is
    offered in the cycle after its beat was accepted. Reset (``rst``): nothing held.
    """

    def __init__(self, slice_: InputSlice, framed: Value):
        N = self.lanes = slice_.lanes
        self.slice = slice_
        xwords, tlast, tvalid, nw = slice_.xwords, slice_.tlast, slice_.valid, slice_.nw
        if N == 1:
            self.hold = Const(0)
            xw, self.wlast, self.wvalid = xwords[0], tlast, tvalid
        else:
            self.hold = Signal(name="hold")
            self.left = Signal(range(N), name="left")  # held words still to hand over
            self.buf = Signal(XW * (N - 1), name="buf")
            self.btl = Signal(name="btl")
            xw = Mux(self.hold, self.buf[:XW], xwords[0])
            self.wlast = Mux(self.hold, self.btl & (self.left == 1), tlast & (nw == 1))
            self.wvalid = self.hold | tvalid
        self.xw = xw
        self.w = xw[:64]
        self.w_zero, self.w_hi, self.w_long, self.w_one, self.w_le8 = (xw[64 + k] for k in range(5))
        self.ulast = Mux(framed, self.wlast, tlast)

    def load(self, m: Module, framed: Value) -> None:
        """In the current context (a beat accepted): hold a framed beat's words 1..nw-1."""
        if self.lanes > 1:
            nw = self.slice.nw
            with m.If(framed & (nw > 1)):
                m.d.sync += [
                    self.hold.eq(1),
                    self.buf.eq(Cat(*self.slice.xwords[1:])),
                    self.left.eq(nw - 1),
                    self.btl.eq(self.slice.tlast),
                ]

    def advance(self, m: Module) -> None:
        """In the current context (the parser takes a word): hand over the next held word."""
        if self.lanes > 1:
            with m.If(self.hold):
                m.d.sync += [self.buf.eq(self.buf >> XW), self.left.eq(self.left - 1)]
                with m.If(self.left == 1):
                    m.d.sync += self.hold.eq(0)

    def clear(self) -> list:
        """Statements that drop the held words."""
        return [self.hold.eq(0)] if self.lanes > 1 else []
