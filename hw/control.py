"""The engine's control: the batch registers, the parameter check and the batch FSM
(:class:`Control`, a submodule of :class:`~offload.hw.engine.OffloadEngine`)."""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from offload.engine_map import (
    DTYPE_CODES,
    ERR_BITS,
    FORMATS,
    OP_CODES,
    PARAM_REGISTERS,
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


class Control(wiring.Component):
    """The batch: its registers, its checks, its state and its error flags.

    States: ``IDLE`` (``s_axis`` discards beats, ``EXTRA_DATA``), ``RUN`` (the parser takes
    units), ``DRAIN`` (every complete record's result reaches the FIFO), ``ROLLBACK`` (the FIFO
    drops an unfinished sequence), ``TRAIL`` (the trailer is written once it has room, from
    TRAIL's second cycle: the collector reads the state through a register).

    Ports: In, from the :class:`~offload.hw.regfile.RegisterFile`, ``start``, ``soft_reset``
    and ``reg_<name>`` for every parameter register (``PARAM_REGISTERS``); from the slice
    ``bad_tkeep``; from the serialiser ``ulast``, ``hold``; from the parser ``beat_acc``,
    ``uacc`` (the parser's ``rec_uacc``, the records' copy of the accept decision), ``bad_hdr``,
    ``fin``, ``extra``, ``ends``, ``n_rec``; from the collector ``write_trailer``, ``done_count``,
    ``resq_any``, ``busy_out``, ``done_flag``; from the lanes ``dv_busy`` (a
    value in the varint path). Out ``state`` and its copies (:attr:`STATE_COPIES`, equal to it,
    each a register of its own): ``parser_state`` (the data path's accept decision: the slice's
    held beat, the cores' input), ``slice_state`` (the input slice's flags) and ``rec_state``
    (the parser's record registers and the decisions it sends back here, which this FSM also
    switches on);
    the batch registers loaded at START from the parameter registers (``op``; ``fmt``,
    ``fmt_rec``, ``fmt_ser``, ``fmt_lanes``: the format, one copy per consumer; ``dtype``,
    ``seed``, ``nbuckets``, ``slot``, ``nbound``, and the parser's flags of the op code,
    ``is_delta``: a sequence-codec operator, ``is_limited``: a FarmHash/CityHash record
    operator, whose records are at most ``RECORD_MAX`` bytes; ``uses``: bit k, the operator goes
    through core ``decode.cores()[k]``); ``rem_gt`` (bit j: records still
    to come > j, kept with the count so the end-of-batch and lane decisions read one register
    bit, not a 32-bit compare); ``err`` (the ``ERR`` flags), ``cycles`` (cycles since START
    while not idle), ``status`` (``STATUS``: busy, done, error), ``core_clr`` (START in IDLE or
    SOFT_RESET: clears the data path); the strobes ``ser_load``, ``ser_advance``,
    ``ser_clear`` (the :class:`~offload.hw.slicer.Serialiser`'s), ``rec_clear`` (the parser
    leaves its record) and ``batch_start`` (the collector's counters restart).

    Latency: the batch registers, state and flags are registers (a cycle after the event);
    DRAIN ends a cycle after its condition has held for two cycles (``drained``, a register);
    ``core_clr``, ``status`` and the strobes are combinational. BAD_PARAM (:meth:`param_error`)
    is decided from the parameter registers as they were two cycles before START's, an empty
    batch from them a cycle before (the register file stores a write two cycles before the
    next write's START strobe at the earliest). Reset (``rst``): IDLE, every
    register 0; ``soft_reset``: IDLE, flags clear (the batch registers are kept, reloaded by the
    next START).
    """

    IDLE, RUN, DRAIN, ROLLBACK, TRAIL = range(5)
    #: The state's copies (see ``_states``), by their consumers.
    STATE_COPIES = ("parser_state", "slice_state", "rec_state")
    #: The format's registers (one per consumer, see ``_fmts``) and their width.
    FMT_COPIES = ("fmt", "fmt_rec", "fmt_ser", "fmt_lanes")
    FMT_WIDTH = max(FORMATS.values()).bit_length()

    def __init__(self, lanes: int, table_depth: int, decode: OpDecode):
        N = self.lanes = lanes
        self.table_depth = table_depth
        self.decode = decode
        super().__init__(
            {
                "start": In(1),
                "soft_reset": In(1),
                **{f"reg_{n.lower()}": In(32) for n in PARAM_REGISTERS},
                "bad_tkeep": In(1),
                "ulast": In(1),
                "hold": In(1),
                "beat_acc": In(1),
                "uacc": In(1),
                "bad_hdr": In(1),
                "fin": In(1),
                "extra": In(1),
                "ends": In(1),
                "n_rec": In(range(N + 1)),
                "write_trailer": In(1),
                "done_count": In(32),
                "resq_any": In(1),
                "busy_out": In(1),
                "done_flag": In(1),
                "dv_busy": In(1),
                "state": Out(3),
                **{n: Out(3) for n in self.STATE_COPIES},
                "op": Out(max(OP_CODES.values()).bit_length()),
                "is_delta": Out(1),
                "is_limited": Out(1),
                "uses": Out(len(decode.cores())),
                **{n: Out(self.FMT_WIDTH) for n in self.FMT_COPIES},
                "dtype": Out(max(DTYPE_CODES.values()).bit_length()),
                "seed": Out(64),
                "nbuckets": Out(64),
                "slot": Out(16),
                "nbound": Out(13),
                "rem_gt": Out(N + 1),
                "err": Out(len(ERR_BITS)),
                "cycles": Out(64),
                "status": Out(3),
                "core_clr": Out(1),
                "ser_load": Out(1),
                "ser_advance": Out(1),
                "ser_clear": Out(1),
                "rec_clear": Out(1),
                "batch_start": Out(1),
            }
        )
        #: The parameter registers by name.
        self.params = {n: getattr(self, f"reg_{n.lower()}") for n in PARAM_REGISTERS}
        self.recs_in = Signal(32, name="recs_in")  # records taken
        self.rem = Signal(32, name="rem")  # records still to come (COUNT - recs_in)
        self.extra_pending = Signal(name="extra_pending")  # words of a beat after the batch's end
        # The parameters do not make a batch, and the batch has no records: registers, computed
        # every cycle from the parameter registers (BAD_PARAM over two register levels). A
        # write stores its register two cycles before the START strobe of the next write at
        # the earliest (RegisterFile's latency), so at START they are the parameters' as
        # written. Decided in START's cycle they were
        # the engine's critical path (NUM_BOUNDARIES's compare, 21 carry cells and six LUTs to
        # the state, 10.23 ns at nextpnr seed 1).
        self.bad_param = Signal(name="bad_param")
        self.no_records = Signal(name="no_records")
        # The state, one register per consumer group, each written by ``_goto`` and kept apart
        # in synthesis, so no LUT of one group's decision is shared with another's and each
        # copy can sit by its loads:
        # - ``parser_state``: the data path's accept decision (the slice's held beat, the cores'
        #   input). Read from ``state``, whose loads spread over the device, it put 8.70 ns of
        #   routing between the state and the input slice (nextpnr seed 2).
        # - ``slice_state``: the input slice's valid flags (the parser's ``take_flags``). Read
        #   from ``parser_state``, their accept decision was the LUT that enables the held
        #   beat's hundreds of bits, placed among them, far from the flags (11.92 ns, 10.26 of
        #   it routing, nextpnr seed 1 of round 13).
        # - ``rec_state``: the parser's record registers, the decisions it sends here and this
        #   FSM. With ``parser_state`` the records' enable was a LUT of the cores' input valid,
        #   placed by the cores (10.52 ns, 9.05 of it routing), and the end of the batch came
        #   from the cores' ``last_word``, 46 rows from its registers and 59 from the FSM
        #   (12.37 ns, 10.41 of it routing, nextpnr seeds 2 and 1 of round 15).
        self._states = {n: Signal(3, name=f"{n}_reg", attrs={"keep": 1}) for n in self.STATE_COPIES}
        # The state is IDLE, a flag of its own: core_clr, which resets every core a cycle
        # later through a register beside each, is then one LUT from three flip-flops.
        self._is_idle = Signal(name="state_idle", init=1)
        # DRAIN's end condition, from registers only: every record taken has its result counted,
        # the result register and the varint path are empty, for two cycles running. The second
        # cycle stands in for "no core has a result this cycle": a lane's result valid, decoded
        # from ``op`` through the lanes' result mux, is the result register's input a cycle
        # later. Read directly, it was a routed path from ``op`` across the lanes to this
        # register (11.88 ns, nextpnr seed 2). ``drain_seen``: the condition held last cycle;
        # ``drained``: and this cycle too. Once true in DRAIN it stays true: no unit is taken
        # after RUN, so no result or value can follow. (DRAIN takes a cycle more per batch.)
        self.drain_seen = Signal(name="drain_seen")
        self.drained = Signal(name="drained")
        # The parser's varint decision reads no format: it relies on these taking SEQ only.
        if not set(decode.users("varint")) <= set(decode.of_kind("sequences")):
            raise ValueError("the varint encoder's operators must take sequences (SEQ) only")
        # The batch's format, one register per consumer (``fmt``: the parser's framing;
        # ``fmt_rec``: its record registers; ``fmt_ser``: the serialiser; ``fmt_lanes``: the
        # lanes), each loaded at START and kept apart in synthesis. One register fed all four
        # across the device: its framed bit, placed by the parser's record counter, reached the
        # state's enable through 9.31 ns of routing (88.9 MHz on ECP5, nextpnr seed 1).
        self._fmts = {n: Signal(self.FMT_WIDTH, name=f"{n}_reg", attrs={"keep": 1}) for n in self.FMT_COPIES}
        # Which cores the batch's operator goes through (bit k: decode.cores()[k]), decoded
        # from the OP register at START and kept apart (one equals is_delta): decoded from op
        # in the lanes, a core's input valid was 8.92 ns of routing from op (nextpnr seed 1).
        self._uses = Signal(len(decode.cores()), name="uses_reg", attrs={"keep": 1})

    def param_error(self, m: Module, r: dict[str, Signal]) -> Value:
        """The parameter registers ``r`` do not make a batch the engine runs (``BAD_PARAM``):
        an op code it does not run, a format or key type its operator does not take, a
        parameter out of the range the operator's entry accepts (:attr:`decode`), or more
        boundaries than the table holds. Over two register levels: each operator kind's
        decode, its formats' check, each parameter check and the boundary compare are
        registers (``bp_*``), which the returned value ors. In one cycle, the OP register
        through the decode to BAD_PARAM was eleven LUT levels (10.07 ns, nextpnr seed 3)."""
        rop, dec = r["OP"], self.decode

        def reg(v: Value, name: str) -> Signal:
            q = Signal(name=f"bp_{name}")
            m.d.sync += q.eq(v)
            return q

        of_kind = {kind: reg(op_in(rop, dec.of_kind(kind)), f"op_{kind}") for kind in dec.kinds()}
        fmt_ok = {kind: reg(_formats_ok(kind, r["FORMAT"], r["DTYPE"]), f"fmt_{kind}") for kind in of_kind}
        terms = [~any_of([op & fmt_ok[kind] for kind, op in of_kind.items()])]
        for i, ch in enumerate(dec.checks):
            regs = [r[n] for n in ch.registers]
            refused = ch.refused(regs[0] if len(regs) == 1 else Cat(*regs))
            if refused is not None:
                terms.append(reg(rop == ch.code, f"code{i}") & reg(refused, f"refused{i}"))
        if "numbers" in of_kind:  # the operators that read the boundary table
            terms.append(of_kind["numbers"] & reg(r["NUM_BOUNDARIES"] > self.table_depth, "nbound"))
        return any_of(terms)

    def elaborate(self, platform) -> Module:
        m = Module()
        m.d.comb += [
            self.status.eq(Cat(self.busy_out | (self.state != self.IDLE), self.done_flag, self.err != 0)),
            self.core_clr.eq(self.soft_reset | (self.start & self._is_idle)),
        ]
        m.d.sync += [
            self.bad_param.eq(self.param_error(m, self.params)),
            self.no_records.eq(self.params["COUNT"] == 0),
        ]
        m.d.comb += [getattr(self, n).eq(reg) for n, reg in self._fmts.items()]
        m.d.comb += [getattr(self, n).eq(reg) for n, reg in self._states.items()]
        m.d.comb += self.uses.eq(self._uses)
        with m.If(self.state != self.IDLE):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        quiet = Signal(name="drain_quiet")
        m.d.comb += quiet.eq(
            (self.state == self.DRAIN) & (self.done_count == self.recs_in) & ~self.dv_busy & ~self.resq_any
        )
        m.d.sync += [self.drain_seen.eq(quiet), self.drained.eq(self.drain_seen & quiet)]
        self._fsm(m)
        return m

    def _goto(self, state: Value | int) -> list:
        """The next state, in ``state``, in its copies and in the IDLE flag."""
        return [
            self.state.eq(state),
            *(reg.eq(state) for reg in self._states.values()),
            self._is_idle.eq(state == self.IDLE),
        ]

    def _fsm(self, m: Module) -> None:
        """The batch FSM."""
        with m.If(self.soft_reset):
            m.d.sync += [*self._goto(self.IDLE), self.err.eq(0)]
            m.d.comb += self.rec_clear.eq(1)
            if self.lanes > 1:
                m.d.comb += self.ser_clear.eq(1)
                m.d.sync += self.extra_pending.eq(0)
        with m.Else():
            with m.Switch(self._states["rec_state"]):
                with m.Case(self.IDLE):
                    self._idle(m)
                with m.Case(self.RUN):
                    self._run(m)
                with m.Case(self.DRAIN):
                    # Every complete record has its result in the FIFO and nothing is in flight
                    # (as of the previous two cycles, in DRAIN).
                    with m.If(self.drained):
                        m.d.sync += self._goto(self.ROLLBACK)
                with m.Case(self.ROLLBACK):
                    m.d.sync += self._goto(self.TRAIL)
                with m.Case(self.TRAIL):
                    self._trail(m)

    def _idle(self, m: Module) -> None:
        """IDLE: START loads the batch (or goes straight to the trailer: a bad parameter or
        no records); a beat on ``s_axis`` is discarded (``EXTRA_DATA``)."""
        r, N = self.params, self.lanes
        with m.If(self.start):
            m.d.comb += [self.rec_clear.eq(1), self.batch_start.eq(1)]
            m.d.sync += [
                self.op.eq(r["OP"]),
                # The parser's per-operator flags, decoded here from the register rather than
                # from ``op`` every cycle: op's decode was the engine's critical path (op to the
                # state's enable through seven LUTs, 82 MHz on ECP5).
                self.is_delta.eq(op_in(r["OP"], self.decode.users("varint"))),
                self.is_limited.eq(op_in(r["OP"], self.decode.users("cityfarm"))),
                self._uses.eq(Cat(*(op_in(r["OP"], self.decode.users(n)) for n in self.decode.cores()))),
                *(reg.eq(r["FORMAT"]) for reg in self._fmts.values()),
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
                *self._goto(Mux(self.bad_param | self.no_records, self.TRAIL, self.RUN)),
            ]
        with m.Elif(self.beat_acc):
            m.d.sync += self.err[ERR["EXTRA_DATA"]].eq(1)

    def _run(self, m: Module) -> None:
        """RUN: a beat accepted (its tkeep checked, its words held by the serialiser), a unit
        taken (the record tracked, the counters advanced, the batch's end or an error)."""
        with m.If(self.beat_acc):
            with m.If(self.bad_tkeep):
                m.d.sync += self.err[ERR["BAD_TKEEP"]].eq(1)
            m.d.comb += self.ser_load.eq(1)
        with m.If(self.uacc):
            m.d.comb += self.ser_advance.eq(1)
            with m.If(self.ends):
                self._count(m, self.n_rec)
            with m.If(self.bad_hdr):
                m.d.sync += [self.err[ERR["BAD_HEADER"]].eq(1), *self._goto(self.DRAIN)]
            with m.Elif(self.fin):
                with m.If(~self.ulast | self.extra):
                    m.d.sync += self.err[ERR["MISSING_TLAST"]].eq(1)
                if self.lanes > 1:
                    with m.If(self.extra):
                        m.d.sync += self.extra_pending.eq(1)
                m.d.sync += self._goto(self.DRAIN)
            with m.Elif(self.ulast):
                m.d.sync += [self.err[ERR["EARLY_TLAST"]].eq(1), *self._goto(self.DRAIN)]

    def _count(self, m: Module, n: Value) -> None:
        """Advance the record counters by ``n`` (1..N records, from registers): every candidate
        count is added in parallel and selected by ``n``. No candidate is the counter itself
        (n is never 0), so the counters' enable stays the caller's condition alone."""
        N, rem = self.lanes, self.rem
        ks = [1, *range(1, N + 1)]  # index 0 never happens: read as 1
        m.d.sync += [
            self.recs_in.eq(mux_index(n, [(self.recs_in + k)[:32] for k in ks])),
            rem.eq(mux_index(n, [(rem - k)[:32] for k in ks])),
            # rem - k > j is rem > j + k: rem >= n in RUN (rem >= 1, a framed unit completes
            # at most one record, lane j needs rem > j).
            self.rem_gt.eq(Cat(*(mux_index(n, [rem > j + k for k in ks]) for j in range(N + 1)))),
        ]

    def _trail(self, m: Module) -> None:
        """TRAIL: once the trailer is written (``write_trailer``: the FIFO writes it this cycle,
        at the earliest in TRAIL's second cycle), IDLE."""
        with m.If(self.write_trailer):
            m.d.sync += self._goto(self.IDLE)
            m.d.comb += self.rec_clear.eq(1)
            if self.lanes > 1:
                # Words of accepted beats after the batch's end: discarded now, after the
                # trailer (as the 64-bit engine discards them in IDLE).
                m.d.comb += self.ser_clear.eq(1)
                m.d.sync += self.extra_pending.eq(0)
                with m.If(self.hold | self.extra_pending):
                    m.d.sync += self.err[ERR["EXTRA_DATA"]].eq(1)
