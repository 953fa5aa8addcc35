"""The offload engine: AXI-Stream in/out + AXI-Lite registers around every operator core.

Implements ``docs/wire_format.md`` (version 1.0 plus the ``SEQ_MAX`` register, see there).

Ports (flat AXI names, so the Verilog wrapper ``rtl/offload_axi.v`` only renames the clock and
inverts the reset): ``s_axis_tdata[64*N-1:0] tkeep[8*N-1:0] tlast tvalid tready``, ``m_axis_*``
the same in the other direction, where ``N = lanes`` (1: the default 64-bit bus, the ports of
``rtl/offload_engine.v``; 2 or 4: a 128/256-bit bus carrying N consecutive 64-bit words per beat,
word ``j`` in bits ``64j+63..64j``); ``s_axi_aw*/w*/b*/ar*/r*`` an AXI4-Lite slave (8-bit byte
address; 32-bit data; ``wstrb`` is ignored: registers are written whole). Clock ``clk``,
synchronous active-high ``rst``.

Data path: ``s_axis`` enters a register slice (a two-entry skid buffer: ``s_axis_tready`` is a
register, and each word's header checks are computed on the way in), then a framing parser feeds
the operator selected by ``OP`` (every core is a flow-through
pipeline, see the cores' docstrings); results go into a :class:`~offload.hw.fifo.CommitFIFO`
that drives ``m_axis``. Flow control is by credit: a beat is accepted only while the FIFO has
room for everything that can still be in the pipelines (:attr:`OffloadEngine.SLACK` words,
derived from the instantiated cores' latencies), so cores never stall and results are never lost
under backpressure.

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
result entering the FIFO: 1 cycle in the input slice plus the operator's core latency
(:attr:`OffloadEngine.latency` is the longest), plus 2
cycles to ``m_axis`` (plus the rest of its output beat for ``lanes > 1``).

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

from amaranth.hdl import Cat, Const, EnableInserter, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from offload.engine_map import (ENGINE_ID, ENGINE_VERSION, ERR_BITS, FORMATS, OP_CODES, REGISTERS,
                                TRAILER_MAGIC)

from .bucketize import Bucketize
from .common import ADDER_LEVELS, MULTIPLIERS, check_choice, check_pow2, mux_index
from .fifo import SEQ_DATA, SEQ_HEADER, TRAILER, CommitFIFO
from .lanes import XXH32Lane, XXH64Lane
from .postproc import FastRange, FidCore, ModPipe, ModReciprocal
from .varint import DeltaVarintEncoder
from .xxhash import XXH32Core, XXH64Core

__all__ = ["OffloadEngine", "REG", "ERR", "ENGINE_ID", "ENGINE_VERSION", "TRAILER_MAGIC", "LANES",
           "MODULO"]

#: Register byte addresses and error bit positions (the engine map, docs/wire_format.md).
REG = REGISTERS
ERR = ERR_BITS

FIXED8, FIXED4, VAR, SEQ = (FORMATS[k] for k in ("FIXED8", "FIXED4", "VAR", "SEQ"))
OPS_BUILT = tuple(sorted(OP_CODES.values()))
#: Bus widths built: 64-bit words per beat.
LANES = (1, 2, 4)
#: Cores of ``hash_bucket``'s ``mod`` method (the ``modulo`` parameter).
MODULO = ("reciprocal", "restoring")


def _latency(core) -> int:
    """``core.latency`` of a core instantiated only to read it (no UnusedElaboratable warning)."""
    core._MustUse__silence = True
    return core.latency


class OffloadEngine(wiring.Component):
    """The engine top. Parameters:

    * ``table_depth``: bucketize boundary table entries, a power of two in [1, 4096];
    * ``fifo_depth``: output FIFO words, a power of two in [256, 65536], and large enough for
      :attr:`SLACK` (the smallest allowed depth is named in the error message);
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
    * ``lanes``: 64-bit words per AXI-Stream beat, 1, 2 or 4 (see the module docstring).

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

    def __init__(self, *, table_depth: int = 256, fifo_depth: int = 2048, seq_max: int = 1024,
                 mod_bits_per_stage: int = 1, lanes: int = 1, adder_levels: int | str = "csa",
                 multipliers: str = "lut", modulo: str = "restoring"):
        self._MustUse__silence = True      # no UnusedElaboratable warning if rejected
        self.table_depth = check_pow2("table_depth", table_depth, 1, 4096)
        self.fifo_depth = check_pow2("fifo_depth", fifo_depth, 256, 65536)
        self.mod_bits_per_stage = check_choice("mod_bits_per_stage", mod_bits_per_stage, (1, 2))
        self.modulo = check_choice("modulo", modulo, MODULO)
        if modulo != "restoring" and mod_bits_per_stage != 1:
            raise ValueError(f"mod_bits_per_stage applies to modulo='restoring' only, not to "
                             f"modulo={modulo!r}")
        self.adder_levels = check_choice("adder_levels", adder_levels, ADDER_LEVELS)
        self.multipliers = check_choice("multipliers", multipliers, MULTIPLIERS)
        self.lanes = check_choice("lanes", lanes, LANES)
        # In-flight results: the longest path from the input to the FIFO, from the cores that
        # are built (their pipelines change depth with Fmax work; the credit follows).
        hash_post = max(_latency(self._mod_core("lut")), _latency(FastRange()),
                        _latency(FidCore()))
        # Plus the engine's registers at the cores' boundaries (see elaborate): one in front
        # of every core, one between the hash and its post-processing, one before the FIFO.
        self.latency = self.BOUNDARY + max(
            _latency(XXH64Core(adder_levels)) + 1 + hash_post,
            _latency(XXH32Core(adder_levels)), _latency(Bucketize(table_depth)))
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
        if fifo_depth < lo:
            raise ValueError(f"fifo_depth must be a power of two between {lo} and 65536, "
                             f"not {fifo_depth!r}")
        limit = limit_of(fifo_depth)
        if (not isinstance(seq_max, int) or isinstance(seq_max, bool) or seq_max < 1
                or seq_max > limit):
            raise ValueError(f"seq_max must be between 1 and {limit} for fifo_depth {fifo_depth}, "
                             f"not {seq_max!r}")
        self.seq_max = seq_max
        self._MustUse__silence = False
        self.caps = table_depth | (lanes << 16) | ((8 * lanes) << 24)
        self.ops_mask = sum(1 << k for k in OPS_BUILT)
        bus = 64 * lanes
        super().__init__({
            "s_axis_tdata": In(bus), "s_axis_tkeep": In(bus // 8), "s_axis_tlast": In(1),
            "s_axis_tvalid": In(1), "s_axis_tready": Out(1),
            "m_axis_tdata": Out(bus), "m_axis_tkeep": Out(bus // 8), "m_axis_tlast": Out(1),
            "m_axis_tvalid": Out(1), "m_axis_tready": In(1),
            "s_axi_awaddr": In(8), "s_axi_awvalid": In(1), "s_axi_awready": Out(1),
            "s_axi_wdata": In(32), "s_axi_wstrb": In(4), "s_axi_wvalid": In(1),
            "s_axi_wready": Out(1),
            "s_axi_bresp": Out(2), "s_axi_bvalid": Out(1), "s_axi_bready": In(1),
            "s_axi_araddr": In(8), "s_axi_arvalid": In(1), "s_axi_arready": Out(1),
            "s_axi_rdata": Out(32), "s_axi_rresp": Out(2), "s_axi_rvalid": Out(1),
            "s_axi_rready": In(1),
        })

    def _mod_core(self, multipliers: str):
        if self.modulo == "restoring":
            return ModPipe(self.mod_bits_per_stage, multipliers)
        return ModReciprocal(multipliers)

    def elaborate(self, platform):
        m = Module()

        # ---------------------------------------------------------------- host registers
        r = {n: Signal(32, name=f"reg_{n.lower()}") for n in (
            "OP", "FORMAT", "DTYPE", "COUNT", "SEED_LO", "SEED_HI", "NUM_BUCKETS_LO",
            "NUM_BUCKETS_HI", "SLOT", "NUM_BOUNDARIES", "TABLE_ADDR", "TABLE_DATA_LO")}
        err = Signal(6)
        done_flag = Signal()
        busy_out = Signal()             # set at START, cleared when the trailer leaves m_axis
        done_count = Signal(32)
        cycles = Signal(64)

        # ---------------------------------------------------------------- AXI-Lite slave
        bvalid, rvalid = Signal(), Signal()
        rdata = Signal(32)
        wr_en = Signal()
        # A write is taken into registers and applied in the next cycle, then answered: its
        # effects (START, SOFT_RESET, a table write, the parameters) start at registers, not
        # at a decode of the bus (which fanned out to hundreds of flip-flops).
        wr_q = Signal()
        wr_idx = Signal(6, reset_less=True)
        wdata = Signal(32, reset_less=True)
        m.d.sync += wr_q.eq(wr_en)
        with m.If(wr_en):
            m.d.sync += [wr_idx.eq(self.s_axi_awaddr[2:8]), wdata.eq(self.s_axi_wdata)]
        m.d.comb += [
            wr_en.eq(self.s_axi_awvalid & self.s_axi_wvalid & ~bvalid & ~wr_q),
            self.s_axi_awready.eq(wr_en), self.s_axi_wready.eq(wr_en),
            self.s_axi_bvalid.eq(bvalid), self.s_axi_bresp.eq(0),
            self.s_axi_arready.eq(~rvalid),
            self.s_axi_rvalid.eq(rvalid), self.s_axi_rdata.eq(rdata), self.s_axi_rresp.eq(0),
        ]
        with m.If(wr_q):
            m.d.sync += bvalid.eq(1)
        with m.Elif(self.s_axi_bready):
            m.d.sync += bvalid.eq(0)
        # START, SOFT_RESET and a table write are flip-flops, decoded from the bus when the
        # write is taken (they reach the whole engine; a decode in front of them was the longest
        # routed path).
        start = Signal()
        soft_reset = Signal()
        table_we = Signal()
        bus_idx, bus_data = self.s_axi_awaddr[2:8], self.s_axi_wdata
        m.d.sync += [
            start.eq(wr_en & (bus_idx == REG["CTRL"] >> 2) & bus_data[0] & ~bus_data[1]),
            soft_reset.eq(wr_en & (bus_idx == REG["CTRL"] >> 2) & bus_data[1]),
            # TABLE_ADDR is not being written now: writes are at least 3 cycles apart
            table_we.eq(wr_en & (bus_idx == REG["TABLE_DATA_HI"] >> 2)
                        & (r["TABLE_ADDR"] < self.table_depth)),
        ]
        with m.If(wr_q):
            with m.Switch(wr_idx):
                for name, sig in r.items():
                    with m.Case(REG[name] >> 2):
                        m.d.sync += sig.eq(wdata)
                with m.Case(REG["TABLE_DATA_HI"] >> 2):
                    m.d.sync += r["TABLE_ADDR"].eq(r["TABLE_ADDR"] + 1)

        # ---------------------------------------------------------------- batch state
        IDLE, RUN, DRAIN, ROLLBACK, TRAIL = range(5)
        state = Signal(3)
        op, fmt, dtype = Signal(4), Signal(2), Signal(2)
        seed = Signal(64)
        nbuckets = Signal(64)
        slot = Signal(16)
        nbound = Signal(13)

        status = Cat(busy_out | (state != IDLE), done_flag, err != 0)
        read_map = {
            "ID": Const(ENGINE_ID, 32), "VERSION": Const(ENGINE_VERSION, 32), "STATUS": status,
            "ERR": err, "DONE_COUNT": done_count, "CAPS": Const(self.caps, 32),
            "CYCLES_LO": cycles[:32], "CYCLES_HI": cycles[32:], "OPS": Const(self.ops_mask, 32),
            "SEQ_MAX": Const(self.seq_max, 32),
            **{n: s for n, s in r.items() if n != "TABLE_DATA_LO"},
        }
        with m.If(self.s_axi_arvalid & ~rvalid):
            m.d.sync += rvalid.eq(1)
            with m.Switch(self.s_axi_araddr[2:8]):
                for name, val in read_map.items():
                    with m.Case(REG[name] >> 2):
                        m.d.sync += rdata.eq(val)
                with m.Default():
                    m.d.sync += rdata.eq(0)
        with m.Elif(self.s_axi_rready):
            m.d.sync += rvalid.eq(0)

        # ---------------------------------------------------------------- cores
        N = self.lanes
        core_clr = Signal()
        core_rst = Signal()
        m.d.sync += core_rst.eq(core_clr)
        framed = fmt[1]                                  # VAR or SEQ (lane 0 only)
        fixed = ~framed
        mul = self.multipliers
        x64, x32 = XXH64Core(self.adder_levels, mul), XXH32Core(self.adder_levels, mul)
        h64 = [x64] + [XXH64Lane(x64.latency, self.adder_levels, mul) for _ in range(1, N)]
        h32 = [x32] + [XXH32Lane(x32.latency, self.adder_levels, mul) for _ in range(1, N)]
        mods = [self._mod_core(mul) for _ in range(N)]
        # ModReciprocal needs num_buckets stable ``setup`` cycles before its first value. Its
        # copy (nb_mod below) changes the cycle after START's, two cycles after START; the
        # first word the parser takes (in START's next cycle) reaches the mod core through its
        # input register, XXH64Core and the register between them: x64.latency + 1 cycles
        # after nb_mod changed. (The cores' reset, a cycle after START, restarts the
        # reciprocal too, earlier than that.)
        if isinstance(mods[0], ModReciprocal) and mods[0].setup > x64.latency + 1:
            raise AssertionError(f"ModReciprocal.setup ({mods[0].setup}) exceeds the hash "
                                 f"pipeline in front of it ({x64.latency + 1} cycles)")
        frs = [FastRange(mul) for _ in range(N)]
        fids = [FidCore() for _ in range(N)]
        bzs = [Bucketize(self.table_depth, mul) for _ in range(N)]
        dv = DeltaVarintEncoder()
        fifo = CommitFIFO(self.fifo_depth, N)
        # core_clr (START, SOFT_RESET) resets every core; in the pipelines that clears the valid
        # bits only (``Pipe`` registers and the cores' data registers are reset-less), so the
        # reset reaches a few hundred flip-flops, not the whole datapath. It reaches them a
        # cycle later, from a register (core_rst): as a decode of the AXI-Lite write it was the
        # engine's longest path (routing to every core). The varint encoder keeps core_clr
        # itself (as does its input skid buffer); the cores' inputs come through
        # registers that core_clr clears, and their outputs are ignored while core_rst is set,
        # so nothing from before the reset gets through in that cycle. In the behavioural
        # (simulation) flavour a
        # core also only advances while the current OP uses it, so a cycle-based simulator does
        # not recompute idle pipelines every cycle; the others hold their cleared state and
        # their outputs are not selected, so the ports see the same thing in both flavours. The
        # LUT flavour (synthesised) has no such enable: it would be one clock-enable net to
        # every datapath flip-flop (~40k loads). Lanes 1..N-1 only run for the fixed formats.
        # Boundary table writes always reach every lane's bucketize.
        is_bz = (op == 7) | (op == 8)
        uses = {
            "xxh64": (op >= 2) & (op <= 6), "xxh32": op == 1, "mod": op == 3,
            "fastrange": op == 4, "fid": (op == 5) | (op == 6),
        }
        for j in range(N):
            sfx = "" if j == 0 else f"_l{j}"
            lane_cores = (("xxh64", h64[j]), ("xxh32", h32[j]), ("mod", mods[j]),
                          ("fastrange", frs[j]), ("fid", fids[j]))
            for name, core in lane_cores + (("bucketize", bzs[j]),):
                use = (is_bz | table_we) if name == "bucketize" else uses[name]
                if mul == "behavioural":
                    core_en = Signal(name=f"{name}{sfx}_en")
                    m.d.comb += core_en.eq(core_rst | (use if j == 0 or name == "bucketize"
                                                       else use & fixed))
                    core = EnableInserter(core_en)(core)
                m.submodules[name + sfx] = ResetInserter(core_rst)(core)
        dv_en = Signal(name="varint_en")
        m.d.comb += dv_en.eq(core_clr | (op == 9))
        m.submodules.varint = ResetInserter(core_clr)(EnableInserter(dv_en)(dv))
        m.submodules.fifo = ResetInserter(soft_reset)(fifo)
        # Each post core gets a copy of num_buckets of its own, loaded only while the batch's
        # operator uses that core (a static enable, as the cores' inputs have). Both cores
        # register the port; fed by one signal, synthesis merged the two copies, and the merged
        # register, placed by ModPipe, fed FastRange's multipliers across the device (11.72 ns,
        # nextpnr seed 2). The copies are a cycle behind START; the first value reaches either
        # core behind the whole hash pipeline.
        nb_mod = Signal(64, name="mod_num_buckets", reset_less=True)
        nb_fr = Signal(64, name="fastrange_num_buckets", reset_less=True)
        with m.If(uses["mod"]):
            m.d.sync += nb_mod.eq(nbuckets)
        with m.If(uses["fastrange"]):
            m.d.sync += nb_fr.eq(nbuckets)
        for j in range(N):
            m.d.comb += [
                h64[j].seed.eq(seed), h32[j].seed.eq(seed[:32]),
                mods[j].num_buckets.eq(nb_mod), frs[j].num_buckets.eq(nb_fr),
                fids[j].slot.eq(slot), fids[j].version.eq(Mux(op == 5, 1, 2)),
                bzs[j].dtype.eq(dtype), bzs[j].right.eq(op == 7), bzs[j].num_boundaries.eq(nbound),
                bzs[j].table_addr.eq(r["TABLE_ADDR"]), bzs[j].table_we.eq(table_we),
                bzs[j].table_data.eq(Cat(r["TABLE_DATA_LO"], wdata)),
            ]
            if j:
                m.d.comb += [h64[j].key8.eq(fmt == FIXED8), h32[j].key8.eq(fmt == FIXED8)]

        # ---------------------------------------------------------------- input slice
        # A register slice (two-entry skid buffer) between s_axis and the parser: s_axis_tready
        # is a register (no path from the bus through the parser back to the bus), and the
        # header checks of every word are computed on the way in and registered with it, so the
        # parser's accept decision, which fans out to the cores and every counter, starts at
        # registers. It costs one cycle of latency, not throughput (a beat per cycle).
        # Per word: its data and the checks the parser makes when the word is a header.
        def checks(x):
            ln = x[:32]
            return Cat(x,
                       x == 0,                                   # zero: a 0-byte record
                       x[32:] != 0,                              # bad header (upper half)
                       ln > self.seq_max,                        # bad SEQ header (too long)
                       ln == 1,                                  # SEQ: one word
                       (ln != 0) & (ln <= 8))                    # VAR: one word
        XW = 64 + 5
        bus_words = [self.s_axis_tdata.word_select(j, 64) for j in range(N)]
        tkeep_in = self.s_axis_tkeep
        # Words carried by a beat: up to the highest word whose tkeep bits are not all clear
        # (at least 1); the beat is well-formed when tkeep is exactly those words' bits.
        nw_in = Const(1, range(N + 1))
        canon = Const(0xFF, 8 * N)
        for j in range(1, N):
            grp = tkeep_in[8 * j:8 * j + 8].any()
            nw_in = Mux(grp, j + 1, nw_in)
            canon = Mux(grp, (1 << 8 * (j + 1)) - 1, canon)
        in_beat = Cat(*(checks(x) for x in bus_words), self.s_axis_tlast, tkeep_in != canon,
                      nw_in)
        main = Signal(len(in_beat), name="slice_main", reset_less=True)
        skid = Signal(len(in_beat), name="slice_skid", reset_less=True)
        main_v, skid_v = Signal(name="slice_main_valid"), Signal(name="slice_skid_valid")
        take = Signal()                                  # the parser takes the main beat
        m.d.comb += self.s_axis_tready.eq(~skid_v)
        in_fire = self.s_axis_tvalid & ~skid_v
        with m.If(soft_reset):
            # Abort: beats already taken from the bus are dropped with the batch.
            m.d.sync += [main_v.eq(0), skid_v.eq(0)]
        with m.Elif(take | ~main_v):
            m.d.sync += [main.eq(Mux(skid_v, skid, in_beat)), main_v.eq(skid_v | in_fire),
                         skid_v.eq(0)]
        with m.Elif(in_fire):
            m.d.sync += [skid.eq(in_beat), skid_v.eq(1)]
        xwords = [main.word_select(j, XW) for j in range(N)]
        words = [x[:64] for x in xwords]
        tlast = main[XW * N]
        bad_tkeep = main[XW * N + 1]
        nw = main[XW * N + 2:]
        tvalid = main_v

        # Serialiser (VAR/SEQ, lanes > 1): a beat's word 0 goes to the parser straight from the
        # slice; its words 1..nw-1 are held and handed over one per cycle (the slice waits).
        if N == 1:
            hold = Const(0)
            xw, wlast, wvalid = xwords[0], tlast, tvalid
        else:
            hold = Signal()
            left = Signal(range(N))                      # held words still to hand over
            buf = Signal(XW * (N - 1))
            btl = Signal()
            xw = Mux(hold, buf[:XW], xwords[0])
            wlast = Mux(hold, btl & (left == 1), tlast & (nw == 1))
            wvalid = hold | tvalid
        w = xw[:64]
        w_zero, w_hi, w_long, w_one, w_le8 = (xw[64 + k] for k in range(5))
        ulast = Mux(framed, wlast, tlast)                # tlast of the unit the parser takes

        # ---------------------------------------------------------------- parser
        in_rec = Signal()
        first_word = Signal()
        remaining = Signal(32)
        rec_len = Signal(32)
        recs_in = Signal(32)
        rem = Signal(32)                                 # records still to come (COUNT - recs_in)
        # rem compared with 0..N, kept with rem (rem_gt[j] == rem > j): the end-of-batch and
        # lane decisions read one register bit instead of a 32-bit compare (in a fixed batch's
        # decision ``rem <= nw`` fed the state's enable, a routed critical path).
        rem_gt = Signal(N + 1, name="rem_gt")
        extra_pending = Signal()                         # words of an accepted beat after the end
        # Registered: the FIFO level is a subtraction of its pointers, and the credit gates the
        # whole input decision (tready, the cores' valid, the record counters). A cycle-old level
        # is safe with CREDIT_LAG words of margin (a cycle adds at most that many words).
        credit = Signal()
        m.d.sync += credit.eq(fifo.level < (self.fifo_depth - self.SLACK - self.CREDIT_LAG))
        is_delta = op == 9
        hdr = framed & ~in_rec
        hdr_len = w[:32]
        bad_hdr = hdr & (w_hi | ((fmt == SEQ) & w_long))
        # A header of length 0 (an all-zero word: never bad, as seq_max >= 1).
        empty_rec = hdr & w_zero
        send = ~hdr | empty_rec                          # this word goes into a core
        needs_dv = is_delta & send
        # Registered: the record's next word is its last (remaining == 1), kept with remaining.
        rem_last = Signal()
        dv_room = Signal()                               # the varint skid buffer has room
        dv_busy = Signal()                               # a value in the varint path
        unit_ready = Signal()
        tready = Signal()
        beat_acc = Signal()                              # a bus beat is accepted
        uacc = Signal()                                  # the parser takes a word / fixed beat
        m.d.comb += [
            unit_ready.eq(credit & (dv_room | ~needs_dv)),
            tready.eq(Mux(state == IDLE, 1, (state == RUN) & unit_ready & ~hold)),
            take.eq(tready),
            beat_acc.eq(tvalid & tready),
            uacc.eq((state == RUN) & wvalid & unit_ready),
        ]
        last_word = Mux(hdr, empty_rec, rem_last)
        complete = uacc & send & (~framed | last_word)
        beat_first = Mux(framed, Mux(hdr, 1, first_word), 1)
        beat_len = Mux(framed, Mux(hdr, 0, rec_len), Mux(fmt == FIXED8, 8, 4))
        core_valid = uacc & send
        # Fixed formats: lane j takes word j when the beat carries it and a record is left for it.
        lane_on = [Const(1)] + [fixed & (nw > j) & rem_gt[j] for j in range(1, N)]
        n_fixed = sum(lane_on[1:], Const(1, range(N + 1)))
        n_in = Mux(framed, complete, n_fixed)            # records completed by this unit
        # Every core's input goes through a register of its own, placed by the tools next to the
        # core: the cores are large and spread over the device, and a path from the parser's
        # registers across it into a core's first adder stage was the engine's longest (routing
        # ~80 % of it). The data register loads only while the batch's operator uses the core
        # (a static enable), which also keeps the copies distinct (not merged by synthesis).
        use_x64, use_x32, use_bz = uses["xxh64"], uses["xxh32"], is_bz

        def feed(name: str, port, valid, payload, use, after_core: bool = False) -> None:
            # Cleared by core_clr; behind a core (after_core) also while core_rst still lets
            # the core's output from before the reset out. (The parser may hand over a batch's
            # first word while core_rst is set: the core's reset does not reach this register.)
            v = Signal(name=f"{name}_in_valid")
            d = Signal.like(port.payload, name=f"{name}_in_data", reset_less=True)
            m.d.sync += v.eq(valid & use & ~core_clr & (~core_rst if after_core else 1))
            with m.If(use):
                m.d.sync += d.eq(payload)
            m.d.comb += [port.valid.eq(v), port.payload.eq(d)]

        for core, use, name in ((x64, use_x64, "xxh64"), (x32, use_x32, "xxh32")):
            beat = Signal.like(core.i.payload, name=f"{name}_beat")
            m.d.comb += [beat.data.eq(w), beat.first.eq(beat_first),
                         beat.last.eq(~framed | last_word), beat.empty.eq(empty_rec),
                         beat.length.eq(beat_len)]
            feed(name, core.i, core_valid, beat, use)
        for j in range(1, N):
            lv = core_valid & lane_on[j]
            feed(f"xxh64_l{j}", h64[j].i, lv, words[j], use_x64)
            feed(f"xxh32_l{j}", h32[j].i, lv, words[j], use_x32)
            feed(f"bucketize_l{j}", bzs[j].i, lv, words[j], use_bz)
        feed("bucketize", bzs[0].i, core_valid, w, use_bz)
        # The varint encoder has a ready handshake, so its input register is a two-entry skid
        # buffer: the parser sees a registered ready (dvq_skid_valid clear), and the encoder's
        # first stage (a 64-bit subtraction) starts at a register next to it rather than at the
        # parser's (it was the engine's longest path without one). A value taken by the parser
        # reaches the encoder a cycle later, a value per cycle as before.
        dvq = Signal.like(dv.i.payload, name="dvq_data", reset_less=True)
        dvs = Signal.like(dv.i.payload, name="dvq_skid", reset_less=True)
        dvq_v, dvs_v = Signal(name="dvq_valid"), Signal(name="dvq_skid_valid")
        dv_in = Signal.like(dv.i.payload, name="dvq_in")
        m.d.comb += [dv_in.data.eq(w), dv_in.first.eq(beat_first), dv_in.last.eq(last_word),
                     dv_in.empty.eq(empty_rec), dv_room.eq(~dvs_v)]
        dv_fire = uacc & needs_dv
        with m.If(core_clr):
            m.d.sync += [dvq_v.eq(0), dvs_v.eq(0)]
        with m.Elif(dv.i.ready | ~dvq_v):
            m.d.sync += [dvq.eq(Mux(dvs_v, dvs, dv_in)), dvq_v.eq(dvs_v | dv_fire),
                         dvs_v.eq(0)]
        with m.Elif(dv_fire):
            m.d.sync += [dvs.eq(dv_in), dvs_v.eq(1)]
        m.d.comb += [dv.i.valid.eq(dvq_v), dv.i.payload.eq(dvq),
                     dv_busy.eq(dvq_v | dvs_v | dv.busy)]
        # Hash -> post-processing: a register per post core, for the same reason.
        use_mod, use_fr, use_fid = uses["mod"], uses["fastrange"], uses["fid"]
        for j in range(N):
            sfx = "" if j == 0 else f"_l{j}"
            hv, hp = h64[j].o.valid, h64[j].o.payload
            feed("mod" + sfx, mods[j].i, hv, hp, use_mod, after_core=True)
            feed("fastrange" + sfx, frs[j].i, hv, hp, use_fr, after_core=True)
            feed("fid" + sfx, fids[j].i, hv, hp, use_fid, after_core=True)

        # ---------------------------------------------------------------- results -> FIFO
        res_valid = [Signal(name="res_valid" if j == 0 else f"res_valid_l{j}") for j in range(N)]
        res_data = [Signal(64, name="res_data" if j == 0 else f"res_data_l{j}") for j in range(N)]
        res_kind = Signal(2)
        with m.Switch(op):
            for case, cores in (((1,), h32), ((2,), h64), ((3,), mods), ((4,), frs),
                                ((5, 6), fids), ((7, 8), bzs)):
                with m.Case(*case):
                    for j in range(N):
                        m.d.comb += [res_valid[j].eq(cores[j].o.valid),
                                     res_data[j].eq(cores[j].o.payload)]
            with m.Case(9):
                m.d.comb += [res_valid[0].eq(dv.o.valid), res_data[0].eq(dv.o.payload.data),
                             res_kind.eq(Mux(dv.o.payload.header, SEQ_HEADER, SEQ_DATA))]
        any_res = Cat(*res_valid).any()
        # The results go through one register on their way to the FIFO (the operator mux and
        # the FIFO's write side are apart from the cores that produce them).
        resq_valid = Signal(N, name="resq_valid")
        resq_data = Signal(64 * N, name="resq_data", reset_less=True)
        resq_kind = Signal(2, name="resq_kind", reset_less=True)
        m.d.sync += [resq_valid.eq(Mux(core_clr | core_rst, 0, Cat(*res_valid))),
                     resq_data.eq(Cat(*res_data)), resq_kind.eq(res_kind)]
        # Records whose result was written, counted from the result register (not from the
        # operator's mux of the cores' valid bits: op -> mux -> the 32-bit counter's carry chain
        # was a routed critical path, 10.50 ns, 7.05 of it routing). DONE_COUNT lags the FIFO
        # write by a cycle; DRAIN waits for the result register to empty, so the trailer's
        # count is complete.
        n_res = sum(resq_valid[1:], Cat(resq_valid[0], Const(0, (N + 1).bit_length() - 1)))
        n_done = Mux(resq_kind == SEQ_DATA, 0, n_res)
        trailer = Cat(done_count, err, Const(0, 16 - len(err)), Const(TRAILER_MAGIC, 16))
        # Room for the trailer's row, from a cycle-old level: in TRAIL nothing else writes, so the
        # level can only have gone down since (registered for the same reason as the credit).
        trailer_room = Signal()
        m.d.sync += trailer_room.eq(fifo.level <= self.fifo_depth - N)
        write_trailer = (state == TRAIL) & trailer_room
        m.d.comb += [
            fifo.w_valid.eq(Mux(state == TRAIL, write_trailer, resq_valid)),
            fifo.w_kind.eq(Mux(state == TRAIL, TRAILER, resq_kind)),
            fifo.w_data.eq(Mux(state == TRAIL, trailer, resq_data)),
            fifo.rollback.eq((state == ROLLBACK) | core_clr),
            self.m_axis_tdata.eq(fifo.o.payload.data), self.m_axis_tlast.eq(fifo.o.payload.last),
            self.m_axis_tvalid.eq(fifo.o.valid),
            fifo.o.ready.eq(self.m_axis_tready),
        ]
        if N == 1:
            m.d.comb += self.m_axis_tkeep.eq(0xFF)
        else:
            m.d.comb += self.m_axis_tkeep.eq(
                Cat(*(fifo.o.payload.keep[j].replicate(8) for j in range(N))))
        with m.If(resq_valid.any()):
            m.d.sync += done_count.eq(done_count + n_done)
        with m.If(self.m_axis_tvalid & self.m_axis_tready & self.m_axis_tlast):
            m.d.sync += [done_flag.eq(1), busy_out.eq(0)]

        # ---------------------------------------------------------------- control FSM
        bad_param = Signal()
        rop, rfmt, rdt = r["OP"], r["FORMAT"], r["DTYPE"]
        hash_op = (rop >= 1) & (rop <= 6)
        bz_op = (rop == 7) | (rop == 8)
        m.d.comb += bad_param.eq(
            ~(hash_op & (rfmt <= VAR)
              | bz_op & (((rfmt == FIXED8) & ((rdt == 1) | (rdt == 3)))
                         | ((rfmt == FIXED4) & ((rdt == 0) | (rdt == 2))))
              | (rop == 9) & (rfmt == SEQ))
            | ((rop == 3) & (Cat(r["NUM_BUCKETS_LO"], r["NUM_BUCKETS_HI"]) == 0))
            | ((rop == 5) & (r["SLOT"] >= 1024))
            | ((rop == 6) & (r["SLOT"] >= 32768))
            | (bz_op & (r["NUM_BOUNDARIES"] > self.table_depth)))
        m.d.comb += core_clr.eq(soft_reset | (start & (state == IDLE)))
        with m.If(state != IDLE):
            m.d.sync += cycles.eq(cycles + 1)

        # The batch ends with this unit: the last record's word (framed) or the beat holding the
        # last record (fixed; ``extra``: the beat carries words after it).
        rem_one = rem_gt[0] & ~rem_gt[1]
        rem_le_nw = ~mux_index(nw, [rem_gt[v] for v in range(N + 1)])
        fin = Mux(framed, complete & rem_one, rem_le_nw)
        # nw > rem, i.e. not rem > nw - 1 (nw >= 1)
        extra = fixed & mux_index(nw, [Const(0)] + [~rem_gt[v - 1] for v in range(1, N + 1)]) \
            if N > 1 else Const(0)
        # Between records the record registers follow the parser's word, accepted or not, in
        # any state: they are read only inside a record (in_rec), which starts with the cycle
        # that accepts the header, so they then hold that header's values; their enable is one
        # register (in_rec), not the accept decision (uacc) or the state.
        with m.If(~in_rec):
            m.d.sync += [first_word.eq(1), rec_len.eq(hdr_len),
                         remaining.eq(Mux(fmt == SEQ, hdr_len, (hdr_len + 7) >> 3)),
                         rem_last.eq(Mux(fmt == SEQ, w_one, w_le8))]
        # Inside a record (framed, so no header word) an accepted word is one of its words. Not
        # under SOFT_RESET or the state switch below: uacc already implies RUN, and a reset
        # clears in_rec, after which these registers reload. (The reset's and the state's
        # decode in their enables was a routed critical path: 11.03 ns, 9.07 of it routing.)
        with m.Elif(uacc):
            m.d.sync += [first_word.eq(0), remaining.eq(remaining - 1),
                         rem_last.eq(remaining == 2)]
        with m.If(soft_reset):
            m.d.sync += [state.eq(IDLE), err.eq(0), done_flag.eq(0), busy_out.eq(0),
                         in_rec.eq(0)]
            if N > 1:
                m.d.sync += [hold.eq(0), extra_pending.eq(0)]
        with m.Else():
            with m.Switch(state):
                with m.Case(IDLE):
                    with m.If(start):
                        m.d.sync += [
                            op.eq(rop), fmt.eq(rfmt), dtype.eq(rdt), rem.eq(r["COUNT"]),
                            rem_gt.eq(Cat(*(r["COUNT"] > j for j in range(N + 1)))),
                            seed.eq(Cat(r["SEED_LO"], r["SEED_HI"])),
                            nbuckets.eq(Cat(r["NUM_BUCKETS_LO"], r["NUM_BUCKETS_HI"])),
                            slot.eq(r["SLOT"]), nbound.eq(r["NUM_BOUNDARIES"]),
                            err.eq(Mux(bad_param, 1 << ERR["BAD_PARAM"], 0)),
                            done_flag.eq(0), busy_out.eq(1), done_count.eq(0), cycles.eq(0),
                            recs_in.eq(0), in_rec.eq(0),
                            state.eq(Mux(bad_param | (r["COUNT"] == 0), TRAIL, RUN)),
                        ]
                    with m.Elif(beat_acc):
                        m.d.sync += err[ERR["EXTRA_DATA"]].eq(1)
                with m.Case(RUN):
                    with m.If(beat_acc):
                        with m.If(bad_tkeep):
                            m.d.sync += err[ERR["BAD_TKEEP"]].eq(1)
                        if N > 1:
                            with m.If(framed & (nw > 1)):
                                m.d.sync += [hold.eq(1), buf.eq(Cat(*xwords[1:])),
                                             left.eq(nw - 1), btl.eq(tlast)]
                    with m.If(uacc):
                        with m.If(hdr & ~bad_hdr & ~empty_rec):
                            m.d.sync += in_rec.eq(1)
                        with m.If(framed & ~hdr):
                            with m.If(rem_last):
                                m.d.sync += in_rec.eq(0)
                        if N > 1:
                            with m.If(hold):
                                m.d.sync += [buf.eq(buf >> XW), left.eq(left - 1)]
                                with m.If(left == 1):
                                    m.d.sync += hold.eq(0)
                        # n_in comes at the end of the input decision: add every candidate count
                        # in parallel with it and select (a mux, not a carry chain, after it).
                        m.d.sync += [
                            recs_in.eq(mux_index(n_in, [(recs_in + k)[:32] for k in range(N + 1)])),
                            rem.eq(mux_index(n_in, [(rem - k)[:32] for k in range(N + 1)])),
                            # rem - k > j is rem > j + k: rem >= n_in in RUN (rem >= 1, a
                            # framed unit completes at most one record, lane j needs rem > j).
                            rem_gt.eq(Cat(*(mux_index(n_in, [rem > j + k for k in range(N + 1)])
                                            for j in range(N + 1)))),
                        ]
                        with m.If(bad_hdr):
                            m.d.sync += [err[ERR["BAD_HEADER"]].eq(1), state.eq(DRAIN)]
                        with m.Elif(fin):
                            with m.If(~ulast | extra):
                                m.d.sync += err[ERR["MISSING_TLAST"]].eq(1)
                            if N > 1:
                                with m.If(extra):
                                    m.d.sync += extra_pending.eq(1)
                            m.d.sync += state.eq(DRAIN)
                        with m.Elif(ulast):
                            m.d.sync += [err[ERR["EARLY_TLAST"]].eq(1), state.eq(DRAIN)]
                with m.Case(DRAIN):
                    # Every complete record has its result in the FIFO and nothing is in flight.
                    with m.If((done_count == recs_in) & ~dv_busy & ~any_res & ~resq_valid.any()):
                        m.d.sync += state.eq(ROLLBACK)
                with m.Case(ROLLBACK):
                    m.d.sync += state.eq(TRAIL)
                with m.Case(TRAIL):
                    with m.If(write_trailer):
                        m.d.sync += [state.eq(IDLE), in_rec.eq(0)]
                        if N > 1:
                            # Words of accepted beats after the batch's end: discarded now, after
                            # the trailer (as the 64-bit engine discards them in IDLE).
                            m.d.sync += [hold.eq(0), extra_pending.eq(0)]
                            with m.If(hold | extra_pending):
                                m.d.sync += err[ERR["EXTRA_DATA"]].eq(1)
        return m
