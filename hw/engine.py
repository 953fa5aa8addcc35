"""The offload engine: AXI-Stream in/out + AXI-Lite registers around every operator core.

Implements ``docs/wire_format.md`` (version 1.0 plus the ``SEQ_MAX`` register, see there).

Ports (flat AXI names, so the Verilog wrapper ``rtl/offload_axi.v`` only renames the clock and
inverts the reset): ``s_axis_tdata[64*N-1:0] tkeep[8*N-1:0] tlast tvalid tready``, ``m_axis_*``
the same in the other direction, where ``N = lanes`` (1: the default 64-bit bus, the ports of
``rtl/offload_engine.v``; 2 or 4: a 128/256-bit bus carrying N consecutive 64-bit words per beat,
word ``j`` in bits ``64j+63..64j``); ``s_axi_aw*/w*/b*/ar*/r*`` an AXI4-Lite slave (8-bit byte
address; 32-bit data; ``wstrb`` is ignored: registers are written whole). Clock ``clk``,
synchronous active-high ``rst``.

Data path: ``s_axis`` enters a register slice (an input register and a two-entry skid buffer:
``s_axis_tready`` comes from two of its registers, and each word's header checks are computed
from the input register into the buffer), then a framing parser feeds the operator selected by
``OP`` (every core is a flow-through pipeline, see the cores' docstrings); results go into a
:class:`~offload.hw.fifo.CommitFIFO` that drives ``m_axis``. Flow control is by credit: a beat
is accepted only while the FIFO has room for everything that can still be in the pipelines
(:attr:`OffloadEngine.SLACK` words, derived from the instantiated cores' latencies), so cores
never stall and results are never lost under backpressure.

Lanes (``lanes = N``): ``FIXED8``/``FIXED4`` beats carry N records that go to N parallel lanes
(hash core + ``mod``/``fastrange``/``fid`` + ``bucketize`` per lane; lane 0 has the record cores
that also serve ``VAR``, lanes 1..N-1 the one-word cores of :mod:`offload.hw.lanes`, padded to
the same latency, so the N results of a beat reach the FIFO in the same cycle, in order).
``VAR``/``SEQ`` beats go through a serialiser that hands their words one per cycle to the
one-word parser of lane 0 (a beat of ``m`` words takes ``m`` cycles). The FIFO packs results
contiguously into N-word output beats; the trailer ends its beat (the words after it are zero with
``tkeep`` clear). How ``tkeep`` is read and checked: see ``docs/wire_format.md`` ("Words and
beats"). For ``lanes == 1`` the engine is the 64-bit engine of ``rtl/`` (same ports and cycle
behaviour).

Throughput with ``m_axis_tready`` held high: one input beat per cycle for the fixed formats
(N keys per cycle), one word per cycle for ``VAR``/``SEQ`` (``delta_varint_encode``: up to the
encoder's flush cycles per sequence). Latency from a record's last word on ``s_axis`` to its
result entering the FIFO: 3 cycles in the input slice plus the operator's core latency
(:attr:`OffloadEngine.latency` is the longest), plus 2
cycles to ``m_axis`` (plus the rest of its output beat for ``lanes > 1``).

Blocks (each in its own module, a ``wiring.Component`` whose signature is its whole interface,
with its ports, latency and reset in its docstring), the engine's submodules:
:class:`~offload.hw.regfile.RegisterFile` (AXI-Lite slave, parameter registers, command
strobes), :class:`~offload.hw.slicer.InputSlice` (the ``s_axis`` register slice),
:class:`~offload.hw.slicer.Serialiser` (a framed beat's words, one per cycle),
:class:`~offload.hw.parser.Parser` (accept decision, record framing),
:class:`~offload.hw.lanebank.LaneBank` (the cores of every lane, their enables, parameters and
input registers, the operator's results), :class:`~offload.hw.collector.Collector` (results,
trailer, FIFO, ``m_axis``, ``DONE_COUNT`` and the busy/done flags) and
:class:`~offload.hw.control.Control` (batch registers, ``BAD_PARAM``, the FSM, ``ERR``); the
control drives the others' registers through strobes (the serialiser's load/advance/clear, the
parser's record clear, the collector's batch start). Which op codes run and on which cores is
derived from the operator registry (:class:`~offload.hw.opdecode.OpDecode`).

Errors never deadlock: in the idle state ``s_axis_tready`` is 1 and words are discarded
(``EXTRA_DATA``); after an error the engine drains its pipelines (a bounded number of cycles,
independent of the input stream), sends the trailer and goes idle; words of an accepted beat
that follow the batch's end are discarded with ``EXTRA_DATA`` once the trailer is sent (so, as
on the 64-bit bus, that flag is in ``ERR`` but not in the trailer).

Reset: ``rst`` clears every control register (parameters to 0) and every pipeline's valid
bits; the pipelines' data registers are not reset (a stage's data is read only while its valid
bit is set, and a reset on ~40k datapath flip-flops would be one more high-fanout net).
``CTRL.SOFT_RESET`` aborts a batch, clears flags, empties the FIFO, the serialiser and the
pipelines (the boundary tables are kept).
``START`` while a batch runs is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable

from amaranth.hdl import Cat, Module
from amaranth.lib import wiring

from offload.engine_map import (
    BUILDS,
    DEFAULT_BUILD,
    DEFAULT_RECORD_MAX,
    ENGINE_ID,
    ENGINE_VERSION,
    ERR_BITS,
    NO_RECORD_MAX,
    OP_CODES,
    RECORD_LIMITED,
    REGISTERS,
    TRAILER_MAGIC,
)
from offload.ops import REGISTRY

from .collector import Collector, axis_out
from .common import ADDER_LEVELS, MULTIPLIERS, check_choice, check_pow2
from .control import Control
from .lanebank import LaneBank, city_farm_hashes, core_latencies, mod_core, mod_pad
from .opdecode import OpDecode
from .parser import Parser
from .regfile import AXI_LITE, RegisterFile
from .slicer import InputSlice, Serialiser, axis_in

__all__ = [
    "OffloadEngine",
    "REG",
    "ERR",
    "ENGINE_ID",
    "ENGINE_VERSION",
    "TRAILER_MAGIC",
    "LANES",
    "MODULO",
    "build_codes",
]

#: Register byte addresses and error bit positions (the engine map, docs/wire_format.md).
REG = REGISTERS
ERR = ERR_BITS

#: Bus widths built: 64-bit words per beat.
LANES = (1, 2, 4)
#: Cores of ``hash_bucket``'s ``mod`` method (the ``modulo`` parameter).
MODULO = ("reciprocal", "restoring")


def build_codes(operators: str | Iterable[str]) -> tuple[int, ...]:
    """The op codes of an engine build: ``operators`` names a build of
    :data:`~offload.engine_map.BUILDS`, or lists operator names (each with all its op codes)
    and op code names (keys of :data:`~offload.engine_map.OP_CODES`, one variant); exact
    ``ValueError`` otherwise."""
    if isinstance(operators, str):
        if operators not in BUILDS:
            raise ValueError(
                f"unknown engine build {operators!r}: expected one of {', '.join(map(repr, BUILDS))}"
            )
        return tuple(sorted(OP_CODES[k] for k in BUILDS[operators]))
    codes: set[int] = set()
    for name in operators:
        if name in OP_CODES:
            codes.add(OP_CODES[name])
        elif name in REGISTRY and REGISTRY[name].wire is not None:
            codes.update(REGISTRY[name].op_codes())
        elif name in REGISTRY:
            raise ValueError(f"operator {name!r} runs on the host only: the engine has no core for it")
        else:
            raise ValueError(f"unknown operator or op code {name!r}: expected one of {', '.join(OP_CODES)}")
    if not codes:
        raise ValueError("operators must name at least one operator")
    return tuple(sorted(codes))


class OffloadEngine(wiring.Component):
    """The engine top. Parameters:

    * ``table_depth``: bucketize boundary table entries, a power of two in [1, 4096];
    * ``fifo_depth``: output FIFO words, a power of two in [256, 65536], and large enough for
      :attr:`SLACK` (the smallest allowed depth is named in the error message); default 2048,
      or the smallest power of two above it that ``seq_max`` fits (a build with long paths);
    * ``seq_max``: largest ``delta_varint_encode`` sequence (values) accepted; a longer one is
      ``BAD_HEADER``. Its whole encoding, plus a partly filled output beat, must fit in the FIFO
      below the credit limit:
      ``lanes + 1 + ceil(10*seq_max/8) <= fifo_depth - SLACK - CREDIT_LAG``;
    * ``modulo``: the core of ``hash_bucket``'s ``mod`` method: ``"restoring"`` (the default:
      :class:`~offload.hw.postproc.ModPipe`, a quotient bit per stage, no DSP) or
      ``"reciprocal"`` (:class:`~offload.hw.postproc.ModReciprocal`, a reciprocal computed when
      the batch starts, then two multiplies on 26 DSP blocks, latency 13 instead of 65, a third
      of the logic; the engine built with it routed at 78 MHz on the ECP5, its paths into and
      out of the DSP blocks, against 99-106 MHz with the default, seeds 1-2);
    * ``mod_bits_per_stage``: quotient bits per stage of the ``"restoring"`` pipeline (1 or 2);
    * ``adder_levels``: adder levels per pipeline stage of the hash cores' constant multipliers
      (``offload.hw.common.ADDER_LEVELS``: 1, one carry chain per stage; 2, two, with about
      half the stages and registers; ``"csa"``, a carry-save level and one carry chain);
    * ``multipliers``: how the hash cores build those multipliers: ``"lut"`` (adder trees, what
      is synthesised) or ``"behavioural"`` (one ``*`` each, delayed to the same depth: the same
      cycles at every port and the same register map, for fast simulation only;
      ``rtl/offload_engine_sim.v``, see :mod:`offload.hw.export`);
    * ``lanes``: 64-bit words per AXI-Stream beat, 1, 2 or 4 (see the module docstring);
    * ``operators``: the engine's operator set, a build parameter (:func:`build_codes`): the
      name of a build of :data:`~offload.engine_map.BUILDS` (default ``"pynq-z2"``: every op
      code but FarmHash's and CityHash's; ``"full"``: every op code), or operator names and op
      code names. Only the cores the chosen op codes go through are built; the ``OPS``
      register lists the op codes, and a host sends the others elsewhere;
    * ``record_max``: the longest ``VAR`` record (bytes, 65..65536) of the FarmHash/CityHash
      op codes (:data:`~offload.engine_map.RECORD_LIMITED`), read back in ``RECORD_MAX``; a
      longer record's header is ``BAD_HEADER``. (``RECORD_MAX`` is ``0xFFFFFFFF`` in a build
      without them.)

    Attributes: :attr:`latency`, the longest core path (cycles from a record's last word to its
    result at the FIFO); :attr:`SLACK` = ``lanes * (latency + SLACK_MARGIN)``, the FIFO words
    kept free for results in flight (a beat yields at most ``lanes`` results).
    """

    #: Cycles of margin over the longest core path in :attr:`SLACK` (the accepting cycle, the
    #: credit check's view of the FIFO level, the varint encoder's buffered words and header).
    SLACK_MARGIN = 8
    #: Registers on every core path besides the cores' own: the core's input register and the
    #: result register in front of the FIFO.
    BOUNDARY = 2

    def __init__(
        self,
        *,
        table_depth: int = 256,
        fifo_depth: int | None = None,
        seq_max: int = 1024,
        mod_bits_per_stage: int = 1,
        lanes: int = 1,
        adder_levels: int | str = "csa",
        multipliers: str = "lut",
        modulo: str = "restoring",
        operators: str | Iterable[str] | None = None,
        record_max: int = DEFAULT_RECORD_MAX,
    ):
        self._MustUse__silence = True  # no UnusedElaboratable warning if rejected
        self.table_depth = check_pow2("table_depth", table_depth, 1, 4096)
        if fifo_depth is not None:
            check_pow2("fifo_depth", fifo_depth, 256, 65536)
        self.mod_bits_per_stage = check_choice("mod_bits_per_stage", mod_bits_per_stage, (1, 2))
        self.modulo = check_choice("modulo", modulo, MODULO)
        if modulo != "restoring" and mod_bits_per_stage != 1:
            raise ValueError(
                f"mod_bits_per_stage applies to modulo='restoring' only, not to modulo={modulo!r}"
            )
        self.adder_levels = check_choice("adder_levels", adder_levels, ADDER_LEVELS)
        self.multipliers = check_choice("multipliers", multipliers, MULTIPLIERS)
        self.lanes = check_choice("lanes", lanes, LANES)
        if not isinstance(record_max, int) or isinstance(record_max, bool) or not 64 < record_max <= 1 << 16:
            raise ValueError(f"record_max must be an int between 65 and 65536, not {record_max!r}")
        self.record_max = record_max
        #: The registry's op codes this engine is built for, as it decodes them (the registry
        #: is read now: an operator registered later is in the next engine built).
        self.decode = OpDecode(codes=build_codes(DEFAULT_BUILD if operators is None else operators))
        #: The operators it runs (some of their op codes at least), in registry order.
        self.operators = tuple(n for n, op in REGISTRY.items() if set(op.op_codes()) & set(self.decode.codes))
        #: ``RECORD_MAX``: the longest VAR record of the op codes with a record limit.
        self.record_limit = NO_RECORD_MAX if not self.decode.built("cityfarm") else record_max
        limited = {OP_CODES[k] for k in RECORD_LIMITED} & set(self.decode.codes)
        if limited != set(self.decode.users("cityfarm")):  # the map and the cores must agree
            raise AssertionError(f"RECORD_LIMITED {sorted(limited)} != users of cityfarm")
        # In-flight results: the longest path from the input to the FIFO, from the cores that
        # are built (their pipelines change depth with Fmax work; the credit follows), plus
        # the engine's registers at the cores' boundaries (see elaborate): one in front of
        # every core (so one between a core and the next on a path) and one before the FIFO.
        used = {c for path in self.decode.paths() for c in path} - {"varint"}
        hashes = city_farm_hashes(self.decode) if "cityfarm" in used else ("city", "farm")
        lat = core_latencies(used, adder_levels, modulo, mod_bits_per_stage, table_depth, record_max, hashes)
        lat["varint"] = 0  # the encoder's words are in SLACK_MARGIN
        mod = mod_core(modulo, mod_bits_per_stage, "lut")
        mod._MustUse__silence = True

        def path_latency(path: tuple[str, ...]) -> int:
            pads = sum(mod_pad(mod, lat[a]) for a, b in zip(path, path[1:]) if b == "mod")
            return sum(lat[c] for c in path) + len(path) - 1 + pads

        self.latency = self.BOUNDARY + max(path_latency(p) for p in self.decode.paths())
        self.SLACK = lanes * (self.latency + self.SLACK_MARGIN)
        #: FIFO words one cycle can add (N results, or a sequence's header slot and first word):
        #: the credit is a register (the FIFO level a cycle ago), so it stops this much earlier.
        self.CREDIT_LAG = max(lanes, 2)

        def limit_of(depth: int) -> int:
            # A sequence's words, its header slot and a partly filled output row (lanes - 1)
            # must fit below the credit limit, or the FIFO could never make room for its last
            # value.
            return (depth - self.SLACK - self.CREDIT_LAG - lanes - 1) * 8 // 10

        lo = 256
        while limit_of(lo) < 1:
            lo *= 2
        if fifo_depth is None:  # 2048, or as deep as the longest path and seq_max need
            fifo_depth = max(2048, lo)
            while fifo_depth < 65536 and isinstance(seq_max, int) and limit_of(fifo_depth) < seq_max:
                fifo_depth *= 2
        self.fifo_depth = fifo_depth
        if fifo_depth < lo:
            raise ValueError(f"fifo_depth must be a power of two between {lo} and 65536, not {fifo_depth!r}")
        limit = limit_of(fifo_depth)
        if not isinstance(seq_max, int) or isinstance(seq_max, bool) or seq_max < 1 or seq_max > limit:
            raise ValueError(
                f"seq_max must be between 1 and {limit} for fifo_depth {fifo_depth}, not {seq_max!r}"
            )
        self.seq_max = seq_max
        self._MustUse__silence = False
        self.caps = table_depth | (lanes << 16) | ((8 * lanes) << 24)
        self.ops_mask = self.decode.ops_mask
        super().__init__({**axis_in(lanes), **axis_out(lanes), **AXI_LITE})

    def elaborate(self, platform):
        """The blocks (see the module docstring), each a submodule, and their connections."""
        m = Module()
        m.submodules.regfile = regs = RegisterFile(
            table_depth=self.table_depth,
            caps=self.caps,
            ops_mask=self.ops_mask,
            seq_max=self.seq_max,
            record_max=self.record_limit,
        )
        m.submodules.slice = sl = InputSlice(self.lanes, self.seq_max, self.record_limit)
        m.submodules.serialiser = ser = Serialiser(self.lanes, len(sl.beat))
        m.submodules.control = ctl = Control(self.lanes, self.table_depth, self.decode)
        m.submodules.lanebank = lanes = LaneBank(self, self.decode)
        m.submodules.collector = coll = Collector(self.lanes, self.fifo_depth)
        m.submodules.parser = parser = Parser(
            self.lanes,
            self.fifo_depth - self.SLACK - self.CREDIT_LAG,
            fifo_level_width=len(coll.level),
            nw_width=len(sl.nw),
        )
        self._connect(m, regs, AXI_LITE)
        self._connect(m, sl, axis_in(self.lanes))
        self._connect(m, coll, axis_out(self.lanes))
        m.d.comb += [
            regs.status.eq(ctl.status),
            regs.err.eq(ctl.err),
            regs.done_count.eq(coll.done_count),
            regs.cycles.eq(ctl.cycles),
            sl.soft_reset.eq(regs.soft_reset),
            sl.take.eq(parser.take),
            sl.take_flags.eq(parser.take_flags),
            ser.beat.eq(sl.beat),
            ser.valid.eq(sl.valid),
            ser.framed.eq(ctl.fmt_ser[1]),
            ser.load.eq(ctl.ser_load),
            ser.advance.eq(ctl.ser_advance),
            ser.clear.eq(ctl.ser_clear),
        ]
        self._control(m, ctl, regs, sl, ser, parser, coll, lanes)
        self._parser(m, parser, ctl, sl, ser, coll, lanes)
        self._lanes(m, lanes, ctl, regs, sl, ser, parser)
        m.d.comb += [
            coll.res_valid.eq(lanes.res_valid),
            coll.res_data.eq(lanes.res_data),
            coll.res_kind.eq(lanes.res_kind),
            coll.state.eq(ctl.state),
            coll.err.eq(ctl.err),
            coll.core_clr.eq(ctl.core_clr),
            coll.core_rst.eq(lanes.core_rst),
            coll.soft_reset.eq(regs.soft_reset),
            coll.batch_start.eq(ctl.batch_start),
        ]
        return m

    @staticmethod
    def _control(m: Module, ctl, regs, sl, ser, parser, coll, lanes) -> None:
        """The control's inputs: the register file's strobes and parameters, the decisions of
        the slice, serialiser and parser, the collector's state and the lanes' results."""
        m.d.comb += [
            ctl.start.eq(regs.start),
            ctl.soft_reset.eq(regs.soft_reset),
            *(ctl.params[n].eq(regs.params[n]) for n in ctl.params),
            ctl.bad_tkeep.eq(sl.bad_tkeep),
            ctl.ulast.eq(ser.ulast),
            ctl.hold.eq(ser.hold),
            *(
                getattr(ctl, n).eq(getattr(parser, n))
                for n in ("beat_acc", "bad_hdr", "fin", "extra", "ends", "n_rec")
            ),
            ctl.uacc.eq(parser.rec_uacc),
            *(
                getattr(ctl, n).eq(getattr(coll, n))
                for n in ("write_trailer", "done_count", "resq_any", "busy_out", "done_flag")
            ),
            ctl.dv_busy.eq(lanes.dv_busy),
        ]

    def _parser(self, m: Module, parser, ctl, sl, ser, coll, lanes) -> None:
        """The parser's inputs: the control's batch, the slice's beat, the serialiser's word,
        the FIFO's level and the varint input's room."""
        m.d.comb += [
            parser.state.eq(ctl.parser_state),
            parser.slice_state.eq(ctl.slice_state),
            parser.rec_state.eq(ctl.rec_state),
            parser.fmt.eq(ctl.fmt),
            parser.fmt_rec.eq(ctl.fmt_rec),
            parser.is_delta.eq(ctl.is_delta),
            parser.is_limited.eq(ctl.is_limited),
            parser.rem_gt.eq(ctl.rem_gt),
            parser.rec_clear.eq(ctl.rec_clear),
            parser.valid.eq(sl.valid),
            parser.nw.eq(sl.nw),
            parser.hold.eq(ser.hold),
            parser.xw.eq(ser.xw),
            parser.wvalid.eq(ser.wvalid),
            parser.fifo_level.eq(coll.level),
            parser.dv_room.eq(lanes.dv_room),
        ]

    @staticmethod
    def _lanes(m: Module, lanes, ctl, regs, sl, ser, parser) -> None:
        """The lanes' inputs: the control's batch registers, the boundary table's write, the
        parser's unit and the words it carries."""
        m.d.comb += [
            *(
                getattr(lanes, n).eq(getattr(ctl, n))
                for n in ("op", "dtype", "seed", "nbuckets", "slot", "nbound", "core_clr")
            ),
            lanes.fmt.eq(ctl.fmt_lanes),
            lanes.op_uses.eq(ctl.uses),
            lanes.table_addr.eq(regs.params["TABLE_ADDR"]),
            lanes.table_data_lo.eq(regs.params["TABLE_DATA_LO"]),
            lanes.wdata.eq(regs.wdata),
            lanes.table_we.eq(regs.table_we),
            lanes.w.eq(ser.w),
            lanes.words.eq(Cat(*sl.words)),
            *(
                getattr(lanes, n).eq(getattr(parser, n))
                for n in (
                    "core_valid",
                    "lane_on",
                    "beat_first",
                    "last_word",
                    "empty_rec",
                    "beat_len",
                    "uacc",
                    "needs_dv",
                    "dv_first",
                )
            ),
        ]

    def _connect(self, m: Module, sub: wiring.Component, ports: dict) -> None:
        """Connect the engine's ``ports`` to the submodule ``sub``'s ports of the same names
        and directions."""
        for name, member in ports.items():
            outer, inner = getattr(self, name), getattr(sub, name)
            m.d.comb += inner.eq(outer) if member.flow == wiring.In else outer.eq(inner)
