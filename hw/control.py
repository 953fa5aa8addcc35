"""The engine's control: the batch registers, the parameter check and the batch FSM.

An elaboration helper of :class:`~offload.hw.engine.OffloadEngine` (it adds its logic to the
engine's module, see :class:`Control`).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, Value

from offload.engine_map import (
    DTYPE_CODES,
    ERR_BITS,
    FORMATS,
    OP_CODES,
    STATUS_BUSY,
    STATUS_DONE,
    STATUS_ERROR,
)

from .common import mux_index
from .opdecode import FORMATS_OF, OpDecode, any_of, op_in

__all__ = ["Control"]

FIXED8, FIXED4, VAR, SEQ = (FORMATS[k] for k in ("FIXED8", "FIXED4", "VAR", "SEQ"))
ERR = ERR_BITS
# The framed formats are the ones with bit 1 set: the batch's ``framed`` is that bit.
assert [f >> 1 & 1 for f in (FIXED8, FIXED4, VAR, SEQ)] == [0, 0, 1, 1]
# STATUS is read as Cat(busy, done, error): its bits in that order.
assert [STATUS_BUSY, STATUS_DONE, STATUS_ERROR] == [1 << k for k in range(3)]


def _formats_ok(kind: str, rfmt: Value, rdt: Value) -> Value:
    """``FORMAT``/``DTYPE`` are an input format of ``kind`` (:data:`~offload.hw.opdecode.FORMATS_OF`)."""
    formats = FORMATS_OF[kind]
    any_key = [FORMATS[f] for f, size in formats.items() if size is None]
    sized = [
        (rfmt == FORMATS[f]) & op_in(rdt, [c for n, c in DTYPE_CODES.items() if np.dtype(n).itemsize == size])
        for f, size in formats.items()
        if size is not None
    ]
    return any_of(([op_in(rfmt, any_key)] if any_key else []) + sized)


class Control:
    """The batch: its registers, its checks, its state and its error flags.

    States: ``IDLE`` (``s_axis`` discards beats, ``EXTRA_DATA``), ``RUN`` (the parser takes
    units), ``DRAIN`` (every complete record's result reaches the FIFO), ``ROLLBACK`` (the FIFO
    drops an unfinished sequence), ``TRAIL`` (the trailer is written once it has room).

    Outputs (signals created here): :attr:`state`; the batch registers loaded at START from
    the parameter registers (:attr:`op`, :attr:`fmt`, :attr:`dtype`, :attr:`seed`,
    :attr:`nbuckets`, :attr:`slot`, :attr:`nbound`) and :attr:`framed` / :attr:`fixed` (the
    format's framing); the counters :attr:`rem` (records still to come), :attr:`rem_gt` (bit j:
    ``rem > j``, kept with ``rem`` so the end-of-batch and lane decisions read one register bit,
    not a 32-bit compare) and :attr:`recs_in` (records taken); :attr:`extra_pending` (words of
    an accepted beat after the batch's end); the status registers :attr:`err`,
    :attr:`done_flag`, :attr:`busy_out` (set at START, cleared when the trailer leaves
    ``m_axis``), :attr:`done_count`, :attr:`cycles` (cycles since START while not idle) and
    :attr:`core_clr` (START in IDLE or SOFT_RESET: clears the data path), :attr:`bad_param`
    (the parameter registers do not make a batch: :meth:`param_error`).

    Inputs, at :meth:`elaborate_fsm`: the register file's strobes and parameters, the slice,
    serialiser and parser decisions, the collector's ``write_trailer`` and in-flight results
    and the varint path's ``dv_busy``. Reset (``rst``): IDLE, every register 0; ``SOFT_RESET``:
    IDLE, flags clear (the batch registers are kept, reloaded by the next START).
    """

    IDLE, RUN, DRAIN, ROLLBACK, TRAIL = range(5)

    def __init__(self, lanes: int, table_depth: int, decode: OpDecode):
        N = self.lanes = lanes
        self.table_depth = table_depth
        self.decode = decode
        self.state = Signal(3, name="state")
        self.op = Signal(max(OP_CODES.values()).bit_length(), name="op")
        self.fmt = Signal(max(FORMATS.values()).bit_length(), name="fmt")
        self.dtype = Signal(max(DTYPE_CODES.values()).bit_length(), name="dtype")
        self.seed = Signal(64, name="seed")
        self.nbuckets = Signal(64, name="nbuckets")
        self.slot = Signal(16, name="slot")
        self.nbound = Signal(13, name="nbound")
        self.framed = self.fmt[1]  # VAR or SEQ (lane 0 only)
        self.fixed = ~self.framed
        self.recs_in = Signal(32, name="recs_in")
        self.rem = Signal(32, name="rem")  # records still to come (COUNT - recs_in)
        self.rem_gt = Signal(N + 1, name="rem_gt")
        self.extra_pending = Signal(name="extra_pending")
        self.err = Signal(len(ERR_BITS), name="err")
        self.cycles = Signal(64, name="cycles")
        self.core_clr = Signal(name="core_clr")
        self.bad_param = Signal(name="bad_param")

    def status(self, coll) -> Value:
        """The ``STATUS`` register: busy, done, error (``coll``: the collector's flags)."""
        return Cat(coll.busy_out | (self.state != self.IDLE), coll.done_flag, self.err != 0)

    def param_error(self, r: dict[str, Signal]) -> Value:
        """The parameter registers ``r`` do not make a batch the engine runs (``BAD_PARAM``):
        an op code it does not run, a format or key type its operator does not take, a
        parameter out of the range the operator's entry accepts (:attr:`decode`), or more
        boundaries than the table holds."""
        rop, dec = r["OP"], self.decode
        of_kind = {kind: op_in(rop, dec.of_kind(kind)) for kind in dec.kinds()}
        runs = any_of([op & _formats_ok(kind, r["FORMAT"], r["DTYPE"]) for kind, op in of_kind.items()])
        terms = [~runs]
        for ch in dec.checks:
            regs = [r[n] for n in ch.registers]
            refused = ch.refused(regs[0] if len(regs) == 1 else Cat(*regs))
            if refused is not None:
                terms.append((rop == ch.code) & refused)
        if "numbers" in of_kind:  # the operators that read the boundary table
            terms.append(of_kind["numbers"] & (r["NUM_BOUNDARIES"] > self.table_depth))
        return any_of(terms)

    def elaborate_decode(self, m: Module, regs) -> None:
        """Add BAD_PARAM, the data path's clear and the cycle counter to ``m``."""
        m.d.comb += self.bad_param.eq(self.param_error(regs.params))
        m.d.comb += self.core_clr.eq(regs.soft_reset | (regs.start & (self.state == self.IDLE)))
        with m.If(self.state != self.IDLE):
            m.d.sync += self.cycles.eq(self.cycles + 1)

    def elaborate_fsm(self, m: Module, regs, sl, ser, p, coll, any_res: Value, dv_busy: Value) -> None:
        """Add the batch FSM to ``m`` (after :meth:`elaborate_decode`)."""
        with m.If(regs.soft_reset):
            m.d.sync += [
                self.state.eq(self.IDLE),
                self.err.eq(0),
            ]
            m.d.comb += p.rec_clear.eq(1)
            if self.lanes > 1:
                m.d.comb += ser.clear.eq(1)
                m.d.sync += self.extra_pending.eq(0)
        with m.Else():
            with m.Switch(self.state):
                with m.Case(self.IDLE):
                    self._idle(m, regs, p, coll)
                with m.Case(self.RUN):
                    self._run(m, sl, ser, p)
                with m.Case(self.DRAIN):
                    # Every complete record has its result in the FIFO and nothing is in flight.
                    with m.If(
                        (coll.done_count == self.recs_in) & ~dv_busy & ~any_res & ~coll.resq_valid.any()
                    ):
                        m.d.sync += self.state.eq(self.ROLLBACK)
                with m.Case(self.ROLLBACK):
                    m.d.sync += self.state.eq(self.TRAIL)
                with m.Case(self.TRAIL):
                    self._trail(m, ser, p, coll)

    def _idle(self, m: Module, regs, p, coll) -> None:
        """IDLE: START loads the batch (or goes straight to the trailer: a bad parameter or
        no records); a beat on ``s_axis`` is discarded (``EXTRA_DATA``)."""
        r, N = regs.params, self.lanes
        with m.If(regs.start):
            m.d.comb += [p.rec_clear.eq(1), coll.batch_start.eq(1)]
            m.d.sync += [
                self.op.eq(r["OP"]),
                self.fmt.eq(r["FORMAT"]),
                self.dtype.eq(r["DTYPE"]),
                self.rem.eq(r["COUNT"]),
                self.rem_gt.eq(Cat(*(r["COUNT"] > j for j in range(N + 1)))),
                self.seed.eq(Cat(r["SEED_LO"], r["SEED_HI"])),
                self.nbuckets.eq(Cat(r["NUM_BUCKETS_LO"], r["NUM_BUCKETS_HI"])),
                self.slot.eq(r["SLOT"]),
                self.nbound.eq(r["NUM_BOUNDARIES"]),
                self.err.eq(Mux(self.bad_param, 1 << ERR["BAD_PARAM"], 0)),
                self.cycles.eq(0),
                self.recs_in.eq(0),
                self.state.eq(Mux(self.bad_param | (r["COUNT"] == 0), self.TRAIL, self.RUN)),
            ]
        with m.Elif(p.beat_acc):
            m.d.sync += self.err[ERR["EXTRA_DATA"]].eq(1)

    def _run(self, m: Module, sl, ser, p) -> None:
        """RUN: a beat accepted (its tkeep checked, its words held by the serialiser), a unit
        taken (the record tracked, the counters advanced, the batch's end or an error)."""
        with m.If(p.beat_acc):
            with m.If(sl.bad_tkeep):
                m.d.sync += self.err[ERR["BAD_TKEEP"]].eq(1)
            m.d.comb += ser.load.eq(1)
        with m.If(p.uacc):
            m.d.comb += ser.advance.eq(1)
            self._count(m, p.n_in)
            with m.If(p.bad_hdr):
                m.d.sync += [self.err[ERR["BAD_HEADER"]].eq(1), self.state.eq(self.DRAIN)]
            with m.Elif(p.fin):
                with m.If(~ser.ulast | p.extra):
                    m.d.sync += self.err[ERR["MISSING_TLAST"]].eq(1)
                if self.lanes > 1:
                    with m.If(p.extra):
                        m.d.sync += self.extra_pending.eq(1)
                m.d.sync += self.state.eq(self.DRAIN)
            with m.Elif(ser.ulast):
                m.d.sync += [self.err[ERR["EARLY_TLAST"]].eq(1), self.state.eq(self.DRAIN)]

    def _count(self, m: Module, n_in: Value) -> None:
        """Advance the record counters by ``n_in``. n_in comes at the end of the input
        decision: add every candidate count in parallel with it and select (a mux, not a carry
        chain, after it)."""
        N, rem = self.lanes, self.rem
        m.d.sync += [
            self.recs_in.eq(mux_index(n_in, [(self.recs_in + k)[:32] for k in range(N + 1)])),
            rem.eq(mux_index(n_in, [(rem - k)[:32] for k in range(N + 1)])),
            # rem - k > j is rem > j + k: rem >= n_in in RUN (rem >= 1, a framed unit completes
            # at most one record, lane j needs rem > j).
            self.rem_gt.eq(
                Cat(*(mux_index(n_in, [rem > j + k for k in range(N + 1)]) for j in range(N + 1)))
            ),
        ]

    def _trail(self, m: Module, ser, p, coll) -> None:
        """TRAIL: once the trailer is written, IDLE."""
        with m.If(coll.write_trailer):
            m.d.sync += self.state.eq(self.IDLE)
            m.d.comb += p.rec_clear.eq(1)
            if self.lanes > 1:
                # Words of accepted beats after the batch's end: discarded now, after the
                # trailer (as the 64-bit engine discards them in IDLE).
                m.d.comb += ser.clear.eq(1)
                m.d.sync += self.extra_pending.eq(0)
                with m.If(ser.hold | self.extra_pending):
                    m.d.sync += self.err[ERR["EXTRA_DATA"]].eq(1)
